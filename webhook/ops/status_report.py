"""What ``plane-guard status`` and ``plane-guard restart`` see: the state of every Plane pod, by
workload and namespace, and where each workload's rollout stands.

Pure: objects as the API server returns them (JSON) in, a report out. Both commands classify
pods here, so they never disagree. Which pods are Plane's, and what plane-guard does to them,
come from the webhook's own code (``mutate_pod``, ``role_of``): a pod is listed when one of its
containers runs an image of the policy's roles, and its verdict follows the roles' commands, as
the webhook's decision does. An annotation alone never makes a pod Plane's, nor guarded.

A pod is:

- ``guarded``: its ``plane-guard.io/status`` annotation names the running policy and version,
  and the pod shows the changes (plane-guard would change nothing more);
- ``stale``: the annotation names another policy digest or plane-guard version, and the pod
  shows plane-guard's runtime (init container, volume, wrapped commands);
- ``unguarded``: plane-guard would change it, with or without an annotation (created before the
  namespace opted in, while the webhook was down, or with an annotation copied onto it);
- ``audited``: the same in a namespace in audit mode, where plane-guard never changes a pod;
- ``skipped``: plane-guard leaves it alone, and the detail says why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
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
#: The changes that show plane-guard's runtime in a pod, whatever the policy's values.
RUNTIME_CHANGES = re.compile(r"^(pod:runtime-volume|pod:runtime-init-container|[^:]+:entrypoint|[^:]+:runtime-volume-mount)$")
#: Where a rollout stands (``Rollout.state``).
COMPLETE, UNDER_WAY, WAITING, STUCK, MANUAL = "complete", "under way", "waiting", "stuck", "manual"
REVISION = "deployment.kubernetes.io/revision"


# --------------------------------------------------------------------------- text from the cluster

#: C0 and C1 controls, DEL, and the Unicode line separators and bidirectional overrides that
#: can move or hide text on a terminal.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def clean(value: Any, limit: int = 120) -> str:
    """One printable line of at most ``limit`` characters: anything read from the cluster goes
    through here before it is printed (controls escaped as ``\\xNN``, the rest cut, and the
    original length said)."""
    if not isinstance(value, str):
        try:
            value = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        except (TypeError, ValueError, RecursionError):
            value = type(value).__name__
    total = len(value)
    text = _UNSAFE.sub(_escape, value[: limit * 4])
    if total <= limit and len(text) <= limit:
        return text
    suffix = f"... ({total} chars)"
    return text[: max(limit - len(suffix), 1)] + suffix


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# --------------------------------------------------------------------------- pods


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
    #: During a rollout: True for a pod of the workload's current template, False for an old one.
    new: bool | None = None


def recorded_status(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The pod's status annotation, parsed; ``{}`` when unreadable, None when absent."""
    text = as_map(as_map(pod.get("metadata")).get("annotations")).get(conventions.STATUS_ANNOTATION)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def is_plane(pod: dict[str, Any], policy: Policy) -> bool:
    """A pod (or template) with a container on an image of one of the policy's roles (the
    webhook's matchConditions let exactly these through). Annotations play no part."""
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


def _missing(changes: Sequence[str]) -> str:
    """The changes a pod lacks, plane-guard's runtime (init container, volume, wrapper) first."""
    changes = sorted(changes, key=lambda c: not RUNTIME_CHANGES.match(c))
    shown = ", ".join(changes[:3]) + (f", +{len(changes) - 3} more" if len(changes) > 3 else "")
    return f"{len(changes)} of plane-guard's changes missing ({shown})"


def pod_state(pod: dict[str, Any], running: Running, audit: bool) -> PodState:
    """The verdict on one live pod. The annotation is checked against the pod itself: the
    webhook's own mutation, run again, must find nothing left to do."""
    name = clean(as_map(pod.get("metadata")).get("name", ""), 253)
    outcome = mutate_pod(pod, running.policy)
    if not outcome.matched:
        return PodState(name, SKIPPED, skip_reason(outcome))
    record = recorded_status(pod)
    unchanged = AUDITED if audit else UNGUARDED
    if record is None:
        if not outcome.changes:
            return PodState(name, SKIPPED, skip_reason(outcome))
        changes = f"plane-guard would make {len(outcome.changes)} changes"
        if audit:
            return PodState(name, AUDITED, f"audit mode: reported, not changed ({changes} when enabled)")
        return PodState(name, UNGUARDED, f"created before the namespace opted in or while the webhook was down ({changes})")
    annotation = conventions.STATUS_ANNOTATION
    runtime_missing = [c for c in outcome.changes if RUNTIME_CHANGES.match(c)]
    if not record:
        if runtime_missing:
            return PodState(name, unchanged, f"unreadable {annotation} annotation, and {_missing(runtime_missing)}")
        return PodState(name, STALE, f"unreadable {annotation} annotation")
    digest, version = running.policy.digest, running.version
    differs = []
    if record.get("policy") != digest:
        differs.append(f"policy {clean(record.get('policy'), 64)} (running {digest})")
    if record.get("version") != version:
        differs.append(f"plane-guard {clean(record.get('version'), 64)} (running {version})")
    if differs:
        if runtime_missing:
            return PodState(name, unchanged, f"its {annotation} annotation names {' and '.join(differs)}, but {_missing(runtime_missing)}")
        return PodState(name, STALE, "guarded by " + " and ".join(differs))
    if outcome.changes:
        return PodState(name, unchanged, f"its {annotation} annotation names the running policy, but {_missing(list(outcome.changes))}: "
                                         "the annotation was copied or the pod edited")
    return PodState(name, GUARDED, f"policy {digest}, plane-guard {version}")


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


# --------------------------------------------------------------------------- rollouts


@dataclass(frozen=True)
class Rollout:
    """Where a Deployment's, StatefulSet's or DaemonSet's rollout stands, read as ``kubectl
    rollout status`` reads it, and which of its pods come from its current template."""

    state: str
    detail: str
    #: Names of the pods of the current template; None when that cannot be told yet.
    new_pods: frozenset[str] | None = None

    @property
    def complete(self) -> bool:
        return self.state == COMPLETE


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    conditions = status.get("conditions")
    found = [c for c in conditions if isinstance(c, dict) and c.get("type") == kind] if isinstance(conditions, list) else []
    return found[0] if found else {}


def _names(pods: Iterable[dict[str, Any]], label: str, value: Any) -> frozenset[str] | None:
    if not isinstance(value, str) or not value:
        return None
    return frozenset(str(as_map(p.get("metadata")).get("name")) for p in pods
                     if as_map(as_map(p.get("metadata")).get("labels")).get(label) == value)


def _current_replicaset(deployment: dict[str, Any], replicasets: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The ReplicaSet of the Deployment's current template: its revision is the Deployment's."""
    metadata = as_map(deployment.get("metadata"))
    revision = as_map(metadata.get("annotations")).get(REVISION)
    for replicaset in replicasets:
        rs_metadata = as_map(replicaset.get("metadata"))
        reference = _controller(rs_metadata)
        if reference is None or reference.get("kind") != "Deployment" or reference.get("name") != metadata.get("name"):
            continue
        if revision is not None and as_map(rs_metadata.get("annotations")).get(REVISION) == revision:
            return replicaset
    return None


def rollout(kind: str, workload: dict[str, Any], pods: Sequence[dict[str, Any]], replicasets: Sequence[dict[str, Any]] = ()) -> Rollout:
    """The rollout of one workload (``pods``: its live pods). ``complete`` is what ``kubectl
    rollout status`` calls successfully rolled out; ``under way``: old pods are still being
    replaced; ``waiting``: every pod is of the current template, not all available yet;
    ``stuck``: past its progress deadline; ``manual``: the OnDelete strategy replaces no pod."""
    metadata, spec, status = as_map(workload.get("metadata")), as_map(workload.get("spec")), as_map(workload.get("status"))
    generation, observed = _int(metadata.get("generation")), _int(status.get("observedGeneration"))
    if kind == "Deployment":
        replicaset = _current_replicaset(workload, replicasets)
        template_hash = as_map(as_map(as_map(replicaset).get("metadata")).get("labels")).get("pod-template-hash")
        new = _names(pods, "pod-template-hash", template_hash)
        progressing = _condition(status, "Progressing")
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            return Rollout(STUCK, "its rollout exceeded its progress deadline (ProgressDeadlineExceeded)", new)
        wanted = _int(spec.get("replicas"), 1)
        updated, total, available = _int(status.get("updatedReplicas")), _int(status.get("replicas")), _int(status.get("availableReplicas"))
        if observed < generation:
            return Rollout(UNDER_WAY, "the new template is not yet observed by the controller", new)
        if total > updated:
            return Rollout(UNDER_WAY, f"{updated} of {wanted} pods updated, {total - updated} old pod(s) not yet replaced", new)
        if updated < wanted:
            return Rollout(WAITING, f"{updated} of {wanted} pods created", new)
        if available < updated:
            return Rollout(WAITING, f"{available} of {updated} pods available", new)
        return Rollout(COMPLETE, f"{available} of {wanted} pods available", new)
    if kind == "StatefulSet":
        new = _names(pods, "controller-revision-hash", status.get("updateRevision"))
        if as_map(spec.get("updateStrategy")).get("type") == "OnDelete":
            return Rollout(MANUAL, "updateStrategy OnDelete: a restart replaces no pod (delete them yourself)", new)
        wanted = _int(spec.get("replicas"), 1)
        if observed < generation or not observed:
            return Rollout(UNDER_WAY, "the new template is not yet observed by the controller", new)
        partition = _int(as_map(as_map(spec.get("updateStrategy")).get("rollingUpdate")).get("partition"))
        updated = _int(status.get("updatedReplicas"))
        if partition:
            # As kubectl reads it: the rollout is done once the ordinals from the partition up are updated.
            due = max(wanted - partition, 0)
            if updated < due:
                return Rollout(UNDER_WAY, f"{updated} of {due} pods from ordinal {partition} up updated (partition {partition})", new)
        elif status.get("updateRevision") != status.get("currentRevision"):
            return Rollout(UNDER_WAY, f"{updated} of {wanted} pods updated", new)
        ready = _int(status.get("availableReplicas", status.get("readyReplicas")))
        if ready < wanted:
            return Rollout(WAITING, f"{ready} of {wanted} pods available", new)
        return Rollout(COMPLETE, f"{ready} of {wanted} pods available", new)
    if kind == "DaemonSet":
        new = _names(pods, "pod-template-generation", str(generation) if generation else None)
        if as_map(spec.get("updateStrategy")).get("type") == "OnDelete":
            return Rollout(MANUAL, "updateStrategy OnDelete: a restart replaces no pod (delete them yourself)", new)
        wanted = _int(status.get("desiredNumberScheduled"))
        if observed < generation:
            return Rollout(UNDER_WAY, "the new template is not yet observed by the controller", new)
        updated, available = _int(status.get("updatedNumberScheduled")), _int(status.get("numberAvailable"))
        if updated < wanted:
            return Rollout(UNDER_WAY, f"{updated} of {wanted} pods updated", new)
        if available < wanted:
            return Rollout(WAITING, f"{available} of {wanted} pods available", new)
        return Rollout(COMPLETE, f"{available} of {wanted} pods available", new)
    return Rollout(MANUAL, f"a {kind} has no rollout", None)


# --------------------------------------------------------------------------- workloads and namespaces


@dataclass
class WorkloadReport:
    kind: str
    name: str
    roles: dict[str, str] = field(default_factory=dict)
    pods: list[PodState] = field(default_factory=list)
    #: The workload's rollout (Deployments, StatefulSets, DaemonSets that were listed).
    rollout: Rollout | None = None
    #: The workload object as read (for ``restart``: its template labels and resourceVersion).
    source: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def target(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def count(self, *states: str) -> int:
        return sum(1 for pod in self.pods if pod.state in states)

    @property
    def rolling(self) -> bool:
        """A rollout is replacing its pods now: a restart line would only repeat it."""
        return self.rollout is not None and self.rollout.state == UNDER_WAY

    def new_pods(self, *states: str) -> list[str]:
        return [p.name for p in self.pods if p.new and (not states or p.state in states)]


@dataclass
class NamespaceReport:
    name: str
    mode: str
    note: str = ""
    workloads: list[WorkloadReport] = field(default_factory=list)

    @property
    def enforced(self) -> bool:
        return self.mode == "enabled"

    def needing(self) -> list[WorkloadReport]:
        """Workloads with unguarded or stale pods; none in audit mode, where a restart guards nothing."""
        return [w for w in self.workloads if self.enforced and w.count(*NEEDS_RESTART)]

    def to_restart(self) -> list[WorkloadReport]:
        """The workloads to restart: those with unguarded or stale pods and no rollout under way."""
        return [w for w in self.needing() if not w.rolling]

    def rolling(self) -> list[WorkloadReport]:
        """Workloads whose rollout is under way while some of their pods are unguarded or stale."""
        return [w for w in self.needing() if w.rolling]

    def restart_command(self) -> str | None:
        targets = [w.target for w in self.to_restart() if w.kind in RESTARTABLE]
        return f"kubectl -n {self.name} rollout restart {' '.join(targets)}" if targets else None


def namespace_report(name: str, mode: str, workloads: dict[str, list[dict[str, Any]]], pods: list[dict[str, Any]],
                     running: Running, replicasets: Sequence[dict[str, Any]] = ()) -> NamespaceReport:
    """Every Plane workload of the namespace (``workloads``: kind -> objects) with its live pods."""
    policy = running.policy
    audit = mode == "audit"
    cronjob_of = {}
    for job in workloads.get("Job", []):
        reference = _controller(as_map(job.get("metadata")))
        if reference is not None and reference.get("kind") == "CronJob":
            cronjob_of[as_map(job.get("metadata")).get("name")] = reference.get("name")
    found: dict[tuple[str, str], WorkloadReport] = {}
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in TEMPLATE_PATHS.keys() & workloads.keys():
        for workload in workloads[kind]:
            workload_id = str(as_map(workload.get("metadata")).get("name", ""))
            if kind == "Job" and workload_id in cronjob_of:
                continue  # listed under its CronJob
            objects[(kind, workload_id)] = workload
            template = _template(kind, workload)
            if is_plane(template, policy):
                found[(kind, workload_id)] = WorkloadReport(kind, workload_id, pod_roles(template, policy), source=workload)
    live: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pod in pods:
        metadata = as_map(pod.get("metadata"))
        if metadata.get("deletionTimestamp") or as_map(pod.get("status")).get("phase") in FINISHED_PHASES:
            continue
        if not is_plane(pod, policy):
            continue
        key = owner(pod, cronjob_of)  # type: ignore[arg-type]
        live.setdefault(key, []).append(pod)
    for key, owned in live.items():
        report = found.setdefault(key, WorkloadReport(*key, source=objects.get(key)))
        report.roles = report.roles or pod_roles(owned[0], policy)
    for key, report in found.items():
        owned = live.get(key, [])
        if report.kind in RESTARTABLE and report.source is not None:
            report.rollout = rollout(report.kind, report.source, owned, replicasets)
        new = report.rollout.new_pods if report.rollout is not None and report.rolling else None
        for pod in owned:
            state = pod_state(pod, running, audit)
            if new is not None:
                state = PodState(state.name, state.state, state.detail, str(as_map(pod.get("metadata")).get("name")) in new)
            report.pods.append(state)
    ordered = sorted(found.values(), key=lambda w: (KIND_ORDER.index(w.kind) if w.kind in KIND_ORDER else len(KIND_ORDER), w.name))
    for report in ordered:
        report.pods.sort(key=lambda p: p.name)
    return NamespaceReport(name, mode, workloads=ordered)


# --------------------------------------------------------------------------- the report


@dataclass
class StatusReport:
    """Everything ``plane-guard status`` prints: the webhook's health and each namespace."""

    running: Running
    deployment: str
    checks: list[Any] = field(default_factory=list)  # webhook_health.Check
    namespaces: list[NamespaceReport] = field(default_factory=list)
    #: The webhook Deployment's own rollout (a new policy or version reaching its pods).
    webhook_rollout: Rollout | None = None

    def attention(self) -> list[str]:
        """One line per thing that needs someone: empty when all is well (exit 0). A check that
        could not be done (no read access) is shown, not counted."""
        found = [f"{clean(c.subject)}: {clean(c.detail, 300)}" for c in self.checks if not c.ok and c.done]
        for namespace in self.namespaces:
            workloads = namespace.to_restart()
            if workloads:
                stale = sum(w.count(STALE) for w in workloads)
                unguarded = sum(w.count(UNGUARDED) for w in workloads)
                found.append(f"namespace {namespace.name}: {stale + unguarded} pod(s) to replace "
                             f"({unguarded} unguarded, {stale} stale) in {len(workloads)} workload(s)")
            for w in namespace.rolling():
                found.append(f"namespace {namespace.name}: {w.target}: rollout under way, "
                             f"{w.count(*NEEDS_RESTART)} pod(s) not guarded yet")
        return found


def _rollout_line(w: WorkloadReport) -> str:
    guarded = w.new_pods(GUARDED)
    waiting = [p for p in w.new_pods() if p not in guarded]
    line = f"rollout under way: {w.target} ({w.rollout.detail if w.rollout else ''}); new pods guarded: {', '.join(guarded) or 'none yet'}"
    return line + (f"; new pods not guarded: {', '.join(waiting)}" if waiting else "")


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
            "checks": [{"subject": c.subject, "ok": c.ok, "done": c.done, "detail": c.detail} for c in report.checks],
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
                        "rollout": {"state": w.rollout.state, "detail": w.rollout.detail} if w.rollout else None,
                        "pods": [{"name": p.name, "state": p.state, "detail": p.detail, "new": p.new} for p in w.pods],
                    }
                    for w in namespace.workloads
                ],
            }
            for namespace in report.namespaces
        ],
    }


def columns(rows: Sequence[tuple[str, ...]], limits: Sequence[int]) -> list[str]:
    """Aligned columns, each cell cleaned and cut to its column's limit (the last one too)."""
    cleaned = [tuple(clean(cell, limit) for cell, limit in zip(row, limits)) for row in rows]
    widths = [max(len(row[i]) for row in cleaned) for i in range(len(cleaned[0]) - 1)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip() for row in cleaned]


def check_mark(check: Any) -> str:
    return "ok" if check.ok else ("FAIL" if check.done else "not done")


def as_table(report: StatusReport) -> str:
    running = report.running
    lines = [
        clean(f"webhook {report.deployment}: plane-guard {running.version} ({running.version_source}), "
              f"policy {running.policy.digest} ({running.policy_source})"
              + (", --mode audit: every namespace is only reported on" if running.server_audit else ""), 400),
        "",
        *columns([("CHECK", "OK", "DETAIL"), *((c.subject, check_mark(c), c.detail) for c in report.checks)], (100, 8, 300)),
    ]
    for namespace in report.namespaces:
        lines += ["", clean(f"namespace {namespace.name}: {namespace.mode}" + (f" ({namespace.note})" if namespace.note else ""), 300)]
        if namespace.mode not in conventions.NAMESPACE_MODES:
            continue
        rows = [("WORKLOAD", "POD", "STATE", "DETAIL")]
        for w in namespace.workloads:
            rows += [(w.target, p.name, p.state, ("new pod: " if p.new else "old pod: " if p.new is False else "") + p.detail)
                     for p in w.pods] or [(w.target, "-", "-", "no running pods")]
        lines += columns(rows, (80, 80, 10, 200)) if len(rows) > 1 else ["no Plane workloads"]
        to_restart = namespace.to_restart()
        if namespace.restart_command():
            lines.append(clean(f"restart: {namespace.restart_command()}", 2000))
        lines += [clean(_rollout_line(w), 600) for w in namespace.rolling()]
        lines += [clean(f"note: {w.target}: {HINTS[w.kind]}", 300) for w in to_restart if w.kind in HINTS]
        lines += [clean(f"note: {w.target}: {w.rollout.detail}: a restart waits until that rollout is fixed", 300)
                  for w in to_restart if w.rollout is not None and w.rollout.state == STUCK]
    attention = report.attention()
    lines += ["", "needs attention:" if attention else "nothing needs attention"]
    lines += [clean(f"- {item}", 400) for item in attention]
    return "\n".join(lines) + "\n"
