"""Plane pods on this machine: the chart-shaped pod specs, mutated (guarded) or not (baseline).

The pods run the Plane-shaped app in ``tests/plane_app`` through ``tests/kubelet.py``. A guarded
pod is the pod spec after ``webhook.mutation.mutate_pod`` with a policy whose runtime mount path
is a fresh temporary directory; its init container runs ``plane-guard runtime install`` as written.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.kubelet import Container, Image, Pod, wait_for
from tests.proof.broker import VHost
from webhook.mutation import apply_patch, mutate_pod
from webhook.policy import Bounds, Policy, default_policy

HERE = Path(__file__).resolve().parent
APP_DIR = HERE.parent / "plane_app"
PODS_FILE = HERE / "plane-pods.yaml"
VENV_BIN = Path(sys.executable).parent
PLANE_IMAGE = "makeplane/plane-backend"
ENTERPRISE_IMAGE = "makeplane/backend-commercial"
CONFIGS = ("baseline", "guarded")


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


def policy_for(mount_path: Path, base: Policy | None = None) -> Policy:
    """The default policy (or ``base``) with the runtime mounted at ``mount_path``.

    The gunicorn bounds are opened so the per-pod annotation can ask for rotation at 3.
    """
    policy = base or default_policy()
    return policy.model_copy(
        update={
            "runtime": policy.runtime.model_copy(update={"mount_path": str(mount_path)}),
            "validation": policy.validation.model_copy(update={"gunicorn_max_requests": Bounds(min=0, max=None)}),
        }
    )


@dataclass
class Publish:
    """One publish as the publisher saw it: did it return, in which process, how long it took.

    ``task_id`` identifies what the consumer must receive; ``marker`` is the payload, known even
    when the publish raised (so a raised publish that the broker delivered anyway is visible).
    """

    ok: bool
    pid: int | None
    task_id: str | None
    error: str | None
    seconds: float
    marker: str = ""


@dataclass
class Started:
    """A running pod: its kubelet handle, app container, and the spec it was started from."""

    config: str
    pod: Pod
    container: Container
    spec: dict[str, Any]
    markers: Path
    init: list[Container] = field(default_factory=list)
    port: int | None = None
    task_log: Path | None = None

    def stop(self) -> None:
        self.pod.stop(grace=10)

    def logs(self) -> str:
        return self.container.logs()

    def marker_lines(self) -> list[str]:
        return self.markers.read_text().splitlines() if self.markers.exists() else []


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
        if not self.task_log.exists():
            return []
        return [tuple(line.split()[:2]) for line in self.task_log.read_text().splitlines() if len(line.split()) >= 2]

    def executed(self) -> set[str]:
        return {task_id for task_id, _ in self.runs()}


class Poller(Started):
    """The outbox poller: events go in as files, its markers say what it sent or failed to send."""

    outbox: Path | None = None

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
                found.append(Publish(ok, self.container.pid, parts[1] if ok else None, error, float(parts[2]), parts[1]))
        return found

    def sent(self) -> set[str]:
        return {p.task_id for p in self.attempts() if p.ok}


class PlaneRun:
    """One proof run: a vhost of its own, a scratch directory, and the pods started in it."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or tempfile.mkdtemp(prefix="plane-guard-proof-"))
        os.chmod(self.root, 0o755)
        self.pods, self.objects = load_fixtures()
        self.vhost = VHost()

    def close(self) -> None:
        """Delete the vhost and the scratch directory (kept when PLANE_GUARD_PROOF_KEEP=1, for debugging)."""
        try:
            self.vhost.delete()
        finally:
            if os.environ.get("PLANE_GUARD_PROOF_KEEP") != "1":
                shutil.rmtree(self.root, ignore_errors=True)

    def _dir(self, name: str) -> Path:
        path = self.root / f"{name}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True)
        os.chmod(path, 0o777)
        return path

    def images(self, home: Path) -> dict[str, Image]:
        env = {
            "PATH": f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        plane = Image(workdir=str(APP_DIR), env={**env, "PYTHONPATH": str(APP_DIR / "image_python")})
        runtime = Image(workdir="/", env=env, user=10001, group=10001)
        return {PLANE_IMAGE: plane, ENTERPRISE_IMAGE: plane, default_policy().runtime.image: runtime}

    def _objects(self, paths: dict[str, str], variables: dict[str, str]) -> list[dict[str, Any]]:
        encoded = base64.b64encode(self.vhost.url().encode()).decode()
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "plane-app-secrets", "namespace": "plane"},
            "type": "Opaque",
            "data": {"AMQP_URL": encoded},
            "stringData": {"SECRET_KEY": "not-a-real-secret"},
        }
        maps = [
            {"kind": "ConfigMap", "metadata": {"name": "plane-test-paths"}, "data": paths},
            {"kind": "ConfigMap", "metadata": {"name": "plane-test-vars"}, "data": variables},
        ]
        return [*self.objects, secret, *maps]

    def _spec(self, pod: dict[str, Any], config: str, annotations: dict[str, str], mount: Path) -> dict[str, Any]:
        pod = json.loads(json.dumps(pod))
        pod["metadata"].setdefault("annotations", {}).update(annotations)
        if config == "baseline":
            return pod
        outcome = mutate_pod(pod, policy_for(mount))
        if not outcome.patch:
            raise AssertionError(f"the webhook did not mutate {pod['metadata']['name']}: {outcome.reasons}")
        return apply_patch(pod, outcome.patch)

    def _start(self, kind: str, config: str, annotations: dict[str, str], started_cls: type) -> Started:
        if config not in CONFIGS:
            raise ValueError(f"config must be one of {CONFIGS}")
        scratch = self._dir(kind)
        markers = scratch / "markers.txt"
        task_log = scratch / "tasks.txt"
        outbox = scratch / "outbox"
        outbox.mkdir(mode=0o777)
        port = free_port() if kind == "api" else None
        spec = self._spec(self.pods[kind], config, annotations, scratch / "runtime")
        objects = self._objects(
            {"MARKERS": str(markers), "TASK_LOG": str(task_log), "OUTBOX": str(outbox)},
            {"PORT": str(port or "")},
        )
        home = scratch / "home"
        home.mkdir()
        pod = Pod(spec, self.images(home), objects, log_dir=scratch / "logs", switch_user=False)
        try:
            init = pod.run_init_containers(timeout=60)
            container = pod.start()
        except BaseException:
            pod.stop(grace=1)
            raise
        started = started_cls(config, pod, container, spec, markers, init, port, task_log)
        if isinstance(started, Poller):
            started.outbox = outbox
        return started

    def start_api(self, config: str, annotations: dict[str, str] | None = None) -> Api:
        api = self._start("api", config, annotations or {}, Api)

        def ready() -> bool:
            if api.container.process.poll() is not None:
                raise RuntimeError(f"the {config} API pod exited {api.container.process.returncode}:\n{api.logs()[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", api.port), timeout=1):
                    return True
            except OSError:
                return False

        # A TCP connect, not an HTTP request: gunicorn counts requests towards --max-requests.
        try:
            wait_for(ready, timeout=45, interval=0.1, what=f"{config} API pod listening")
        except BaseException:
            api.stop()
            raise
        return api

    def _start_logging(self, kind: str, config: str, started_cls: type, ready_line: str) -> Started:
        """Start a pod whose container says ``ready_line`` in its log when it is ready."""
        started = self._start(kind, config, {}, started_cls)

        def ready() -> bool:
            if started.container.process.poll() is not None:
                raise RuntimeError(f"the {config} {kind} pod exited:\n{started.logs()[-4000:]}")
            return ready_line in started.logs()

        try:
            wait_for(ready, timeout=60, interval=0.2, what=f"{config} {kind} ready")
        except BaseException:
            started.stop()
            raise
        return started

    def start_worker(self, config: str) -> Worker:
        return self._start_logging("worker", config, Worker, " ready.")

    def start_poller(self, config: str) -> Poller:
        return self._start_logging("poller", config, Poller, "outbox poller ready")
