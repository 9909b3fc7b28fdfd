"""The pod runner (tests/pods.py) on small busybox pods: what it promises the other tests.

Environment from ConfigMaps and Secrets, init containers in order with a failing one stopping
the pod, exit codes after a stop, an emptyDir of its own for every pod, nothing left behind.
"""

from __future__ import annotations

import pytest

from tests.pods import Pod, PodError, podman

pytestmark = pytest.mark.containers

OBJECTS = [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"FROM_MAP": "map-value"}},
    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "credentials"},
     "data": {"FROM_SECRET": "c2VjcmV0LXZhbHVl"}, "stringData": {"KEY": "key-value"}},
]


def busybox_pod(images, script: str, init: list[str] | None = None) -> dict:
    """A pod whose app container runs ``script`` under busybox sh, with one emptyDir at /data."""
    container = {
        "name": "app",
        "image": "example.org/app:1",
        "command": ["/bin/busybox", "sh", "-c", script],
        "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "credentials"}}],
        "env": [
            {"name": "LITERAL", "value": "literal-value"},
            {"name": "FROM_KEY", "valueFrom": {"secretKeyRef": {"name": "credentials", "key": "KEY"}}},
        ],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    spec = {"containers": [container], "volumes": [{"name": "data", "emptyDir": {}}]}
    if init:
        spec["initContainers"] = [
            {"name": f"init-{i}", "image": "example.org/app:1", "command": ["/bin/busybox", "sh", "-c", step],
             "volumeMounts": [{"name": "data", "mountPath": "/data"}]}
            for i, step in enumerate(init)
        ]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "runner-check"}, "spec": spec}


def _play(images, script: str, init: list[str] | None = None) -> Pod:
    return Pod(busybox_pod(images, script, init), OBJECTS, images={"example.org/app:1": images.runtime}).start()


def _left_behind(pod: Pod) -> list[str]:
    names = []
    for listing in (["pod", "ps"], ["secret", "ls"], ["volume", "ls"]):
        names += [n for n in podman(*listing, "--format", "{{.Name}}").stdout.split() if n.endswith(pod.suffix)]
    return names


def test_environment_init_containers_and_exec(images):
    with _play(images, "exec /bin/busybox sleep 60", init=["echo first >> /data/log", "echo second >> /data/log"]) as pod:
        pod.wait_running("app")
        env = pod.exec("app", ["/bin/busybox", "env"]).stdout.splitlines()
        assert {"FROM_MAP=map-value", "FROM_SECRET=secret-value", "FROM_KEY=key-value", "LITERAL=literal-value"} <= set(env)
        assert pod.read_file("app", "/data/log").splitlines() == ["first", "second"]
        assert [pod.exit_code(f"init-{i}") for i in range(2)] == [0, 0]
        assert pod.pid1("app")[-2:] == ["sleep", "60"]
        assert pod.host_pids("app") == {1: pod.host_pid("app")}
    assert _left_behind(pod) == []


def test_env_from_prefix_is_applied_as_the_kubelet_does(images):
    """podman ignores envFrom.prefix; the runner plays prefixed copies of the ConfigMap and Secret."""
    spec = busybox_pod(images, "exec /bin/busybox sleep 60")
    spec["spec"]["containers"][0]["envFrom"] = [
        {"prefix": "MAP_", "configMapRef": {"name": "settings"}},
        {"prefix": "SECRET_", "secretRef": {"name": "credentials"}},
    ]
    with Pod(spec, OBJECTS, images={"example.org/app:1": images.runtime}) as pod:
        pod.wait_running("app")
        env = set(pod.exec("app", ["/bin/busybox", "env"]).stdout.splitlines())
    assert {"MAP_FROM_MAP=map-value", "SECRET_FROM_SECRET=secret-value", "SECRET_KEY=key-value"} <= env
    assert not {line for line in env if line.startswith(("FROM_MAP=", "FROM_SECRET="))}
    assert _left_behind(pod) == []


def test_a_failing_init_container_stops_the_pod_and_says_why(images):
    pod = Pod(busybox_pod(images, "exec /bin/busybox sleep 60", init=["echo init-broke >&2; exit 3"]), OBJECTS,
              images={"example.org/app:1": images.runtime})
    with pytest.raises(PodError) as failure:
        pod.start()
    assert "exited with code 3" in str(failure.value) and "init-broke" in str(failure.value)
    assert _left_behind(pod) == []


@pytest.mark.parametrize("context", [{"runAsNonRoot": True}, {"runAsNonRoot": True, "runAsUser": 0}])
def test_run_as_non_root_refuses_a_root_user_as_the_kubelet_does(images, context):
    """podman does not check runAsNonRoot; the runner does, so a root image cannot slip through."""
    spec = busybox_pod(images, "exec /bin/busybox sleep 60")
    spec["spec"]["securityContext"] = context
    pod = Pod(spec, OBJECTS, images={"example.org/app:1": images.app})  # the app image runs as root
    with pytest.raises(PodError, match="runAsNonRoot"):
        pod.start()
    assert _left_behind(pod) == []
    spec["spec"]["securityContext"] = {**context, "runAsUser": 1000}
    with Pod(spec, OBJECTS, images={"example.org/app:1": images.runtime}) as allowed:
        allowed.wait_running("app")


def test_stop_reports_each_exit_code(images):
    with _play(images, "trap 'exit 7' TERM; while :; do /bin/busybox sleep 0.1; done", init=["true"]) as pod:
        pod.wait_running("app")
        assert pod.stop(grace=10) == {"init-0": 0, "app": 7}


def test_each_pod_gets_an_empty_dir_of_its_own(images):
    script = "echo $HOSTNAME > /data/owner; exec /bin/busybox sleep 60"
    with _play(images, script) as first, _play(images, script) as second:
        for pod in (first, second):
            pod.wait_running("app")
        owners = [pod.read_file("app", "/data/owner").strip() for pod in (first, second)]
        assert owners[0] != owners[1], owners
