"""The pure parts of ``plane-guard restart``: which workloads it plans, which it holds back and
why (rollouts, PodDisruptionBudgets, failing checks), and its usage errors. The command itself
runs against a real API server in tests/apiserver/test_restart.py."""

from __future__ import annotations

import copy

import pytest

from tests.core.test_status import RUNNING, deployment_object, guarded, owned, worker
from webhook import cli
from webhook.ops.restart import HELD, NOT_RESTARTABLE, PLANNED, blocking, budget_problems, plan, selects
from webhook.ops.status_report import NamespaceReport, StatusReport, namespace_report, rollout
from webhook.ops.webhook_health import Check

LABELS = {"app.name": "plane-plane-worker", "tier": "backend"}


def budget(selector, status: dict | None = None, generation: int = 1) -> dict:
    body = {"metadata": {"name": "plane", "generation": generation}, "spec": {"selector": selector}}
    if status is not None:
        body["status"] = status
    return body


@pytest.mark.parametrize("selector,selected", [
    ({}, True),  # policy/v1: an empty selector selects every pod of the namespace
    (None, False),
    ({"matchLabels": {"app.name": "plane-plane-worker"}}, True),
    ({"matchLabels": {"app.name": "plane-plane-api"}}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend", "web"]}]}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["backend"]}]}, False),
    ({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, True),
    ({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, False),
    ({"matchLabels": {"tier": "backend"}, "matchExpressions": [{"key": "tier", "operator": "Gt", "values": ["1"]}]}, False),
])
def test_label_selectors_select_as_the_api_defines_them(selector, selected):
    assert selects(selector, LABELS) is selected


def test_a_budget_holds_the_restart_when_it_allows_no_disruption_or_is_not_observed():
    selector = {"matchLabels": {"app.name": "plane-plane-worker"}}
    ok = {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1}
    assert budget_problems(LABELS, [budget(selector, ok)]) == []
    assert budget_problems(LABELS, [budget({"matchLabels": {"app.name": "other"}}, dict(ok, disruptionsAllowed=0))]) == []
    assert budget_problems(LABELS, [budget(selector, dict(ok, disruptionsAllowed=0, currentHealthy=1))]) == [
        "PodDisruptionBudget plane allows 0 disruptions now (1 healthy, 1 wanted)"]
    unknown = "PodDisruptionBudget plane covers its pods and its status is not known yet"
    assert budget_problems(LABELS, [budget(selector)]) == [unknown]
    assert budget_problems(LABELS, [budget(selector, ok, generation=2)]) == [unknown]


def deployment(**status) -> dict:
    template = {"metadata": worker()["metadata"], "spec": worker()["spec"]}
    return dict(deployment_object(**status), spec={"replicas": 1, "template": copy.deepcopy(template)})


def pod_of(name: str) -> dict:
    return owned(worker(f"{name}-7d9f8b6c5-abcde"), "ReplicaSet", f"{name}-7d9f8b6c5")


def report_of(*namespaces: NamespaceReport, checks: list[Check] | None = None) -> StatusReport:
    return StatusReport(RUNNING, "plane-guard/plane-guard", checks or [], list(namespaces))


def named(workload: dict, name: str) -> dict:
    workload = copy.deepcopy(workload)
    workload["metadata"]["name"] = name
    return workload


def test_the_plan_restarts_only_complete_rollouts_and_says_why_it_holds_the_others():
    workloads = {"Deployment": [named(deployment(), "ready"), named(deployment(available=0), "waiting"),
                                named(deployment(total=2, reason="ProgressDeadlineExceeded"), "stuck"), named(deployment(), "budgeted"),
                                named(deployment(), "fine")]}
    pods = [pod_of(name) for name in ("ready", "waiting", "stuck", "budgeted")]
    pods.append(guarded(pod_of("fine")))
    bare = worker("bare")
    enabled = namespace_report("plane", "enabled", workloads, [*pods, bare], RUNNING)
    audit = namespace_report("plane-audit", "audit", workloads, pods, RUNNING)
    elsewhere = NamespaceReport("elsewhere", "not opted in")
    budgets = {"plane": [budget({"matchLabels": {"app.name": "plane-plane-worker", "missing": "x"}}),
                         {**budget({}), "metadata": {"name": "all", "generation": 1}}]}
    steps, notes = plan(report_of(enabled, audit, elsewhere), {})
    by_name = {s.workload.name: s for s in steps}
    assert set(by_name) == {"ready", "waiting", "stuck", "budgeted", "bare"}  # "fine" is guarded: not in the plan
    assert (by_name["ready"].result, by_name["budgeted"].result) == (PLANNED, PLANNED)
    assert by_name["waiting"].result == HELD and by_name["waiting"].detail.startswith("its last rollout is not complete (0 of 1 pods available)")
    assert by_name["stuck"].result == HELD and by_name["stuck"].detail.startswith("its rollout exceeded its progress deadline")
    assert (by_name["bare"].result, by_name["bare"].detail) == (NOT_RESTARTABLE, "a pod of no workload: delete and re-create it")
    assert notes == ["namespace plane-audit: audit mode: plane-guard changes no pod there, nothing to restart (4 pod(s) audited)",
                     "namespace elsewhere: not opted in: label it plane-guard.io/inject=enabled first"]
    # An empty selector covers every pod of its namespace: with an unknown status, everything is held.
    steps, _ = plan(report_of(enabled), budgets)
    assert {s.workload.name for s in steps if s.result == PLANNED} == set()
    assert "PodDisruptionBudget all covers its pods" in {s.workload.name: s for s in steps}["ready"].detail


def stateful_set(partition: int | None) -> dict:
    """Two ordinals, both of the current revision and available: a complete rollout."""
    spec = {"replicas": 2, "template": {"metadata": worker()["metadata"], "spec": worker()["spec"]}}
    if partition is not None:
        spec["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}
    status = {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "currentReplicas": 2,
              "updatedReplicas": 2, "currentRevision": "plane-worker-5c8d", "updateRevision": "plane-worker-5c8d"}
    return {"metadata": {"name": "plane-worker", "generation": 1}, "spec": copy.deepcopy(spec), "status": status}


def test_a_stateful_set_with_a_partition_is_held_as_its_pods_below_it_would_keep_their_template():
    """Restarted, it would replace only the ordinals from the partition up, then fail on the
    others as if the webhook had let them through unguarded."""
    pods = [owned(worker(f"plane-worker-{ordinal}"), "StatefulSet", "plane-worker") for ordinal in range(2)]
    found = {}
    for partition in (None, 0, 1, 2):
        enabled = namespace_report("plane", "enabled", {"StatefulSet": [stateful_set(partition)]}, pods, RUNNING)
        (step,), _ = plan(report_of(enabled), {})
        found[partition] = (step.result, step.detail)
    assert [result for result, _ in found.values()] == [PLANNED, PLANNED, HELD, HELD]
    assert found[1][1] == ("its updateStrategy has partition 1: a restart replaces only its pods from ordinal 1 up; "
                           "set the partition to 0, then run restart again")


def test_failing_webhook_checks_refuse_the_restart_and_certificate_days_or_checks_not_done_do_not():
    checks = [Check("serving certificate", False, "expires in 3 days", kind="certificate"),
              Check("serving certificate", False, "no read access", done=False, kind="certificate"),
              Check("mutate.plane-guard.io (MutatingWebhookConfiguration plane-guard)", False, "caBundle present; not checked", done=False)]
    assert blocking(report_of(checks=checks)) == []
    checks.append(Check("Service plane-guard/plane-guard", False, "no ready endpoints", kind="service"))
    assert blocking(report_of(checks=checks)) == ["Service plane-guard/plane-guard: no ready endpoints"]


def test_a_webhook_that_is_rolling_out_a_new_policy_refuses_the_restart():
    """Until the webhook's own rollout is over, new Plane pods may still get its old policy."""
    report = report_of()
    for state, refused in (({"total": 3, "updated": 1}, True), ({"reason": "ProgressDeadlineExceeded", "total": 2}, True),
                           ({"available": 0}, False), ({}, False)):
        report.webhook_rollout = rollout("Deployment", deployment_object(**state), [])
        found = blocking(report)
        assert bool(found) is refused, (state, found)
    report.webhook_rollout = rollout("Deployment", deployment_object(total=3, updated=1), [])
    assert blocking(report)[0].startswith("Deployment plane-guard/plane-guard: its rollout is under way (1 of 1 pods updated, 2 old ")
    assert blocking(report)[0].endswith("wait for it (kubectl -n plane-guard rollout status deployment/plane-guard)")


@pytest.mark.parametrize("args,message", [
    (["--parallel", "0"], "--parallel must be 1 or more"),
    (["--timeout", "0"], "--timeout more than 0"),
    (["-n", "Not_A_Name"], "'Not_A_Name' is not a Kubernetes object name"),
    (["--kubeconfig", "/nonexistent/kubeconfig"], "kubeconfig /nonexistent/kubeconfig: no such file"),
])
def test_usage_errors_exit_2_with_a_message_and_nothing_on_stdout(capsys, args, message):
    assert cli.main(["restart", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("plane-guard restart: ") and message in err
