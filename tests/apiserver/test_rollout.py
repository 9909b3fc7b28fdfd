"""The user's real path: Plane already runs, the namespace is labelled, the workloads restart.

The pods are created by the ReplicaSet controller of a real kube-controller-manager, after the
ServiceAccount admission plugin has added the projected token volume, as in a real cluster.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.apiserver import plane
from tests.apiserver.compare import token_volumes
from webhook.core import conventions
from webhook.core.mutation import mutate_pod

NAMESPACE = "plane-rollout"
WORKLOADS = {
    "plane-api-wl": plane.plane_template("ee", "api"),
    "plane-worker-wl": plane.plane_template("ee", "worker"),
    "plane-beat-worker-wl": plane.plane_template("ee", "beat"),
    "plane-web-wl": plane.web_template(),
}
PLANE_WORKLOADS = [name for name in WORKLOADS if name != "plane-web-wl"]
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def pods_by_workload(control_plane) -> dict[str, list[dict]]:
    pods = control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    found: dict[str, list[dict]] = {name: [] for name in WORKLOADS}
    for pod in pods:
        owner = pod["metadata"]["ownerReferences"][0]["name"]  # <deployment>-<template hash>
        found[owner.rsplit("-", 1)[0]].append(pod)
    return found


def wait_for_pods(control_plane, count: int, timeout: float = 60) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout
    while True:
        found = pods_by_workload(control_plane)
        if all(len(pods) >= count for pods in found.values()) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_rollout_restart_after_labelling_guards_the_new_pods_only(control_plane, installed):
    if not control_plane.with_controller_manager:
        pytest.skip("needs kube-controller-manager in KUBEBUILDER_ASSETS (setup-envtest does not ship it)")
    control_plane.create_namespace(NAMESPACE)
    documents = [plane.service_account()] + [plane.deployment(t, name) for name, t in WORKLOADS.items()]
    control_plane.kubectl("-n", NAMESPACE, "apply", "-f", "-", input="\n".join(json.dumps(d) for d in documents))
    before = wait_for_pods(control_plane, 1)
    assert all(len(pods) == 1 for pods in before.values()), before
    old = {name: pods[0]["metadata"]["name"] for name, pods in before.items()}

    # The README's commands: opt the namespace in, restart the backend workloads.
    control_plane.kubectl("label", "namespace", NAMESPACE, f"{conventions.INJECT}=enabled", "--overwrite")
    control_plane.kubectl("-n", NAMESPACE, "rollout", "restart", "deployment", *WORKLOADS)
    # No kubelet: the old pods never become unready, so each Deployment surges by one pod and stops.
    after = wait_for_pods(control_plane, 2)

    generated = {}  # workload -> (old pod's generateName, new pod's)
    for name, pods in after.items():
        assert len(pods) == 2, (name, [p["metadata"]["name"] for p in pods])
        (previous,) = [p for p in pods if p["metadata"]["name"] == old[name]]
        (new,) = [p for p in pods if p["metadata"]["name"] != old[name]]
        generated[name] = (previous["metadata"]["generateName"], new["metadata"]["generateName"])
        assert RESTARTED_AT in new["metadata"]["annotations"] and RESTARTED_AT not in previous["metadata"]["annotations"]
        for pod in (previous, new):
            assert pod["spec"]["serviceAccountName"] == plane.SERVICE_ACCOUNT
            assert len(token_volumes(pod)) == 1 and token_volumes(pod)[0]["projected"]["sources"]
        assert conventions.STATUS_ANNOTATION not in previous["metadata"]["annotations"]
        if name in PLANE_WORKLOADS:
            # Old: plane-guard would change it. New: stored guarded, nothing left to change.
            assert mutate_pod(previous, installed.policy).patch != []
            assert conventions.STATUS_ANNOTATION in new["metadata"]["annotations"]
            assert mutate_pod(new, installed.policy).patch == []
        else:
            assert conventions.STATUS_ANNOTATION not in new["metadata"]["annotations"]
            assert "initContainers" not in new["spec"]

    # plane-guard was called for the new ReplicaSets' Plane pods only (pods of a ReplicaSet
    # have no name yet when admitted: the log names them by generateName).
    seen = {d["pod"] for d in installed.server.decisions() if d.get("namespace") == NAMESPACE and d["webhook"] == "mutate"}
    assert seen == {generated[name][1] for name in PLANE_WORKLOADS}
