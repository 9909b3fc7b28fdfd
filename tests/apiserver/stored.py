"""Pods as the API server stores them: create and read back, the untouched reference, and what
the audit log and plane-guard's decision log say about one creation."""

from __future__ import annotations

import time
from typing import Any

#: Namespaces shared by the tests, by the value of their plane-guard.io/inject label.
NAMESPACES = {"enabled": "plane-enabled", "audit": "plane-audit", None: "plane-off"}
ENABLED, AUDIT, OFF = NAMESPACES["enabled"], NAMESPACES["audit"], NAMESPACES[None]


def create(control_plane, namespace: str, body: dict[str, Any], **query: str) -> dict[str, Any]:
    """Create, then read back what is stored (or, for a dry run, what would be)."""
    answer = control_plane.request("POST", f"/api/v1/namespaces/{namespace}/pods", body, query=query)
    if query.get("dryRun"):
        return answer
    return read(control_plane, namespace, answer["metadata"]["name"])


def read(control_plane, namespace: str, name: str) -> dict[str, Any]:
    return control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")


def reference(control_plane, body: dict[str, Any]) -> dict[str, Any]:
    """The pod as the API server would store it if no webhook touched it: a dry run in the
    namespace that is not opted in, under another name so it never collides with a test's pod."""
    body = dict(body, metadata={**body["metadata"], "name": body["metadata"]["name"] + "-reference"})
    return create(control_plane, OFF, body, dryRun="All")


def audit_annotations(control_plane, namespace: str, name: str) -> dict[str, str]:
    """The annotations of the one audit event of this pod's creation (webhooks' included)."""
    (event,) = control_plane.wait_for_audit(
        lambda e: e["verb"] == "create" and e["objectRef"].get("resource") == "pods"
        and e["objectRef"].get("namespace") == namespace and e["objectRef"].get("name") == name
    )
    return event.get("annotations", {})


def decisions_for(server, namespace: str, pod: str, settle: float = 0.1) -> list[dict[str, Any]]:
    """plane-guard's decision log lines about one pod."""
    time.sleep(settle)  # a decision line is written just after the answer
    return [d for d in server.decisions() if d.get("namespace") == namespace and d.get("pod") == pod]
