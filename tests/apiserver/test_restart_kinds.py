"""``plane-guard restart`` on StatefulSets and DaemonSets, on the real API server.

test_restart.py proves it on Deployments. These two kinds roll out otherwise (a StatefulSet
replaces its pods one ordinal at a time under the same names, a DaemonSet one node at a time) and
report their rollouts in other status fields, so the same proof is made for each: Plane runs
before its namespace is opted in, ``restart`` replaces exactly the Plane workload, its new pods are
guarded, and a second run changes nothing.

The session's kube-controller-manager runs the StatefulSet and DaemonSet controllers among its
own (cluster.CONTROLLERS). The DaemonSet controller makes one pod per Node, so two Nodes are
registered, with no kubelet behind them; ``kubelet.Readiness`` reports the pods ready, as for the Deployments.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.apiserver import plane, test_restart
from tests.apiserver.kubelet import Readiness
from tests.apiserver.test_restart import ACCOUNT, restart, results, wait_until
from webhook import __version__
from webhook.core import conventions
from webhook.core.mutation import mutate_pod
from webhook.ops.restart import RESTARTED_AT

STATEFUL = "plane-restart-sts"
DAEMON = "plane-restart-ds"
PARTITIONED = "plane-restart-partition"
NODES = ("plane-guard-node-a", "plane-guard-node-b")
PATHS = {"StatefulSet": "/apis/apps/v1/namespaces/{}/statefulsets", "DaemonSet": "/apis/apps/v1/namespaces/{}/daemonsets"}
RESTARTER = f"system:serviceaccount:{conventions.SERVICE_NAMESPACE}:{ACCOUNT}"
#: Seconds a rollout of a few pods may take on a loaded two-core machine.
ROLLOUT = 120

# The restart account of test_restart.py: manifests/restart applied, a kubeconfig with its token.
account = test_restart.account


@pytest.fixture(scope="module")
def workload_controllers(control_plane):
    if not control_plane.with_controller_manager:
        pytest.skip("needs kube-controller-manager in KUBEBUILDER_ASSETS: its StatefulSet and DaemonSet controllers do the rollouts")


@pytest.fixture(scope="module")
def nodes(control_plane, workload_controllers):
    """Two Nodes as a kubelet and the node lifecycle controller leave them: Ready, and without
    the taint node.kubernetes.io/not-ready:NoSchedule the API server puts on every new Node. No
    node lifecycle controller runs here to take it off, and while it is on, the DaemonSet
    controller places no pod on the Node. Deleted after the module."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "reported by the test",
             "lastHeartbeatTime": now, "lastTransitionTime": now}
    for name in NODES:
        control_plane.request("POST", "/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})
        control_plane.request("PATCH", f"/api/v1/nodes/{name}/status", {"status": {"conditions": [ready]}},
                              content_type="application/merge-patch+json")
        control_plane.request("PATCH", f"/api/v1/nodes/{name}", {"spec": {"taints": None}}, content_type="application/merge-patch+json")
    try:
        yield NODES
    finally:
        for name in NODES:
            try:
                control_plane.request("DELETE", f"/api/v1/nodes/{name}")
            except ApiException as error:
                if error.status != 404:
                    raise


@pytest.fixture
def kubelet(control_plane):
    """Readiness for the namespaces of this module."""
    readiness = Readiness(control_plane, [STATEFUL, DAEMON, PARTITIONED]).start()
    yield readiness
    readiness.stop()


def stateful_set(template: dict, name: str, replicas: int, partition: int | None = None) -> dict:
    body = plane.deployment(template, name, replicas)
    body["kind"] = "StatefulSet"
    body["spec"]["serviceName"] = name
    if partition is not None:
        body["spec"]["updateStrategy"] = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}
    return body


def daemon_set(template: dict, name: str) -> dict:
    body = plane.deployment(template, name)
    body["kind"] = "DaemonSet"
    del body["spec"]["replicas"]
    return body


def workload(control_plane, kind: str, namespace: str, name: str) -> dict:
    return control_plane.request("GET", f"{PATHS[kind].format(namespace)}/{name}")


def settled(kind: str, found: dict) -> bool:
    """The rollout is over, every pod of the current template and available (the test's own
    reading of the status, stricter than ``kubectl rollout status``, not restart's)."""
    status = found.get("status", {})
    if status.get("observedGeneration", 0) < found["metadata"]["generation"]:
        return False
    if kind == "StatefulSet":
        wanted = found["spec"]["replicas"]
        return (status.get("currentRevision") == status.get("updateRevision")
                and status.get("updatedReplicas") == wanted == status.get("availableReplicas") == status.get("replicas"))
    wanted = len(NODES)
    return (status.get("desiredNumberScheduled") == wanted == status.get("currentNumberScheduled")
            and status.get("updatedNumberScheduled") == wanted == status.get("numberAvailable"))


def pods_of(control_plane, kind: str, namespace: str, name: str) -> list[dict]:
    """The live pods whose controller is this workload."""
    found = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
    return [p for p in found if not p["metadata"].get("deletionTimestamp") and any(
        o.get("controller") and (o["kind"], o["name"]) == (kind, name) for o in p["metadata"].get("ownerReferences", []))]


def versions(control_plane, namespace: str) -> dict[str, str]:
    """Every object a restart of these kinds could touch, by kind and name: its resourceVersion."""
    found = {}
    for path, kind in ((PATHS["StatefulSet"].format(namespace), "statefulset"), (PATHS["DaemonSet"].format(namespace), "daemonset"),
                       (f"/apis/apps/v1/namespaces/{namespace}/controllerrevisions", "controllerrevision"),
                       (f"/api/v1/namespaces/{namespace}/pods", "pod")):
        for item in control_plane.request("GET", path)["items"]:
            found[f"{kind}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return found


def patches_by_restart(control_plane, namespace: str) -> list[tuple[str, str]]:
    """(resource, name) of every patch the restart account made in this namespace, from the audit log."""
    return [(e["objectRef"]["resource"], e["objectRef"]["name"]) for e in control_plane.audit_events(
        lambda e: e.get("verb") == "patch" and e.get("user", {}).get("username") == RESTARTER
        and e.get("objectRef", {}).get("namespace") == namespace)]


def before_opt_in(control_plane, namespace: str, kind: str, documents: list[dict]) -> None:
    """Workloads running in a namespace that is not opted in, every rollout over; then the label."""
    control_plane.create_namespace(namespace)
    control_plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", plane.service_account())
    for document in documents:
        control_plane.request("POST", PATHS[kind].format(namespace), document)
    names = [d["metadata"]["name"] for d in documents]
    wait_until(f"{namespace}: every {kind} rolled out", lambda: all(settled(kind, workload(control_plane, kind, namespace, n)) for n in names),
               timeout=ROLLOUT)
    found = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]
    assert found and not [p for p in found if conventions.STATUS_ANNOTATION in p["metadata"].get("annotations", {})]
    control_plane.request("PATCH", f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {conventions.INJECT: "enabled"}}},
                          content_type="application/merge-patch+json")


def target_node(pod: dict[str, Any]) -> str:
    """The Node the DaemonSet controller made this pod for (its node affinity; no scheduler binds it)."""
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    (field,) = [f for term in terms for f in term.get("matchFields", []) if f["key"] == "metadata.name"]
    (name,) = field["values"]
    return name


def restarts_exactly_the_plane_workload(control_plane, installed, account, kind: str, namespace: str, name: str, other: str,
                                        count: int) -> list[dict]:
    """Runs restart twice in ``namespace``: the first replaces the ``count`` pods of the Plane
    workload ``name`` and no pod of ``other``, the second changes nothing. The new pods."""
    old = {p["metadata"]["uid"] for p in pods_of(control_plane, kind, namespace, name)}
    kept = {p["metadata"]["uid"] for p in pods_of(control_plane, kind, namespace, other)}
    other_version = workload(control_plane, kind, namespace, other)["metadata"]["resourceVersion"]
    assert len(old) == count and kept
    assert patches_by_restart(control_plane, namespace) == []

    began = dt.datetime.now(dt.UTC)
    done = restart(account, "-n", namespace, "--yes", "--timeout", str(ROLLOUT), "-o", "json")
    ended = dt.datetime.now(dt.UTC)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert (report["guarded"], report["undone"], report["dryRun"]) == (True, [], False)
    (step,) = report["workloads"]
    assert (step["namespace"], step["kind"], step["name"], step["result"]) == (namespace, kind, name, "restarted"), step
    assert step["before"] == {"unguarded": count, "stale": 0}
    assert step["detail"].startswith(f"{count} new pod(s) guarded: ")

    # One patch, of the Plane workload's template; a finished rollout; the other workload untouched.
    assert patches_by_restart(control_plane, namespace) == [(f"{kind.lower()}s", name)]
    restarted = workload(control_plane, kind, namespace, name)
    stamp = restarted["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert began <= dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC) <= ended
    assert settled(kind, restarted), restarted["status"]
    assert workload(control_plane, kind, namespace, other)["metadata"]["resourceVersion"] == other_version
    assert {p["metadata"]["uid"] for p in pods_of(control_plane, kind, namespace, other)} == kept

    # Every pod of the Plane workload is new, of the restarted template, and guarded by the running policy.
    new = pods_of(control_plane, kind, namespace, name)
    assert len(new) == count and not {p["metadata"]["uid"] for p in new} & old
    assert sorted(p["name"] for p in step["pods"]) == sorted(p["metadata"]["name"] for p in new)
    assert {p["state"] for p in step["pods"]} == {"guarded"}
    for pod in new:
        annotations = pod["metadata"]["annotations"]
        assert annotations[RESTARTED_AT] == stamp
        record = json.loads(annotations[conventions.STATUS_ANNOTATION])
        assert (record["policy"], record["version"]) == (installed.policy.digest, __version__)
        assert [c["name"] for c in pod["spec"]["initContainers"]] == [conventions.RUNTIME_INIT_CONTAINER]
        assert mutate_pod(pod, installed.policy).patch == []

    before = versions(control_plane, namespace)
    again = restart(account, "-n", namespace, "--yes", "--timeout", str(ROLLOUT))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to restart" in again.stdout
    assert patches_by_restart(control_plane, namespace) == [(f"{kind.lower()}s", name)]
    time.sleep(1)  # what a change would have set off (a new revision, pods) has had time to show
    assert versions(control_plane, namespace) == before
    return new


def test_restart_replaces_a_plane_stateful_set_s_pods_with_guarded_ones_and_a_second_run_does_nothing(
        control_plane, installed, account, kubelet, workload_controllers):
    """Two ordinals: the new pods keep the old pods' names, so they are told apart by uid."""
    worker, web = "plane-worker-sts", "plane-web-sts"
    before_opt_in(control_plane, STATEFUL, "StatefulSet",
                  [stateful_set(plane.plane_template("ee", "worker"), worker, 2), stateful_set(plane.web_template(), web, 1)])
    new = restarts_exactly_the_plane_workload(control_plane, installed, account, "StatefulSet", STATEFUL, worker, web, 2)
    revision = workload(control_plane, "StatefulSet", STATEFUL, worker)["status"]["updateRevision"]
    assert sorted(p["metadata"]["name"] for p in new) == [f"{worker}-0", f"{worker}-1"]
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in new} == {revision}


def test_restart_replaces_a_plane_daemon_set_s_pods_with_guarded_ones_and_a_second_run_does_nothing(
        control_plane, installed, account, kubelet, nodes):
    """One pod per Node: after the restart, each Node has one new, guarded pod."""
    api, web = "plane-api-ds", "plane-web-ds"
    before_opt_in(control_plane, DAEMON, "DaemonSet", [daemon_set(plane.plane_template("ee", "api"), api), daemon_set(plane.web_template(), web)])
    new = restarts_exactly_the_plane_workload(control_plane, installed, account, "DaemonSet", DAEMON, api, web, len(nodes))
    generation = workload(control_plane, "DaemonSet", DAEMON, api)["metadata"]["generation"]
    assert {p["metadata"]["labels"]["pod-template-generation"] for p in new} == {str(generation)}
    assert sorted(target_node(p) for p in new) == sorted(nodes)


def test_a_stateful_set_with_a_partition_is_held_and_left_as_it_is(control_plane, account, kubelet, workload_controllers):
    """A partition keeps the ordinals below it on their old template: a restart would leave
    those pods unguarded and then blame the webhook for them, so it is held, with the reason."""
    worker = "plane-worker-sts"
    before_opt_in(control_plane, PARTITIONED, "StatefulSet", [stateful_set(plane.plane_template("ee", "worker"), worker, 2, partition=1)])
    before = versions(control_plane, PARTITIONED)
    result = restart(account, "-n", PARTITIONED, "--yes", "--timeout", str(ROLLOUT), "-o", "json")
    print(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    found = results(result)
    assert {n: w["result"] for n, w in found.items()} == {worker: "held"}
    assert found[worker]["detail"].startswith("its updateStrategy has partition 1: "), found[worker]["detail"]
    assert patches_by_restart(control_plane, PARTITIONED) == []
    assert RESTARTED_AT not in workload(control_plane, "StatefulSet", PARTITIONED, worker)["spec"]["template"]["metadata"]["annotations"]
    time.sleep(1)  # what a change would have set off has had time to show
    assert versions(control_plane, PARTITIONED) == before
