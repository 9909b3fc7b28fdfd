"""``plane-guard restart``: replace the pods ``status`` finds unguarded or stale, safely.

It restarts the Deployments, StatefulSets and DaemonSets that run such pods, the way ``kubectl
rollout restart`` does (the pod template's ``kubectl.kubernetes.io/restartedAt`` annotation, so
each rollout follows the workload's own strategy), one at a time or ``--parallel N``, waits for
each rollout (``--timeout``), then checks that the new pods are guarded: the status annotation
names the running policy and version, and the pods show plane-guard's changes. The pods are
classified by the same code as ``status`` (``status_report``), so the two never disagree.

It never touches a workload whose rollout is not complete (under way, waiting for pods, past its
progress deadline, or with the OnDelete strategy), nor a StatefulSet with a partition (its pods
below it would keep their template), nor one whose pods a PodDisruptionBudget currently allows no
disruption: a rollout is not an eviction, so Kubernetes does not apply the budget to it, but a
budget at zero says the pods are at the floor their owner set. It refuses to start while a
webhook check fails (a restart then only makes new unguarded pods), and stops at the first
failure, naming what it left undone.

Without ``--yes`` it prints the plan and asks on a terminal; when stdin is not a terminal it
changes nothing (a dry run) and says to pass ``--yes``. Exit 0: everything asked for is guarded
afterwards (or already was); 1: something is not (held, failed, left undone, or a dry run with
work to do); 2: bad usage, no credentials, or the API server cannot be reached or refuses the
reads before anything was changed.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from webhook.core import conventions
from webhook.core.mutation import as_map
from webhook.ops.status import WORKLOADS, Cluster, StatusError, StatusOptions, connect, gather, invalid_names
from webhook.ops.status_report import (
    AUDITED,
    GUARDED,
    HINTS,
    RESTARTABLE,
    SKIPPED,
    STALE,
    STUCK,
    UNDER_WAY,
    UNGUARDED,
    PodState,
    StatusReport,
    WorkloadReport,
    check_mark,
    clean,
    columns,
    namespace_report,
    rollout,
)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
#: Seconds between two reads of a workload while its rollout goes on.
POLL = 0.5
#: What ``restart`` needs (manifests/restart grants exactly this); said when the API server refuses.
PERMISSIONS = (
    "get/list namespaces, pods, replicasets and poddisruptionbudgets; get/list/patch deployments, statefulsets and daemonsets; "
    "get the two webhook configurations; in the webhook's namespace get configmaps and its Service, list endpointslices "
    "(kubectl apply -k manifests/restart grants these to the ServiceAccount plane-guard-restart)"
)

#: Results of one workload.
PLANNED, RESTARTED, FAILED, HELD, NOT_STARTED, NOT_RESTARTABLE = (
    "would restart", "restarted", "failed", "held", "not started", "not restartable")


@dataclass(frozen=True)
class RestartOptions:
    """What ``plane-guard restart`` is asked (the command line's options of the same names)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: tuple[str, ...] | None = None
    output: str = "table"
    policy: str | None = None
    parallel: int = 1
    timeout: float = 600
    dry_run: bool = False
    yes: bool = False
    webhook_namespace: str = conventions.SERVICE_NAMESPACE
    webhook_deployment: str = conventions.SERVICE_NAME
    mutating_webhook: str = conventions.MUTATING_WEBHOOK_CONFIGURATION
    validating_webhook: str = conventions.VALIDATING_WEBHOOK_CONFIGURATION

    def status_options(self) -> StatusOptions:
        return StatusOptions(self.kubeconfig, self.context, self.namespace, self.output, self.policy,
                             webhook_namespace=self.webhook_namespace, webhook_deployment=self.webhook_deployment,
                             mutating_webhook=self.mutating_webhook, validating_webhook=self.validating_webhook)


@dataclass
class Step:
    """One workload of the plan, and what became of it."""

    namespace: str
    workload: WorkloadReport
    result: str
    detail: str
    #: The new pods' verdicts, after the rollout.
    pods: list[PodState] = field(default_factory=list)

    @property
    def before(self) -> str:
        counts = [f"{self.workload.count(state)} {state}" for state in (UNGUARDED, STALE) if self.workload.count(state)]
        return ", ".join(counts) or "-"


# --------------------------------------------------------------------------- the plan (pure)


def selects(selector: Any, labels: dict[str, Any]) -> bool:
    """Whether a label selector (``matchLabels``, ``matchExpressions``) selects these labels.
    An empty selector selects everything, a missing one nothing (policy/v1 PodDisruptionBudget)."""
    if not isinstance(selector, dict):
        return False
    for label, value in as_map(selector.get("matchLabels")).items():
        if labels.get(label) != value:
            return False
    expressions = selector.get("matchExpressions")
    for item in expressions if isinstance(expressions, list) else []:
        expression = as_map(item)
        key, operator = str(expression.get("key")), expression.get("operator")
        listed = expression.get("values")
        values: list[Any] = listed if isinstance(listed, list) else []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def budget_problems(labels: dict[str, Any], budgets: Sequence[dict[str, Any]]) -> list[str]:
    """Why the PodDisruptionBudgets covering pods with these labels forbid a restart now: one
    sentence per budget that allows no disruption (or whose status is not yet known)."""
    found = []
    for budget in budgets:
        metadata, status = as_map(budget.get("metadata")), as_map(budget.get("status"))
        if not selects(as_map(budget.get("spec")).get("selector"), labels):
            continue
        name = clean(metadata.get("name"), 253)
        allowed = status.get("disruptionsAllowed")
        observed = status.get("observedGeneration")
        if not isinstance(allowed, int) or not isinstance(observed, int) or observed < int(metadata.get("generation") or 0):
            found.append(f"PodDisruptionBudget {name} covers its pods and its status is not known yet")
        elif allowed < 1:
            found.append(f"PodDisruptionBudget {name} allows 0 disruptions now "
                         f"({status.get('currentHealthy', '?')} healthy, {status.get('desiredHealthy', '?')} wanted)")
    return found


def template_labels(workload: dict[str, Any] | None) -> dict[str, Any]:
    return as_map(as_map(as_map(as_map(as_map(workload).get("spec")).get("template")).get("metadata")).get("labels"))


def partition(workload: WorkloadReport) -> int:
    """A StatefulSet's rolling-update partition: its pods below that ordinal keep their template."""
    if workload.kind != "StatefulSet":
        return 0
    strategy = as_map(as_map(as_map(workload.source).get("spec")).get("updateStrategy"))
    value = as_map(strategy.get("rollingUpdate")).get("partition")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def why_not_now(namespace: str, workload: WorkloadReport, budgets: Sequence[dict[str, Any]]) -> str | None:
    """Why this workload must not be restarted now, or None when it may."""
    current = workload.rollout
    if current is None:
        return "its workload object could not be read"
    if not current.complete:
        kubectl = f"kubectl -n {namespace} rollout status {workload.target}"
        return {
            "under way": f"a rollout is under way ({current.detail}): wait for it ({kubectl}), then run restart again",
            "waiting": f"its last rollout is not complete ({current.detail}): a restart would not finish; see {kubectl}",
            "stuck": f"{current.detail}: fix that rollout first ({kubectl})",
        }.get(current.state, current.detail)
    # A rollout stops at the partition: the pods below it would stay as they are, and the
    # check after the rollout would blame the webhook for them.
    held = partition(workload)
    if held > 0:
        return (f"its updateStrategy has partition {held}: a restart replaces only its pods from ordinal {held} up; "
                "set the partition to 0, then run restart again")
    problems = budget_problems(template_labels(workload.source), budgets)
    if problems:
        return "; ".join(problems) + ": restart it when the budget allows a disruption"
    return None


def plan(report: StatusReport, budgets: dict[str, list[dict[str, Any]]]) -> tuple[list[Step], list[str]]:
    """The steps (every workload with unguarded or stale pods, planned or held, and why), and
    notes on namespaces where restarting guards nothing."""
    steps: list[Step] = []
    notes: list[str] = []
    for namespace in report.namespaces:
        if namespace.mode not in conventions.NAMESPACE_MODES:
            notes.append(f"namespace {namespace.name}: not opted in: label it {conventions.INJECT}=enabled first")
            continue
        if not namespace.enforced:
            audited = sum(w.count(AUDITED) for w in namespace.workloads)
            notes.append(f"namespace {namespace.name}: {namespace.mode} mode: plane-guard changes no pod there, "
                         f"nothing to restart ({audited} pod(s) audited)")
            continue
        for workload in namespace.needing():
            if workload.kind not in RESTARTABLE:
                steps.append(Step(namespace.name, workload, NOT_RESTARTABLE, HINTS.get(workload.kind, "not a rollout")))
                continue
            problem = why_not_now(namespace.name, workload, budgets.get(namespace.name, []))
            steps.append(Step(namespace.name, workload, HELD if problem else PLANNED,
                              problem or "its last rollout is complete and no PodDisruptionBudget is at zero"))
    return steps, notes


def blocking(report: StatusReport) -> list[str]:
    """Failed checks that make a restart pointless: the new pods would start unguarded too.
    The certificate's remaining days are not among them (the caBundle checks cover validity).
    Nor may the webhook itself be rolling out: new Plane pods could still get its old policy."""
    found = [f"{clean(c.subject)}: {clean(c.detail, 300)}" for c in report.checks if not c.ok and c.done and c.kind != "certificate"]
    webhook = report.webhook_rollout
    if webhook is not None and webhook.state in (UNDER_WAY, STUCK):
        namespace, name = report.deployment.split("/", 1)
        found.append(f"Deployment {report.deployment}: its rollout is {webhook.state} ({webhook.detail}): new Plane pods could get "
                     f"the old policy or version; wait for it (kubectl -n {namespace} rollout status deployment/{name})")
    return found


# --------------------------------------------------------------------------- one rollout


def read_budgets(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return cluster.items(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets")


class Restarter:
    """Restarts one workload and checks its new pods; shared by the worker threads."""

    def __init__(self, cluster: Cluster, report: StatusReport, options: RestartOptions, stop: threading.Event,
                 clock: Callable[[], float] = time.monotonic):
        self.cluster, self.report, self.options, self.stop, self.clock = cluster, report, options, stop, clock

    def path(self, namespace: str, workload: WorkloadReport) -> str:
        return f"{WORKLOADS[workload.kind]}/namespaces/{namespace}/{workload.kind.lower()}s/{workload.name}"

    def budgets(self, namespace: str) -> list[dict[str, Any]]:
        return read_budgets(self.cluster, namespace)

    def run(self, step: Step) -> Step:
        try:
            self._run(step)
        except StatusError as error:
            step.result, step.detail = FAILED, f"{error}; the rollout, if it began, goes on in the cluster"
        return step

    def _run(self, step: Step) -> None:
        path = self.path(step.namespace, step.workload)
        current = self.cluster.get(path)
        if current is None:
            step.result, step.detail = FAILED, "it no longer exists"
            return
        # Read again just before: another rollout or a budget may have changed since the plan.
        fresh = WorkloadReport(step.workload.kind, step.workload.name, rollout=rollout(step.workload.kind, current, []), source=current)
        problem = why_not_now(step.namespace, fresh, self.budgets(step.namespace))
        if problem:
            step.result, step.detail = HELD, problem
            return
        # RFC 3339 as kubectl writes it, to the microsecond: two restarts within a second still differ.
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        patched = self.cluster.patch(path, {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}})
        generation = int(as_map(as_map(patched).get("metadata")).get("generation") or 0)
        finished = self._wait(step, path, generation)
        if finished is None:
            return
        self._verify(step, finished)

    def _wait(self, step: Step, path: str, generation: int) -> dict[str, Any] | None:
        """The workload once its rollout is complete; None (and the step failed) otherwise."""
        deadline = self.clock() + self.options.timeout
        watch = f"kubectl -n {step.namespace} rollout status {step.workload.target}"
        while True:
            current = self.cluster.get(path)
            if current is None:
                step.result, step.detail = FAILED, "it was deleted during its rollout"
                return None
            observed = int(as_map(current.get("status")).get("observedGeneration") or 0)
            state = rollout(step.workload.kind, current, [])
            if observed >= generation and state.complete:
                return current
            if observed >= generation and state.state == "stuck":
                step.result, step.detail = FAILED, f"{state.detail}; see {watch}"
                return None
            if self.clock() >= deadline:
                step.result, step.detail = FAILED, (f"its rollout did not finish within {self.options.timeout:g} s ({state.detail}); "
                                                    f"it goes on in the cluster: {watch}")
                return None
            if self.stop.wait(POLL):
                step.result, step.detail = FAILED, f"interrupted during its rollout ({state.detail}); it goes on in the cluster: {watch}"
                return None

    def _verify(self, step: Step, current: dict[str, Any]) -> None:
        """The new pods must be guarded; if the webhook failed open they are not, and that is a failure."""
        namespace = step.namespace
        pods = self.cluster.items(f"/api/v1/namespaces/{namespace}/pods")
        replicasets = self.cluster.items(f"/apis/apps/v1/namespaces/{namespace}/replicasets") if step.workload.kind == "Deployment" else []
        found = namespace_report(namespace, "enabled", {step.workload.kind: [current]}, pods, self.report.running, replicasets)
        same = [w for w in found.workloads if (w.kind, w.name) == (step.workload.kind, step.workload.name)]
        step.pods = same[0].pods if same else []
        bad = [p for p in step.pods if p.state not in (GUARDED, SKIPPED)]
        if not step.pods:
            step.result, step.detail = FAILED, "the rollout finished, but no running pod of it was found to check"
        elif bad:
            shown = "; ".join(f"{p.name} {p.state}: {p.detail}" for p in bad[:3])
            step.result, step.detail = FAILED, (f"{len(bad)} new pod(s) not guarded ({shown}): the webhook did not change them "
                                                "(down, unreachable, or failing open); see plane-guard status")
        else:
            guarded = [p.name for p in step.pods if p.state == GUARDED]
            step.result, step.detail = RESTARTED, f"{len(guarded)} new pod(s) guarded: {', '.join(guarded)}"


def execute(steps: list[Step], restarter: Restarter, parallel: int) -> None:
    """Run the planned steps, ``parallel`` at a time, in order; after the first failure none
    starts (those already running finish) and the rest are marked not started."""
    queue = [s for s in steps if s.result == PLANNED]
    failed = False
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="restart") as pool:
        running: set[concurrent.futures.Future[Step]] = set()
        try:
            while queue or running:
                while queue and not failed and not restarter.stop.is_set() and len(running) < parallel:
                    running.add(pool.submit(restarter.run, queue.pop(0)))
                if not running:
                    break
                done, running = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                failed = failed or any(f.result().result == FAILED for f in done)
        except KeyboardInterrupt:
            restarter.stop.set()
            concurrent.futures.wait(running)
    for step in queue:
        step.result, step.detail = NOT_STARTED, "left undone: restart stopped at the failure above"


# --------------------------------------------------------------------------- output


def guarded_afterwards(steps: Sequence[Step], notes: Sequence[str]) -> bool:
    """Everything asked for is guarded: nothing held, failed, left undone or out of reach."""
    return all(step.result == RESTARTED for step in steps) and not [n for n in notes if "not opted in" in n]


def as_table(report: StatusReport, steps: Sequence[Step], notes: Sequence[str], refused: Sequence[str], header: str) -> str:
    running = report.running
    lines = [clean(f"webhook {report.deployment}: plane-guard {running.version} ({running.version_source}), "
                   f"policy {running.policy.digest} ({running.policy_source})", 400)]
    problems = [c for c in report.checks if not c.ok]
    if problems:
        lines += ["", *columns([("CHECK", "OK", "DETAIL"), *((c.subject, check_mark(c), c.detail) for c in problems)], (100, 8, 300))]
    lines += [""]
    if steps:
        rows = [("NAMESPACE", "WORKLOAD", "PODS", "RESULT", "DETAIL")]
        rows += [(s.namespace, s.workload.target, s.before, s.result, s.detail) for s in steps]
        lines += columns(rows, (63, 100, 40, 16, 600))
    else:
        lines.append("nothing to restart: every Plane pod of the enabled namespaces asked for is guarded")
    lines += [clean(f"note: {n}", 300) for n in notes]
    if refused:
        lines += ["", "refused to restart: these checks fail, so new pods would start unguarded too; fix them first:"]
        lines += [clean(f"- {item}", 400) for item in refused]
    if header:
        lines += ["", header]
    planned = [s for s in steps if s.result == PLANNED]
    undone = [s for s in steps if s.result != RESTARTED]
    restarted = [s for s in steps if s.result == RESTARTED]
    if planned:
        lines.append(f"plan: restart {len(planned)} of {len(steps)} workload(s)" + (
            "; not restartable now: " + ", ".join(f"{s.namespace}/{s.workload.target} ({s.result})" for s in undone if s not in planned)
            if len(undone) > len(planned) else ""))
    elif steps:
        lines.append(f"restarted {len(restarted)} of {len(steps)} workload(s)" + (
            "; left undone: " + ", ".join(f"{s.namespace}/{s.workload.target} ({s.result})" for s in undone) if undone else ""))
    return "\n".join(lines) + "\n"


def as_json(report: StatusReport, steps: Sequence[Step], notes: Sequence[str], refused: Sequence[str], dry_run: bool) -> dict[str, Any]:
    return {
        "dryRun": dry_run,
        "guarded": guarded_afterwards(steps, notes) and not refused,
        "refused": list(refused),
        "webhook": {"deployment": report.deployment, "version": report.running.version, "policy": report.running.policy.digest,
                    "checks": [{"subject": c.subject, "ok": c.ok, "done": c.done, "detail": c.detail} for c in report.checks]},
        "workloads": [
            {"namespace": s.namespace, "kind": s.workload.kind, "name": s.workload.name,
             "before": {UNGUARDED: s.workload.count(UNGUARDED), STALE: s.workload.count(STALE)},
             "result": s.result, "detail": s.detail,
             "pods": [{"name": p.name, "state": p.state, "detail": p.detail} for p in s.pods]}
            for s in steps
        ],
        "undone": [f"{s.namespace}/{s.workload.target}" for s in steps if s.result != RESTARTED],
        "notes": list(notes),
    }


def _print(options: RestartOptions, report: StatusReport, steps: Sequence[Step], notes: Sequence[str], refused: Sequence[str],
           header: str, dry_run: bool, out: TextIO) -> None:
    if options.output == "json":
        out.write(json.dumps(as_json(report, steps, notes, refused, dry_run), indent=2) + "\n")
    else:
        out.write(as_table(report, steps, notes, refused, header))
    out.flush()


def _confirm(count: int, parallel: int, stdin: TextIO, stderr: TextIO) -> bool:
    how = "one at a time" if parallel == 1 else f"{parallel} at a time"
    stderr.write(f"Restart {count} workload(s), {how}? [y/N] ")
    stderr.flush()
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def restart_command(options: RestartOptions, stdin: TextIO | None = None, stdout: TextIO | None = None,
                    stderr: TextIO | None = None) -> int:
    """Plan, ask (or not), restart, check, report; the exit code says whether all is guarded."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    if options.parallel < 1 or options.timeout <= 0:
        stderr.write("plane-guard restart: --parallel must be 1 or more and --timeout more than 0\n")
        return 2
    invalid = invalid_names(options.status_options())
    if invalid:
        stderr.write(f"plane-guard restart: {invalid}\n")
        return 2
    try:
        api_client = connect(options.kubeconfig, options.context)
    except StatusError as error:
        stderr.write(f"plane-guard restart: {error}\n")
        return 2
    try:
        cluster = Cluster(api_client, "restart", PERMISSIONS)
        try:
            report = gather(cluster, options.status_options(), kinds=RESTARTABLE)
            budgets = {n.name: read_budgets(cluster, n.name) for n in report.namespaces if n.enforced and n.needing()}
        except StatusError as error:
            stderr.write(f"plane-guard restart: {error}\n")
            return 2
        steps, notes = plan(report, budgets)
        refused = blocking(report) if any(s.result == PLANNED for s in steps) else []
        planned = [s for s in steps if s.result == PLANNED]
        interactive = stdin is not None and not stdin.closed and stdin.isatty()
        if refused or not planned or options.dry_run or not (options.yes or interactive):
            if refused:
                header = "nothing restarted: run it again once these checks pass"
            elif not planned:
                header = "nothing restarted" if steps else ""
            elif options.dry_run:
                header = "dry run: nothing changed"
            else:
                header = "stdin is not a terminal: nothing restarted; pass --yes to restart these workloads"
            _print(options, report, steps, notes, refused, header, True, stdout)
            return 0 if guarded_afterwards(steps, notes) and not refused else 1
        if not options.yes:
            stderr.write(as_table(report, steps, notes, refused, ""))
            try:
                confirmed = _confirm(len(planned), options.parallel, stdin, stderr)
            except KeyboardInterrupt:
                confirmed = False
            if not confirmed:
                stderr.write("nothing restarted\n")
                return 1
        restarter = Restarter(cluster, report, options, threading.Event())
        execute(steps, restarter, options.parallel)
        _print(options, report, steps, notes, [], "", False, stdout)
        return 0 if guarded_afterwards(steps, notes) else 1
    finally:
        api_client.close()

