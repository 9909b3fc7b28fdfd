"""``plane-guard restart`` on the real API server, run as the ServiceAccount of manifests/restart.

Plane runs before its namespace is opted in; the namespace is labelled; ``restart`` replaces
exactly the Plane workloads, checks that the new pods are guarded, and a second run does nothing.
The Deployment and ReplicaSet controllers of the real kube-controller-manager do the rollouts;
``kubelet.Readiness`` reports the pods ready, the one part of a kubelet a rollout waits for.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.apiserver import install, plane
from tests.apiserver.cluster import free_port
from tests.apiserver.kubelet import Readiness
from tests.install.conftest import PLANE_GUARD, REPO, render
from webhook.core import conventions
from webhook.core.mutation import mutate_pod
from webhook.ops.restart import RESTARTED_AT

NAMESPACE = "plane-restart"
DOWN = "plane-restart-down"
REFUSED = "plane-restart-refused"
ACCOUNT = "plane-guard-restart"
API = "/apis/admissionregistration.k8s.io/v1"
PLANE = {
    "plane-api-wl": plane.plane_template("ee", "api"),
    "plane-beat-worker-wl": plane.plane_template("ee", "beat"),
    "plane-worker-wl": plane.plane_template("ee", "worker"),
}
WEB = "plane-web-wl"


def deployments(control_plane, namespace: str) -> dict[str, dict]:
    found = control_plane.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
    return {d["metadata"]["name"]: d for d in found}


def pods(control_plane, namespace: str) -> list[dict]:
    return control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]


def versions(control_plane, namespace: str) -> dict[str, str]:
    """Every object restart could touch, by kind and name: its resourceVersion."""
    found = {}
    for path, kind in ((f"/apis/apps/v1/namespaces/{namespace}/deployments", "deployment"),
                       (f"/apis/apps/v1/namespaces/{namespace}/replicasets", "replicaset"),
                       (f"/api/v1/namespaces/{namespace}/pods", "pod")):
        for item in control_plane.request("GET", path)["items"]:
            found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return found


def complete(deployment: dict) -> bool:
    status, wanted = deployment.get("status", {}), deployment["spec"]["replicas"]
    return (status.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
            and status.get("updatedReplicas") == wanted == status.get("availableReplicas") == status.get("replicas"))


def wait_until(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def plane_before_opt_in(control_plane, namespace: str) -> None:
    """Plane (and its web frontend) running in a namespace that is not opted in; then the label."""
    control_plane.create_namespace(namespace)
    control_plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", plane.service_account())
    documents = [plane.deployment(t, name) for name, t in PLANE.items()] + [plane.deployment(plane.web_template(), WEB)]
    for document in documents:
        control_plane.request("POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", document)
    wait_until(f"{namespace}: every Deployment available", lambda: all(complete(d) for d in deployments(control_plane, namespace).values()))
    assert not [p for p in pods(control_plane, namespace) if conventions.STATUS_ANNOTATION in p["metadata"].get("annotations", {})]
    control_plane.request("PATCH", f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {conventions.INJECT: "enabled"}}},
                          content_type="application/merge-patch+json")


@pytest.fixture(scope="module")
def account(control_plane, installed, tmp_path_factory) -> Path:
    """manifests/restart applied as a user would; a kubeconfig with a token of its ServiceAccount."""
    if not control_plane.with_controller_manager:
        pytest.skip("needs kube-controller-manager in KUBEBUILDER_ASSETS: its Deployment controller does the rollouts")
    control_plane.kubectl("apply", "-f", "-", input=install.stream(render("restart")))
    token = control_plane.kubectl("-n", conventions.SERVICE_NAMESPACE, "create", "token", ACCOUNT, "--duration=1h").stdout.strip()
    path = tmp_path_factory.mktemp("restart") / "kubeconfig"
    path.write_text(json.dumps(control_plane.kubeconfig_for(token)))
    return path


@pytest.fixture
def kubelet(control_plane):
    """Readiness for the namespaces of this module; a test may set ``before_ready``."""
    readiness = Readiness(control_plane, [NAMESPACE, DOWN, REFUSED]).start()
    yield readiness
    readiness.stop()


def restart(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, stdin not a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE") and k != "KUBECONFIG"}
    return subprocess.run([PLANE_GUARD, "restart", "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=180, env=env, cwd=REPO, stdin=subprocess.DEVNULL)


def on_a_terminal(kubeconfig: Path, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The command with a pseudo-terminal as stdin, typing ``answer``."""
    primary, secondary = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE") and k != "KUBECONFIG"}
    try:
        os.write(primary, answer.encode())
        result = subprocess.run([PLANE_GUARD, "restart", "--kubeconfig", str(kubeconfig), *args],
                                capture_output=True, text=True, timeout=60, env=env, cwd=REPO, stdin=secondary)
    finally:
        os.close(secondary)
        os.close(primary)
    return result


def results(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {w["name"]: w for w in json.loads(result.stdout)["workloads"]}


def test_the_webhook_s_account_cannot_restart_and_the_restart_account_can(control_plane, account):
    def can(user: str, verb: str, resource: str, namespace: str = NAMESPACE) -> str:
        result = control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False)
        return result.stdout.strip()

    webhook = f"system:serviceaccount:{conventions.SERVICE_NAMESPACE}:{conventions.SERVICE_NAME}"
    restarter = f"system:serviceaccount:{conventions.SERVICE_NAMESPACE}:{ACCOUNT}"
    for resource in ("deployments.apps", "statefulsets.apps", "daemonsets.apps"):
        assert (can(webhook, "patch", resource), can(restarter, "patch", resource)) == ("no", "yes"), resource
    assert can(webhook, "list", "pods") == "no"
    assert can(restarter, "delete", "pods") == "no" and can(restarter, "update", "deployments.apps") == "no"
    assert can(restarter, "get", "secrets", conventions.SERVICE_NAMESPACE) == "no"


def test_a_dry_run_and_a_run_without_a_terminal_change_nothing(control_plane, account, kubelet):
    plane_before_opt_in(control_plane, NAMESPACE)
    before = versions(control_plane, NAMESPACE)
    dry = restart(account, "-n", NAMESPACE, "--dry-run", "-o", "json")
    assert dry.returncode == 1, dry.stderr
    assert {name: w["result"] for name, w in results(dry).items()} == dict.fromkeys(PLANE, "would restart")
    assert all(w["before"] == {"unguarded": 1, "stale": 0} for w in results(dry).values())
    assert json.loads(dry.stdout)["dryRun"] is True

    asked = restart(account, "-n", NAMESPACE)
    assert asked.returncode == 1, asked.stderr
    assert "stdin is not a terminal: nothing restarted; pass --yes to restart these workloads" in asked.stdout

    # On a terminal it asks, and anything but yes restarts nothing.
    answered = on_a_terminal(account, "n\n", "-n", NAMESPACE)
    assert answered.returncode == 1 and answered.stdout == ""
    assert "Restart 3 workload(s), one at a time? [y/N] " in answered.stderr and answered.stderr.endswith("nothing restarted\n")
    time.sleep(1)  # what a change would have set off (a new ReplicaSet, pods) has had time to show
    assert versions(control_plane, NAMESPACE) == before


def test_a_pod_disruption_budget_at_zero_holds_its_workload_back(control_plane, account, kubelet):
    """A budget whose status is unknown, or that allows no disruption now, holds the workload;
    one that allows a disruption does not. (No disruption controller here: the test writes the
    status it would write.)"""
    budget = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "plane-beat"},
              "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app.name": "plane-plane-beat-worker"}}}}
    path = f"/apis/policy/v1/namespaces/{NAMESPACE}/poddisruptionbudgets"
    control_plane.request("POST", path, budget)
    try:
        found = results(restart(account, "-n", NAMESPACE, "--dry-run", "-o", "json"))
        assert found["plane-beat-worker-wl"]["result"] == "held"
        assert "PodDisruptionBudget plane-beat covers its pods and its status is not known yet" in found["plane-beat-worker-wl"]["detail"]
        assert found["plane-api-wl"]["result"] == "would restart"

        status = {"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}
        control_plane.request("PATCH", f"{path}/plane-beat/status", {"status": status}, content_type="application/merge-patch+json")
        table = restart(account, "-n", NAMESPACE, "--dry-run")
        assert table.returncode == 1
        print(table.stdout)
        (line,) = [line for line in table.stdout.splitlines() if line.startswith(f"{NAMESPACE}  ") and "deployment/plane-beat-worker-wl" in line]
        assert "held" in line and "PodDisruptionBudget plane-beat allows 0 disruptions now (1 healthy, 1 wanted)" in line

        control_plane.request("PATCH", f"{path}/plane-beat/status", {"status": dict(status, disruptionsAllowed=1, currentHealthy=2)},
                              content_type="application/merge-patch+json")
        found = results(restart(account, "-n", NAMESPACE, "--dry-run", "-o", "json"))
        assert found["plane-beat-worker-wl"]["result"] == "would restart"
    finally:
        control_plane.request("DELETE", f"{path}/plane-beat")


def test_restart_replaces_exactly_the_plane_workloads_with_guarded_pods_and_a_second_run_does_nothing(control_plane, installed, account,
                                                                                                      kubelet):
    old = {p["metadata"]["name"] for p in pods(control_plane, NAMESPACE)}
    web_version = deployments(control_plane, NAMESPACE)[WEB]["metadata"]["resourceVersion"]
    done = restart(account, "-n", NAMESPACE, "--yes", "--parallel", "2")
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[1]: line for line in done.stdout.splitlines() if line.startswith(NAMESPACE)}
    assert set(rows) == {f"deployment/{name}" for name in PLANE}
    assert all("  restarted  " in row and "1 new pod(s) guarded" in row for row in rows.values()), rows
    assert "restarted 3 of 3 workload(s)" in done.stdout

    found = deployments(control_plane, NAMESPACE)
    assert all(RESTARTED_AT in found[name]["spec"]["template"]["metadata"]["annotations"] for name in PLANE)
    assert found[WEB]["metadata"]["resourceVersion"] == web_version
    now = pods(control_plane, NAMESPACE)
    new = [p for p in now if p["metadata"]["name"] not in old]
    assert len(new) == len(PLANE) and {p["metadata"]["name"] for p in now} & old == {
        p["metadata"]["name"] for p in now if p["metadata"]["name"].startswith(WEB)}
    for pod in new:
        assert conventions.STATUS_ANNOTATION in pod["metadata"]["annotations"]
        assert [c["name"] for c in pod["spec"]["initContainers"]] == [conventions.RUNTIME_INIT_CONTAINER]
        assert mutate_pod(pod, installed.policy).patch == []

    before = versions(control_plane, NAMESPACE)
    again = restart(account, "-n", NAMESPACE, "--yes")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to restart" in again.stdout
    time.sleep(0.5)
    assert versions(control_plane, NAMESPACE) == before


@pytest.fixture
def unreachable_later(control_plane, installed):
    """Makes the webhook unreachable on demand (its configurations pointed at a closed port, as
    when its pods are gone); the installed configurations are applied again afterwards."""
    def cut(namespace: str = DOWN) -> None:
        closed = f"https://127.0.0.1:{free_port()}"
        for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
            path = f"{API}/{resource}/{conventions.MUTATING_WEBHOOK_CONFIGURATION}"
            hooks = control_plane.request("GET", path)["webhooks"]
            ops = [{"op": "replace", "path": f"/webhooks/{i}/clientConfig/url", "value": closed + "/" + h["clientConfig"]["url"].split("/", 3)[3]}
                   for i, h in enumerate(hooks)]
            control_plane.request("PATCH", path, ops, content_type="application/json-patch+json")
        # Until the API server has the change, a pod created now would still be guarded.
        probe = plane.pod(PLANE["plane-worker-wl"], "probe", namespace)
        wait_until("the API server calls the closed port", lambda: conventions.STATUS_ANNOTATION not in control_plane.request(
            "POST", f"/api/v1/namespaces/{namespace}/pods", probe, query={"dryRun": "All"})["metadata"].get("annotations", {}), timeout=20)

    yield cut
    configurations = [d for d in installed.documents if d["kind"] in install.WEBHOOK_KINDS]
    control_plane.kubectl("apply", "-f", "-", input=install.stream(configurations))


def test_when_the_webhook_becomes_unreachable_restart_reports_the_unguarded_pods_and_stops(control_plane, account, kubelet,
                                                                                          unreachable_later):
    plane_before_opt_in(control_plane, DOWN)
    cut = []

    def before_ready(pod: dict) -> None:
        # The first restarted pod was guarded; before it is ready (so before restart goes on to
        # the next workload) the webhook goes away.
        if not cut and pod["metadata"]["namespace"] == DOWN and RESTARTED_AT in pod["metadata"].get("annotations", {}):
            assert conventions.STATUS_ANNOTATION in pod["metadata"]["annotations"]
            unreachable_later()
            cut.append(pod["metadata"]["name"])

    kubelet.before_ready = before_ready
    result = restart(account, "-n", DOWN, "--yes", "-o", "json")
    assert result.returncode == 1, result.stdout + result.stderr
    assert cut
    found = results(result)
    assert {name: w["result"] for name, w in found.items()} == {
        "plane-api-wl": "restarted", "plane-beat-worker-wl": "failed", "plane-worker-wl": "not started"}
    failed = found["plane-beat-worker-wl"]
    assert failed["detail"].startswith("1 new pod(s) not guarded (") and "the webhook did not change them" in failed["detail"]
    assert [p["state"] for p in failed["pods"]] == ["unguarded"]
    assert json.loads(result.stdout)["undone"] == [f"{DOWN}/deployment/plane-beat-worker-wl", f"{DOWN}/deployment/plane-worker-wl"]
    assert RESTARTED_AT not in deployments(control_plane, DOWN)["plane-worker-wl"]["spec"]["template"]["metadata"].get("annotations", {})


def test_while_the_webhook_cannot_be_reached_restart_refuses_and_changes_nothing(control_plane, account, kubelet, unreachable_later):
    plane_before_opt_in(control_plane, REFUSED)
    unreachable_later(REFUSED)
    before = versions(control_plane, REFUSED)
    result = restart(account, "-n", REFUSED, "--yes")
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    refused = result.stdout.split("refused to restart: these checks fail, so new pods would start unguarded too; fix them first:\n", 1)[1]
    assert refused.startswith("- mutate.plane-guard.io (MutatingWebhookConfiguration plane-guard): URL https://127.0.0.1:")
    assert "not reachable from here: Connection refused" in refused and "nothing restarted" in refused
    time.sleep(0.5)
    assert versions(control_plane, REFUSED) == before
