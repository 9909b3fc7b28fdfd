"""Properties of the mutation over many generated pods, Plane-shaped and odd.

For every pod: the patch applies with ``jsonpatch`` to the original, a second mutation is a
no-op, the input is never modified, and no URL password or Secret value leaks into anything
plane-guard writes or says.
"""

from __future__ import annotations

import copy
import json
import string

import jsonpatch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhook.core import conventions as names
from webhook.core.mutation import apply_patch, mutate_pod
from webhook.core.policy import default_policy

POLICY = default_policy()
EXAMPLES = 1000

secrets = st.text(alphabet=string.ascii_letters + string.digits, min_size=10, max_size=16).map(lambda s: f"Zq{s}")
words = st.text(alphabet=string.ascii_lowercase + string.digits + "-", min_size=1, max_size=12)
env_names = st.sampled_from(["DEBUG", "GUNICORN_MAX_REQUESTS", "GUNICORN_WORKERS", "CELERY_BROKER_POOL_LIMIT", "X_REF", "AMQP_URL"])

IMAGES = [
    "makeplane/backend-commercial:v2.6.3",
    "registry.plane.tools/plane/backend-enterprise:v2.7.0",
    "artifacts.plane.so/makeplane/backend-commercial:v2.6.3",
    "makeplane/plane-backend:v0.24.1",
    "docker.io/makeplane/plane-backend@sha256:" + "a" * 64,
    "fluent/fluent-bit:3.1",
    "nginx:1.27",
]
COMMANDS = [
    None,
    [],
    ["./bin/docker-entrypoint-api-ee.sh"],
    ["./bin/docker-entrypoint-api.sh"],
    ["./bin/docker-entrypoint-worker.sh"],
    ["./bin/docker-entrypoint-beat.sh"],
    ["/bin/sh", "-c", "./bin/docker-entrypoint-api.sh"],
    ["./bin/docker-entrypoint-migrator.sh"],
    ["nginx", "-g", "daemon off;"],
]
NAMES = ["plane-api", "plane-worker", "plane-beat-worker", "api", "worker", "sidecar", "x-api"]


@st.composite
def amqp_urls(draw, password):
    scheme = draw(st.sampled_from(["amqp", "amqps", "pyamqp", "redis"]))
    vhost = draw(st.sampled_from(["", "/", "//", "/plane", "/%2Fplane"]))
    query = draw(st.sampled_from(["", "?", "?heartbeat=30", "?heartbeat=0", "?heartbeat=abc", "?foo=1", "?login_method=AMQPLAIN&"]))
    return f"{scheme}://plane:{password}@rabbit:5672{vhost}{query}"


@st.composite
def env_entries(draw, password):
    entries = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(env_names)
        kind = draw(st.sampled_from(["value", "secret", "configmap", "empty", "ref"]))
        if name == "AMQP_URL" and kind == "value":
            entries.append({"name": name, "value": draw(amqp_urls(password))})
        elif kind == "value":
            entries.append({"name": name, "value": draw(words)})
        elif kind == "ref":
            entries.append({"name": name, "value": "$(AMQP_URL)"})
        elif kind == "empty":
            entries.append({"name": name})
        else:
            ref = "secretKeyRef" if kind == "secret" else "configMapKeyRef"
            entries.append({"name": name, "valueFrom": {ref: {"name": draw(words), "key": "url"}}})
    return entries


@st.composite
def containers(draw, password):
    container = {"name": draw(st.sampled_from(NAMES)), "image": draw(st.sampled_from(IMAGES))}
    command = draw(st.sampled_from(COMMANDS))
    if command is not None:
        container["command"] = list(command)
    if draw(st.booleans()):
        container["args"] = ["--log-level", "info"]
    env = draw(st.one_of(st.none(), env_entries(password)))
    if env is not None or draw(st.booleans()):
        container["env"] = env
    if draw(st.booleans()):
        container["envFrom"] = [{"secretRef": {"name": "plane-app-secrets"}, **({"prefix": "P_"} if draw(st.booleans()) else {})}]
    if draw(st.booleans()):
        container["volumeMounts"] = [{"name": "data", "mountPath": draw(st.sampled_from(["/data", "/plane-guard"]))}]
    if draw(st.booleans()):
        container["securityContext"] = {"readOnlyRootFilesystem": True, "runAsNonRoot": True, "runAsUser": 1000}
    if draw(st.booleans()):
        container["x-unknown-field"] = {"kept": True}
    return container


@st.composite
def pods(draw):
    password = draw(secrets)
    names_seen = set()
    unique = []
    for container in draw(st.lists(containers(password), min_size=1, max_size=3)):
        if container["name"] not in names_seen:
            names_seen.add(container["name"])
            unique.append(container)
    spec = {"containers": unique}
    if draw(st.booleans()):
        spec["volumes"] = [{"name": "data", "emptyDir": {}}]
    if draw(st.booleans()):
        spec["initContainers"] = [{"name": "wait", "image": "busybox", "command": ["true"]}]
    metadata = {"name": draw(words), "namespace": "plane"}
    labels = draw(st.dictionaries(st.sampled_from(["app.name", "a/b", names.INJECT]), st.sampled_from(["plane-plane-api", "false", "x"]), max_size=2))
    if labels:
        metadata["labels"] = labels
    annotation_keys = st.sampled_from(
        [names.MAX_REQUESTS_ANNOTATION, names.HEARTBEAT_ANNOTATION, names.WRAP_ANNOTATION, "a~b/c", names.INJECT]
    )
    annotations = draw(st.dictionaries(annotation_keys, st.sampled_from(["0", "5", "abc", "true", "false", "30", "-1"]), max_size=3))
    if annotations or draw(st.booleans()):
        metadata["annotations"] = annotations
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": spec}
    if draw(st.integers(0, 9)):
        pod["metadata"] = metadata
    return password, pod


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods())
def test_patch_applies_is_idempotent_and_leaks_nothing(generated):
    password, pod = generated
    original = copy.deepcopy(pod)
    outcome = mutate_pod(pod, POLICY)
    assert pod == original, "mutate_pod must not modify the pod"

    mutated = jsonpatch.JsonPatch(outcome.patch).apply(original)
    assert mutated == apply_patch(pod, outcome.patch)
    assert all(op["op"] in ("add", "replace") and op["path"] != "" for op in outcome.patch)

    second = mutate_pod(mutated, POLICY)
    assert second.patch == [], f"second pass not a no-op: {second.patch}"

    said = json.dumps([outcome.changes, outcome.reasons, outcome.warnings, list(outcome.roles)])
    assert password not in said
    for op in outcome.patch:
        if not op["path"].endswith("/value"):
            assert password not in json.dumps(op["value"]), op["path"]

    if outcome.patch:
        status = json.loads(mutated["metadata"]["annotations"][names.STATUS_ANNOTATION])
        assert status["policy"] == POLICY.digest and status["roles"] == outcome.roles
        assert password not in json.dumps(status)


@settings(max_examples=300, deadline=None)
@given(pods())
def test_user_fields_survive(generated):
    _, pod = generated
    mutated = apply_patch(pod, mutate_pod(pod, POLICY).patch)
    before = {c["name"]: c for c in pod["spec"]["containers"]}
    for container in mutated["spec"]["containers"]:
        old = before[container["name"]]
        for key, value in old.items():
            if key not in ("env", "command", "volumeMounts"):
                assert container[key] == value
        kept_env = [e for e in old.get("env") or [] if e.get("name") != "AMQP_URL"]
        new_env = container.get("env") or []
        for entry in kept_env:
            assert entry in new_env or any(e.get("name") == entry["name"] for e in new_env)
        assert [m for m in old.get("volumeMounts") or []] == (container.get("volumeMounts") or [])[: len(old.get("volumeMounts") or [])]
    for key in ("volumes", "initContainers"):
        old = pod["spec"].get(key) or []
        assert (mutated["spec"].get(key) or [])[: len(old)] == old
