"""Plane pods in real containers: the chart-shaped pod specs, mutated (guarded) or not (baseline).

podman plays each pod (``tests/pods.py``) on the host network, so the app reaches the RabbitMQ on
127.0.0.1:5672 and the nftables black hole on loopback catches its connections like any other
process's. The Plane containers run the Plane-shaped app image. A guarded pod is the spec after
``webhook.core.mutation.mutate_pod`` with the default policy: its init container is the policy's
runtime image (the local build of it) at the policy's mount path. What the app records (entrypoint
markers, the worker's task log, the poller's outbox) is in a host directory of its own per pod,
mounted as the hostPath volume ``test-state``, so it can be read during and after the run.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.containers import images as test_images
from tests.pods import Pod, PodError, podman, wait_for
from tests.proof import broker
from tests.proof.broker import VHost
from tools import prerequisites
from tools.images import Unavailable
from webhook.core.mutation import apply_patch, mutate_pod
from webhook.core.policy import Bounds, Policy, default_policy

HERE = Path(__file__).resolve().parent
PODS_FILE = HERE / "plane-pods.yaml"
CONFIGS = ("baseline", "guarded")
#: The volume of ``plane-pods.yaml`` that holds what the app records; its hostPath is set per pod.
STATE_VOLUME = "test-state"
#: Paths inside the state directory, as the ConfigMap ``plane-test-paths`` names them.
MARKERS, TASK_LOG, OUTBOX = "markers.txt", "tasks.txt", "outbox"

#: The pods of ``plane-pods.yaml`` by the short names the proof uses.
POD_NAMES = {"api": "plane-api", "worker": "plane-worker", "poller": "plane-outbox-poller"}


def load_fixtures() -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """({"api" | "worker" | "poller": pod}, other objects) from ``plane-pods.yaml``."""
    documents = [d for d in yaml.safe_load_all(PODS_FILE.read_text()) if d]
    by_workload = {d["metadata"]["name"].split("-wl-")[0]: d for d in documents if d["kind"] == "Pod"}
    others = [d for d in documents if d["kind"] != "Pod"]
    return {short: by_workload[name] for short, name in POD_NAMES.items()}, others


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _listening(port: int | None) -> bool:
    """A TCP connect, not an HTTP request: gunicorn counts requests towards --max-requests."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def podman_start(container: str) -> None:
    """Start a stopped container of a pod again (the kubelet's restart of a failed container)."""
    podman("start", container, timeout=60, check=False)


def policy_for(base: Policy | None = None) -> Policy:
    """The default policy (or ``base``) with the gunicorn bounds opened, so the per-pod
    annotation can ask for rotation at 3."""
    policy = base or default_policy()
    return policy.model_copy(
        update={"validation": policy.validation.model_copy(update={"gunicorn_max_requests": Bounds(min=0, max=None)})}
    )


def ensure_images() -> test_images.Images:
    """The app and runtime images, built first when missing (the builds ``make image`` runs).

    ``tools.images.Unavailable`` when podman or what builds the images is not installed;
    ``tools.images.BuildError`` when a build fails.
    """
    absent = prerequisites.missing("containers")
    if absent:
        packages = " ".join(t.package for t in absent if t.package)
        raise Unavailable(f"the pods run in podman: {', '.join(t.name for t in absent)} missing "
                          f"(apt-get install {packages})")
    return test_images.ensure()


#: What a Celery worker logs once it consumes (once per start of the process).
READY = " ready."


@dataclass
class Publish:
    """One publish as the publisher saw it: did it return, in which process, how long it took.

    ``task_id`` identifies what the consumer must receive; ``marker`` is the payload, known even
    when the publish raised (so a raised publish that the broker delivered anyway is visible).
    ``pid`` is the process's PID inside its container.
    """

    ok: bool
    pid: int | None
    task_id: str | None
    error: str | None
    seconds: float
    marker: str = ""


@dataclass
class Started:
    """A running pod: the podman pod, its app container's name, the spec it was played from, and
    the host directory behind its ``test-state`` volume."""

    config: str
    pod: Pod
    container: str
    spec: dict[str, Any]
    state: Path
    port: int | None = None
    #: The app container's exit code once stopped.
    exit_code: int | None = None
    #: The command line of the container's PID 1 once it was ready.
    pid1: str = ""

    @property
    def markers(self) -> Path:
        return self.state / MARKERS

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to every container, SIGKILL after ``grace`` (as the kubelet stops a pod); the app's exit code."""
        if self.exit_code is None:
            self.exit_code = self.pod.stop(grace=grace).get(self.container)
        return self.exit_code

    def remove(self) -> None:
        self.pod.remove()

    def logs(self) -> str:
        return self.pod.logs(self.container)

    def marker_lines(self) -> list[str]:
        return self.markers.read_text().splitlines() if self.markers.exists() else []

    def broker_ports(self, pid: int | None = None) -> list[int]:
        """Local ports of the broker connections that process ``pid`` of the container holds (by
        default every process of it), found by ``ss -p`` through the processes' host PIDs."""
        host = self.pod.host_pids(self.container)
        if pid is not None and pid not in host:
            raise PodError(f"no process {pid} in {self.container} (it has {sorted(host)})")
        pids = [host[pid]] if pid is not None else list(host.values())
        return sorted(port for host_pid in pids for port in broker.broker_ports_of(host_pid))

    def wait_ready(self, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``ready()`` until true; PodError (with every container's log) if the app exits or time runs out."""

        def check() -> bool:
            if self.pod.exit_code(self.container) is not None:
                raise PodError(f"the {self.config} {what} exited {self.pod.exit_code(self.container)}\n{self.pod.describe()}")
            return ready()

        try:
            wait_for(check, timeout=timeout, interval=0.2, what=f"{self.config} {what} ready")
        except TimeoutError as exc:
            raise PodError(f"{exc}\n{self.pod.describe()}") from None


class Api(Started):
    def request(self, path: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            connection.close()

    def publish(self, marker: str) -> Publish:
        started = time.monotonic()
        try:
            status, body = self.request(f"/publish?marker={marker}")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return Publish(False, None, None, f"HTTP: {type(exc).__name__}: {exc}", time.monotonic() - started, marker)
        elapsed = time.monotonic() - started
        if status == 200 and body.get("task_id"):
            return Publish(True, body.get("pid"), body["task_id"], None, elapsed, marker)
        return Publish(False, body.get("pid"), None, body.get("error", f"HTTP {status}"), elapsed, marker)


class Worker(Started):
    def runs(self) -> list[tuple[str, str]]:
        """(task id, marker) of every task the worker ran, in order; a task id twice is a duplicate."""
        task_log = self.state / TASK_LOG
        if not task_log.exists():
            return []
        return [tuple(line.split()[:2]) for line in task_log.read_text().splitlines() if len(line.split()) >= 2]

    def executed(self) -> set[str]:
        return {task_id for task_id, _ in self.runs()}

    def restart(self, grace: float = 10.0) -> None:
        """Stop the app container (SIGTERM, SIGKILL after ``grace``) and start it again, as the
        kubelet does when a liveness probe fails; returns once Celery says ready again."""
        name = self.pod.container(self.container)
        readies = self.logs().count(READY)
        podman("stop", "--time", str(int(grace)), name, timeout=grace + 60, check=False)
        podman_start(name)
        self.wait_ready(lambda: self.logs().count(READY) > readies, "worker pod restarted", timeout=60)


class Poller(Started):
    """The outbox poller: events go in as files, its markers say what it sent or failed to send."""

    @property
    def outbox(self) -> Path:
        return self.state / OUTBOX

    def add_event(self, event_id: str) -> None:
        (self.outbox / f"{event_id}.tmp").write_text(f'{{"id": "{event_id}"}}')
        (self.outbox / f"{event_id}.tmp").rename(self.outbox / f"{event_id}.event")

    def attempts(self) -> list[Publish]:
        """Every publish the poller tried, in order (a failed one is tried again later)."""
        found = []
        for line in self.marker_lines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] in ("sent", "failed"):
                ok = parts[0] == "sent"
                error = None if ok else " ".join(parts[3:])
                found.append(Publish(ok, None, parts[1] if ok else None, error, float(parts[2]), parts[1]))
        return found

    def sent(self) -> set[str]:
        return {p.task_id for p in self.attempts() if p.ok}


class PlaneRun:
    """One proof run: the images, a vhost of its own, a scratch directory, and the pods started in it."""

    def __init__(self, images: test_images.Images, root: Path | None = None):
        self.images = images
        self.root = Path(root or tempfile.mkdtemp(prefix="plane-guard-proof-"))
        os.chmod(self.root, 0o755)
        self.pods, self.objects = load_fixtures()
        self.policy = policy_for()
        self.started: list[Started] = []
        self.vhost = VHost()

    def close(self) -> None:
        """Remove every pod, the vhost and the scratch directory (kept when PLANE_GUARD_PROOF_KEEP=1)."""
        try:
            for started in self.started:
                started.remove()
        finally:
            try:
                self.vhost.delete()
            finally:
                if os.environ.get("PLANE_GUARD_PROOF_KEEP") != "1":
                    shutil.rmtree(self.root, ignore_errors=True)

    def _dir(self, name: str) -> Path:
        path = self.root / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        (path / OUTBOX).mkdir()
        for directory in (path, path / OUTBOX):
            os.chmod(directory, 0o777)
        return path

    def _objects(self, port: int | None) -> list[dict[str, Any]]:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "plane-app-secrets", "namespace": "plane"},
            "type": "Opaque",
            "stringData": {"AMQP_URL": self.vhost.url(), "SECRET_KEY": "not-a-real-secret"},
        }
        variables = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plane-test-vars"},
                     "data": {"PORT": str(port or "")}}
        return [*self.objects, secret, variables]

    def _spec(self, pod: dict[str, Any], config: str, annotations: dict[str, str], state: Path) -> dict[str, Any]:
        pod = json.loads(json.dumps(pod))
        pod["metadata"].setdefault("annotations", {}).update(annotations)
        for volume in pod["spec"]["volumes"]:
            if volume["name"] == STATE_VOLUME:
                volume["hostPath"]["path"] = str(state)
        if config == "baseline":
            return pod
        outcome = mutate_pod(pod, self.policy)
        if not outcome.patch:
            raise AssertionError(f"the webhook did not mutate {pod['metadata']['name']}: {outcome.reasons}")
        return apply_patch(pod, outcome.patch)

    def _start(self, kind: str, config: str, annotations: dict[str, str], started_cls: type, wait: bool = True) -> Started:
        if config not in CONFIGS:
            raise ValueError(f"config must be one of {CONFIGS}")
        state = self._dir(kind)
        port = free_port() if kind == "api" else None
        spec = self._spec(self.pods[kind], config, annotations, state)
        container = spec["spec"]["containers"][0]["name"]
        images = {c["image"]: self.images.app for c in spec["spec"]["containers"]}
        images[self.policy.runtime.image] = self.images.runtime
        started = started_cls(config, Pod(spec, self._objects(port), images=images), container, spec, state, port)
        self.started.append(started)
        started.pod.start()
        if wait:
            started.pod.wait_running(container)
        return started

    def start_api(self, config: str, annotations: dict[str, str] | None = None) -> Api:
        api = self._start("api", config, annotations or {}, Api)
        api.wait_ready(lambda: _listening(api.port), "API pod", timeout=45)
        api.pid1 = " ".join(api.pod.pid1(api.container))[:200]
        return api

    def send_tasks(self, name: str, arguments: list[tuple[Any, ...]]) -> list[str]:
        """Publish one Celery task ``name`` per tuple of ``arguments`` to the run's vhost, with
        confirms, from this process (as another Plane pod would); their task ids."""
        from celery import Celery

        app = Celery("plane-guard-proof", broker=self.vhost.url())
        app.conf.broker_transport_options = {"confirm_publish": True}
        try:
            return [app.send_task(name, args=list(args)).id for args in arguments]
        finally:
            app.close()

    def start_api_counting_restarts(self, config: str, timeout: float) -> tuple[Api, float | None, int]:
        """Start an API pod and restart its container whenever it exits before it listens, as the
        kubelet does with ``restartPolicy: Always`` (without the back-off); (pod, seconds until
        it listened or None, restarts)."""
        started = time.monotonic()
        api = self._start("api", config, {}, Api, wait=False)
        restarts = 0
        while time.monotonic() - started < timeout:
            if api.pod.exit_code(api.container) is not None:
                restarts += 1
                podman_start(api.pod.container(api.container))
            elif _listening(api.port):
                ready = time.monotonic() - started
                api.pid1 = " ".join(api.pod.pid1(api.container))[:200]
                return api, ready, restarts
            time.sleep(0.2)
        return api, None, restarts

    def _start_logging(self, kind: str, config: str, started_cls: type, ready_line: str) -> Started:
        """Start a pod whose app says ``ready_line`` in its log when it is ready."""
        started = self._start(kind, config, {}, started_cls)
        started.wait_ready(lambda: ready_line in started.logs(), f"{kind} pod", timeout=60)
        return started

    def start_worker(self, config: str) -> Worker:
        return self._start_logging("worker", config, Worker, READY)

    def start_poller(self, config: str) -> Poller:
        return self._start_logging("poller", config, Poller, "outbox poller ready")
