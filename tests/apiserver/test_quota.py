"""A ResourceQuota on ``limits.cpu`` and ``limits.memory``, and no LimitRange to fill defaults in.

The API server's quota admission then refuses any pod with a container, init containers
included, that sets no such limit. plane-guard adds an init container to every Plane pod it
changes; it carries the policy's requests and limits (``runtime.resources``), so the guarded pod
is accepted. The same pod with the init container's CPU limit removed is refused.
"""

from __future__ import annotations

import copy
import time

import pytest
from kubernetes.client.exceptions import ApiException

from tests.apiserver import plane
from tests.apiserver.stored import create
from webhook.core import conventions
from webhook.core.mutation import apply_patch, mutate_pod

GUARDED = "plane-quota"
NOT_OPTED_IN = "plane-quota-off"
QUOTA = {
    "apiVersion": "v1",
    "kind": "ResourceQuota",
    "metadata": {"name": "compute"},
    "spec": {"hard": {"limits.cpu": "4", "limits.memory": "8Gi", "requests.cpu": "2", "requests.memory": "4Gi"}},
}


@pytest.fixture(scope="module")
def quota_namespaces(control_plane, installed):
    """Both namespaces with the quota, once the ResourceQuota controller has computed it (until
    then the API server refuses every pod there: "status unknown for quota")."""
    if not control_plane.with_controller_manager:
        pytest.skip("needs kube-controller-manager in KUBEBUILDER_ASSETS: its ResourceQuota controller enforces the quota")
    for name, labels in ((GUARDED, {conventions.INJECT: "enabled"}), (NOT_OPTED_IN, None)):
        control_plane.create_namespace(name, labels)
        control_plane.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", plane.service_account())
        control_plane.request("POST", f"/api/v1/namespaces/{name}/resourcequotas", QUOTA)
    deadline = time.monotonic() + 30
    for name in (GUARDED, NOT_OPTED_IN):
        while not control_plane.request("GET", f"/api/v1/namespaces/{name}/resourcequotas/compute").get("status", {}).get("hard"):
            assert time.monotonic() < deadline, f"the ResourceQuota controller did not compute the quota of {name}"
            time.sleep(0.1)


def _refusal(control_plane, namespace: str, body: dict) -> str | None:
    """The API server's refusal of a (dry-run) creation, or None when it accepts the pod."""
    try:
        control_plane.request("POST", f"/api/v1/namespaces/{namespace}/pods", body, query={"dryRun": "All"})
        return None
    except ApiException as refused:
        assert refused.status == 403, refused.body
        return refused.body


def test_a_plane_pod_guarded_by_the_real_webhook_passes_a_limits_quota(control_plane, installed, quota_namespaces):
    body = plane.pod(plane.plane_template("ee", "api"), "ee-api-under-quota")
    stored = create(control_plane, GUARDED, body)
    assert conventions.STATUS_ANNOTATION in stored["metadata"]["annotations"]
    (init,) = stored["spec"]["initContainers"]
    assert init["name"] == conventions.RUNTIME_INIT_CONTAINER
    assert init["resources"] == installed.policy.runtime.resources.model_dump()
    assert {"cpu", "memory"} <= init["resources"]["limits"].keys()
    # The quota was in force: the pod is charged to it.
    quota = control_plane.request("GET", f"/api/v1/namespaces/{GUARDED}/resourcequotas/compute")
    assert quota["status"]["used"]["limits.cpu"] != "0", quota["status"]


def test_without_a_cpu_limit_on_the_init_container_the_quota_refuses_the_pod(control_plane, installed, quota_namespaces):
    """The pod as plane-guard makes it, created where no webhook runs: accepted as it is, refused
    once the init container's CPU limit is taken away."""
    body = plane.pod(plane.plane_template("ee", "worker"), "ee-worker-under-quota")
    guarded = apply_patch(body, mutate_pod(body, installed.policy).patch)
    assert _refusal(control_plane, NOT_OPTED_IN, guarded) is None

    without_cpu_limit = copy.deepcopy(guarded)
    del without_cpu_limit["spec"]["initContainers"][0]["resources"]["limits"]["cpu"]
    refusal = _refusal(control_plane, NOT_OPTED_IN, without_cpu_limit)
    assert refusal is not None, "the quota admitted an init container without a CPU limit"
    assert "failed quota: compute" in refusal
    assert f"must specify limits.cpu for: {conventions.RUNTIME_INIT_CONTAINER}" in refusal
