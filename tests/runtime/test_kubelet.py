"""The test kubelet must resolve a pod spec exactly as Kubernetes does, or the end-to-end proof proves nothing."""

from __future__ import annotations

import base64
import stat
import sys
from pathlib import Path

import pytest

from tests.kubelet import (
    ContainerConfigError,
    Image,
    Pod,
    _objects,
    container_argv,
    container_env,
    expand,
)
from tests.proof.plane import PLANE_IMAGE, load_fixtures, policy_for
from webhook.runtime import RUNTIME_FILES
from webhook.mutation import apply_patch, mutate_pod
from webhook.policy import default_policy

VARS = {"A": "1", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "1"),
        ("x$(A)y$(A)", "x1y1"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("$$$(A)", "$1"),
        ("$A", "$A"),
        ("a$", "a$"),
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("$(EMPTY)-", "-"),
        ("$(A)$(", "1$("),
        ("plain", "plain"),
    ],
)
def test_expand_matches_kubernetes(text, expected):
    assert expand(text, VARS.get) == expected


def _pod(container):
    return {"metadata": {"name": "p", "namespace": "plane"}, "spec": {"containers": [container]}}


def _secret(name, data=None, string_data=None):
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in (data or {}).items()}
    return {"kind": "Secret", "metadata": {"name": name}, "data": encoded, "stringData": string_data or {}}


def _env(container, objects=()):

    return container_env(_pod(container), container, _objects(list(objects), "ConfigMap"), _objects(list(objects), "Secret"))


def test_env_expands_only_earlier_variables():
    container = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-$(C)"}, {"name": "C", "value": "3"}]}
    assert _env(container) == {"A": "1", "B": "1-$(C)", "C": "3"}


def test_env_from_order_prefix_and_invalid_keys():
    objects = [
        {"kind": "ConfigMap", "metadata": {"name": "one"}, "data": {"X": "from-one", "Y": "from-one", "1BAD": "skipped"}},
        _secret("two", {"Y": "from-two", "URL": "amqp://u:p@h//"}),
        {"kind": "ConfigMap", "metadata": {"name": "three"}, "data": {"1OK": "prefixed"}},
    ]
    container = {
        "envFrom": [
            {"configMapRef": {"name": "one"}},
            {"secretRef": {"name": "two"}},
            {"prefix": "P_", "configMapRef": {"name": "three"}},
            {"secretRef": {"name": "absent", "optional": True}},
        ],
        "env": [{"name": "X", "value": "$(Y)+env"}],
    }
    assert _env(container, objects) == {"X": "from-two+env", "Y": "from-two", "URL": "amqp://u:p@h//", "P_1OK": "prefixed"}


def test_value_from_secret_and_config_map():
    objects = [
        _secret("s", {"K": "from-data", "D": "data"}, {"K": "from-stringData"}),
        {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"C": "cm"}},
    ]
    container = {
        "envFrom": [{"configMapRef": {"name": "c"}}],
        "env": [
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "K"}}},
            {"name": "D", "valueFrom": {"secretKeyRef": {"name": "s", "key": "D"}}},
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "nope", "optional": True}}},
            {"name": "GONE", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x", "optional": True}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "EMPTY", "value": ""},
        ],
    }
    assert _env(container, objects) == {"K": "from-stringData", "D": "data", "C": "cm", "NAME": "p", "EMPTY": ""}


@pytest.mark.parametrize(
    "env",
    [
        [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}}],
        [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "missing"}}}],
    ],
)
def test_required_references_that_do_not_resolve_stop_the_container(env):
    with pytest.raises(ContainerConfigError):
        _env({"env": env}, [_secret("s", {"k": "v"})])


def test_missing_required_env_from_stops_the_container():
    with pytest.raises(ContainerConfigError, match='secret "gone" not found'):
        _env({"envFrom": [{"secretRef": {"name": "gone"}}]})


IMAGE = Image(entrypoint=("/entry",), cmd=("default", "cmd"))


@pytest.mark.parametrize(
    ("container", "argv"),
    [
        ({}, ["/entry", "default", "cmd"]),
        ({"args": ["a"]}, ["/entry", "a"]),
        ({"command": ["/c"]}, ["/c"]),
        ({"command": ["/c"], "args": ["$(A)", "$$(A)", "$(LATER)"]}, ["/c", "1", "$(A)", "late"]),
        ({"command": ["/c", "$(A)"]}, ["/c", "1"]),
    ],
)
def test_command_and_args_combine_with_the_image_like_the_runtime(container, argv):
    assert container_argv(container, IMAGE, {"A": "1", "LATER": "late"}) == argv


def _runtime_images():
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    return {PLANE_IMAGE: Image(workdir="/", env=env), default_policy().runtime.image: Image(env=env, user=10001, group=10001)}


def test_mutated_api_pod_resolves_to_the_wrapper_and_the_policy_env(tmp_path):
    """The Plane API pod after plane-guard's mutation, as kubelet would start it."""
    pods, objects = load_fixtures()
    api = pods["api"]
    mount = tmp_path / "runtime"
    pod = apply_patch(api, mutate_pod(api, policy_for(mount)).patch)
    secret = _secret("plane-app-secrets", {"AMQP_URL": "amqp://u:p@h:5672/plane"})
    maps = [{"kind": "ConfigMap", "metadata": {"name": n}, "data": {}} for n in ("plane-test-vars", "plane-test-paths")]
    kubelet = Pod(pod, _runtime_images(), [*objects, secret, *maps], log_dir=tmp_path / "logs")
    container = pod["spec"]["containers"][0]
    env = container_env(pod, container, kubelet.config_maps, kubelet.secrets)
    assert container_argv(container, Image(), env) == ["/bin/sh", f"{mount}/entrypoint.sh", "./bin/docker-entrypoint-api.sh"]
    decided = ("PLANE_GUARD_OVERRIDE_GUNICORN_MAX_REQUESTS", "PLANE_GUARD_OVERRIDE_GUNICORN_MAX_REQUESTS_JITTER", "PLANE_GUARD_DEFAULT_CELERY_CONFIRM_PUBLISH")
    assert {k: env[k] for k in decided} == dict.fromkeys(decided[:2], "0") | {decided[2]: "1"}
    assert env["AMQP_URL"] == "amqp://u:p@h:5672/plane"
    assert env["PLANE_GUARD_AMQP_HEARTBEAT"] == "60"
    assert stat.S_IMODE(mount.stat().st_mode) == 0o777 and not any(mount.iterdir())


def test_init_container_of_a_mutated_pod_installs_the_runtime(tmp_path):
    pods, objects = load_fixtures()
    worker = pods["worker"]
    mount = tmp_path / "runtime"
    pod = apply_patch(worker, mutate_pod(worker, policy_for(mount)).patch)
    with Pod(pod, _runtime_images(), objects, log_dir=tmp_path / "logs", switch_user=False) as kubelet:
        (init,) = kubelet.run_init_containers(timeout=60)
    assert init.argv == ["plane-guard", "runtime", "install", str(mount)]
    assert init.process.returncode == 0
    assert sorted(str(p.relative_to(mount)) for p in mount.rglob("*") if p.is_file()) == sorted(RUNTIME_FILES)


def test_run_as_non_root_with_a_root_image_is_refused(tmp_path):
    pods, objects = load_fixtures()
    worker = pods["worker"]
    pod = apply_patch(worker, mutate_pod(worker, policy_for(tmp_path / "rt")).patch)
    images = {PLANE_IMAGE: Image(), default_policy().runtime.image: Image(user=0)}
    with Pod(pod, images, objects, log_dir=tmp_path / "logs") as kubelet:
        with pytest.raises(ContainerConfigError, match="runAsNonRoot"):
            kubelet.run_init_containers()


def test_an_empty_dir_must_start_empty_and_have_one_path(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "leftover").write_text("x")
    pod = {
        "metadata": {"name": "p"},
        "spec": {
            "volumes": [{"name": "v", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": str(used)}]}],
        },
    }
    with pytest.raises(ContainerConfigError, match="not empty"):
        Pod(pod, {"i": Image()}, log_dir=tmp_path / "logs")
    elsewhere = [{"name": "v", "mountPath": str(tmp_path / "other")}]
    pod["spec"]["initContainers"] = [{"name": "i", "image": "i", "volumeMounts": elsewhere}]
    with pytest.raises(ContainerConfigError, match="use one path"):
        Pod(pod, {"i": Image()}, log_dir=tmp_path / "logs")
