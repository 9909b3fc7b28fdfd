"""What ``plane-guard status`` reports: the state of every Plane pod, by workload and namespace.

Pure: objects as the API server returns them (JSON) in, a report out. Which pods are Plane's,
and why one is left alone, come from the mutation itself (``mutate_pod``, ``pod_roles``), so the
report never disagrees with what the webhook does to a pod created now.

A pod is:

- ``guarded``: its ``plane-guard.io/status`` annotation names the running policy and version;
- ``stale``: the annotation names another policy digest or plane-guard version;
- ``unguarded``: no annotation, and plane-guard would change it (created before the namespace
  opted in, or while the webhook was down: ``failurePolicy: Ignore``);
- ``audited``: the same in a namespace in audit mode, where plane-guard never changes a pod;
- ``skipped``: plane-guard leaves it alone, and the detail says why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonpointer

from webhook.core import conventions
from webhook.core.mutation import Outcome, as_map, mutate_pod, pod_roles, workload_name
from webhook.core.policy import Policy
from webhook.ops.preview import TEMPLATE_PATHS

GUARDED, STALE, UNGUARDED, AUDITED, SKIPPED = "guarded", "stale", "unguarded", "audited", "skipped"
#: States a restart fixes (in a namespace that is enabled).
NEEDS_RESTART = (STALE, UNGUARDED)
#: Workload kinds ``kubectl rollout restart`` accepts, in the order they are listed.
RESTARTABLE = ("Deployment", "StatefulSet", "DaemonSet")
KIND_ORDER = (*RESTARTABLE, "CronJob", "Job", "ReplicaSet", "Pod")
#: What to do instead for the kinds a rollout restart cannot replace.
HINTS = {
    "Job": "a Job's pods are not restarted: the next Job created is guarded",
    "CronJob": "the next scheduled Job is guarded",
    "ReplicaSet": "delete its pods: the ReplicaSet re-creates them, guarded",
    "Pod": "a pod of no workload: delete and re-create it",
}
FINISHED_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Running:
    """The policy and version the webhook runs, and where each was read."""

    policy: Policy
    policy_source: str
    version: str
    version_source: str
    #: The server's ``--mode audit``: every opted-in namespace is only reported on.
    server_audit: bool = False


@dataclass(frozen=True)
class PodState:
    name: str
    state: str
    detail: str


@dataclass
class WorkloadReport:
    kind: str
    name: str
    roles: dict[str, str] = field(default_factory=dict)
    pods: list[PodState] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def count(self, *states: str) -> int:
        return sum(1 for pod in self.pods if pod.state in states)


@dataclass
class NamespaceReport:
    name: str
    mode: str
    note: str = ""
    workloads: list[WorkloadReport] = field(default_factory=list)

    @property
    def enforced(self) -> bool:
        return self.mode == "enabled"

    def to_restart(self) -> list[WorkloadReport]:
        """Workloads with unguarded or stale pods; none in audit mode, where a restart guards nothing."""
        return [w for w in self.workloads if self.enforced and w.count(*NEEDS_RESTART)]

    def restart_command(self) -> str | None:
        targets = [w.target for w in self.to_restart() if w.kind in RESTARTABLE]
        return f"kubectl -n {self.name} rollout restart {' '.join(targets)}" if targets else None


def recorded_status(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's status annotation, parsed; ``{}`` when unreadable, None when absent."""
    text = as_map(as_map(pod.get("metadata")).get("annotations")).get(conventions.STATUS_ANNOTATION)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def is_plane(pod: dict[str, Any], policy: Policy) -> bool:
    """A pod (or template) with a container on a Plane backend image, or one plane-guard annotated."""
    if recorded_status(pod) is not None:
        return True
    containers = as_map(pod.get("spec")).get("containers")
    return any(
        isinstance(c, dict) and isinstance(c.get("image"), str) and any(p.search(c["image"]) for p in policy.plane_images)
        for c in (containers if isinstance(containers, list) else [])
    )


def skip_reason(outcome: Outcome) -> str:
    """Why ``mutate_pod`` left a pod alone, in the words the preview uses."""
    top = outcome.reasons[0] if outcome.reasons else ""
    if top == "opted-out":
        return f"opted out by its {conventions.INJECT} label or annotation"
    if top == "no-role-matched":
        return "no role: " + "; ".join(outcome.notes)
    if outcome.notes:
        return "; ".join(outcome.notes)
    return "left unchanged: " + ", ".join(outcome.reasons)


def pod_state(pod: dict[str, Any], running: Running, audit: bool) -> PodState:
    name = str(as_map(pod.get("metadata")).get("name", ""))
    record = recorded_status(pod)
    if record is not None:
        if not record:
            return PodState(name, STALE, f"unreadable {conventions.STATUS_ANNOTATION} annotation")
        digest, version = running.policy.digest, running.version
        differs = []
        if record.get("policy") != digest:
            differs.append(f"policy {record.get('policy')} (running {digest})")
        if record.get("version") != version:
            differs.append(f"plane-guard {record.get('version')} (running {version})")
        if differs:
            return PodState(name, STALE, "guarded by " + " and ".join(differs))
        return PodState(name, GUARDED, f"policy {digest}, plane-guard {version}")
    outcome = mutate_pod(pod, running.policy)
    if not outcome.patch:
        return PodState(name, SKIPPED, skip_reason(outcome))
    changes = f"plane-guard would make {len(outcome.changes)} changes"
    if audit:
        return PodState(name, AUDITED, f"audit mode: reported, not changed ({changes} when enabled)")
    return PodState(name, UNGUARDED, f"created before the namespace opted in or while the webhook was down ({changes})")


def _controller(metadata: dict[str, Any]) -> dict[str, Any] | None:
    owners = metadata.get("ownerReferences")
    return next((o for o in owners if isinstance(o, dict) and o.get("controller")), None) if isinstance(owners, list) else None


def owner(pod: dict[str, Any], cronjob_of: dict[str, str]) -> tuple[str, str]:
    """(kind, name) of the workload to restart for this pod: a Deployment for its ReplicaSet's
    pods, a CronJob for its Jobs' pods, the pod itself when nothing owns it."""
    metadata = as_map(pod.get("metadata"))
    reference = _controller(metadata)
    if reference is None or not isinstance(reference.get("name"), str):
        return "Pod", str(metadata.get("name", ""))
    kind, name = str(reference.get("kind")), reference["name"]
    if kind == "ReplicaSet" and workload_name(pod) != name:
        return "Deployment", str(workload_name(pod))
    if kind == "Job" and name in cronjob_of:
        return "CronJob", cronjob_of[name]
    return kind, name


def _template(kind: str, workload: dict[str, Any]) -> dict[str, Any]:
    template = jsonpointer.resolve_pointer(workload, TEMPLATE_PATHS[kind], None)
    return template if isinstance(template, dict) else {}


def namespace_report(name: str, mode: str, workloads: dict[str, list[dict[str, Any]]], pods: list[dict[str, Any]],
                     running: Running) -> NamespaceReport:
    """Every Plane workload of the namespace (``workloads``: kind -> objects) with its live pods."""
    policy = running.policy
    audit = mode == "audit"
    cronjob_of = {}
    for job in workloads.get("Job", []):
        reference = _controller(as_map(job.get("metadata")))
        if reference is not None and reference.get("kind") == "CronJob":
            cronjob_of[as_map(job.get("metadata")).get("name")] = reference.get("name")
    found: dict[tuple[str, str], WorkloadReport] = {}
    for kind in TEMPLATE_PATHS.keys() & workloads.keys():
        for workload in workloads[kind]:
            workload_id = str(as_map(workload.get("metadata")).get("name", ""))
            if kind == "Job" and workload_id in cronjob_of:
                continue  # listed under its CronJob
            template = _template(kind, workload)
            if is_plane(template, policy):
                found[(kind, workload_id)] = WorkloadReport(kind, workload_id, pod_roles(template, policy))
    for pod in pods:
        metadata = as_map(pod.get("metadata"))
        if metadata.get("deletionTimestamp") or as_map(pod.get("status")).get("phase") in FINISHED_PHASES:
            continue
        if not is_plane(pod, policy):
            continue
        key = owner(pod, cronjob_of)  # type: ignore[arg-type]
        report = found.setdefault(key, WorkloadReport(*key))
        report.roles = report.roles or pod_roles(pod, policy)
        report.pods.append(pod_state(pod, running, audit))
    ordered = sorted(found.values(), key=lambda w: (KIND_ORDER.index(w.kind) if w.kind in KIND_ORDER else len(KIND_ORDER), w.name))
    for report in ordered:
        report.pods.sort(key=lambda p: p.name)
    return NamespaceReport(name, mode, workloads=ordered)


@dataclass
class StatusReport:
    """Everything ``plane-guard status`` prints: the webhook's health and each namespace."""

    running: Running
    deployment: str
    checks: list[Any] = field(default_factory=list)  # webhook_health.Check
    namespaces: list[NamespaceReport] = field(default_factory=list)

    def attention(self) -> list[str]:
        """One line per thing that needs someone: empty when all is well (exit 0)."""
        found = [f"{c.subject}: {c.detail}" for c in self.checks if not c.ok]
        for namespace in self.namespaces:
            workloads = namespace.to_restart()
            if workloads:
                stale = sum(w.count(STALE) for w in workloads)
                unguarded = sum(w.count(UNGUARDED) for w in workloads)
                found.append(f"namespace {namespace.name}: {stale + unguarded} pod(s) to replace "
                             f"({unguarded} unguarded, {stale} stale) in {len(workloads)} workload(s)")
        return found


def as_json(report: StatusReport) -> dict[str, Any]:
    running = report.running
    return {
        "needsAttention": bool(report.attention()),
        "attention": report.attention(),
        "webhook": {
            "deployment": report.deployment,
            "version": running.version,
            "versionSource": running.version_source,
            "policy": running.policy.digest,
            "policySource": running.policy_source,
            "mode": "audit" if running.server_audit else "enforce",
            "checks": [{"subject": c.subject, "ok": c.ok, "detail": c.detail} for c in report.checks],
        },
        "namespaces": [
            {
                "name": namespace.name,
                "mode": namespace.mode,
                "note": namespace.note,
                "restart": namespace.restart_command(),
                "workloads": [
                    {
                        "kind": w.kind,
                        "name": w.name,
                        "roles": w.roles,
                        "needsRestart": w in namespace.to_restart(),
                        "restart": f"kubectl -n {namespace.name} rollout restart {w.target}"
                        if w.kind in RESTARTABLE and w in namespace.to_restart() else None,
                        "hint": HINTS.get(w.kind) if w in namespace.to_restart() else None,
                        "pods": [{"name": p.name, "state": p.state, "detail": p.detail} for p in w.pods],
                    }
                    for w in namespace.workloads
                ],
            }
            for namespace in report.namespaces
        ],
    }


def _columns(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip() for row in rows]


def as_table(report: StatusReport) -> str:
    running = report.running
    lines = [
        f"webhook {report.deployment}: plane-guard {running.version} ({running.version_source}), "
        f"policy {running.policy.digest} ({running.policy_source})"
        + (", --mode audit: every namespace is only reported on" if running.server_audit else ""),
        "",
        *_columns([("CHECK", "OK", "DETAIL"), *((c.subject, "ok" if c.ok else "FAIL", c.detail) for c in report.checks)]),
    ]
    for namespace in report.namespaces:
        lines += ["", f"namespace {namespace.name}: {namespace.mode}" + (f" ({namespace.note})" if namespace.note else "")]
        if namespace.mode not in conventions.NAMESPACE_MODES:
            continue
        rows = [("WORKLOAD", "POD", "STATE", "DETAIL")]
        for w in namespace.workloads:
            rows += [(w.target, p.name, p.state, p.detail) for p in w.pods] or [(w.target, "-", "-", "no running pods")]
        lines += _columns(rows) if len(rows) > 1 else ["no Plane workloads"]
        to_restart = namespace.to_restart()
        if namespace.restart_command():
            lines.append(f"restart: {namespace.restart_command()}")
        lines += [f"note: {w.target}: {HINTS[w.kind]}" for w in to_restart if w.kind in HINTS]
    attention = report.attention()
    lines += ["", "needs attention:" if attention else "nothing needs attention"]
    lines += [f"- {item}" for item in attention]
    return "\n".join(lines) + "\n"
