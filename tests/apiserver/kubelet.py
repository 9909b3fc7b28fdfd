"""A stand-in for the kubelet's readiness reports, for control planes that have no kubelet.

The test control plane has no scheduler and no kubelet, so pods stay ``Pending`` and a rollout
never finishes. ``Readiness`` plays that one part of the kubelet: it reports each new pod of the
namespaces it watches as running and ready, through the pods' ``status`` subresource, as a
kubelet does once the containers pass their readiness probes. Nothing runs: the controllers then
see available pods, scale the old ReplicaSet down and complete the rollout. A pod that was never
scheduled is deleted at once when its ReplicaSet removes it, so no pod lingers in Terminating.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException


def ready_status() -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    conditions = [{"type": kind, "status": "True", "lastTransitionTime": now}
                  for kind in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]
    return {"status": {"phase": "Running", "startTime": now, "conditions": conditions}}


def is_ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in pod.get("status", {}).get("conditions") or [])


class Readiness:
    """Marks every pod of ``namespaces`` ready, every ``interval`` seconds, until ``stop()``.

    ``before_ready(pod)`` runs just before a pod is reported ready: a test uses it to change the
    world at a known point of a rollout (the rollout cannot go on until the pod is ready).
    """

    def __init__(self, control_plane, namespaces: list[str], interval: float = 0.1,
                 before_ready: Callable[[dict[str, Any]], None] | None = None):
        self.control_plane = control_plane
        self.namespaces = namespaces
        self.interval = interval
        self.before_ready = before_ready
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness", daemon=True)

    def start(self) -> Readiness:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the readiness thread did not stop"
        assert not self.errors, self.errors

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for namespace in self.namespaces:
                try:
                    self._mark(namespace)
                except ApiException as error:
                    if error.status not in (404, 409):  # deleted or changed meanwhile: next round
                        self.errors.append(f"{namespace}: {error.status} {error.reason}")
                except Exception as error:  # noqa: BLE001 - reported to the test by stop()
                    self.errors.append(f"{namespace}: {error!r}")

    def _mark(self, namespace: str) -> None:
        pods = self.control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
        for pod in pods:
            if pod["metadata"].get("deletionTimestamp") or is_ready(pod):
                continue
            if self.before_ready is not None:
                self.before_ready(pod)
            self.control_plane.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{pod['metadata']['name']}/status",
                                       ready_status(), content_type="application/merge-patch+json")
