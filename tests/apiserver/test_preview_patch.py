"""``plane-guard preview --patch`` on a Deployment is the webhook's patch for the pods the real API
server creates from it.

The same Plane-shaped Deployment goes into a namespace that is opted in and one that is not; the
ReplicaSet controller of a real kube-controller-manager creates the pods, after the ServiceAccount
admission plugin has added the token volume (unless the pod turns automount off). The pod of the
namespace that is not opted in is the pod as the API server had it before plane-guard: preview's
patch, applied to it with jsonpatch, must give the pod stored in the opted-in namespace, token
volume included. Nothing expected is written down: both sides come from the server.
"""

from __future__ import annotations

import copy
import time

import jsonpatch
import pytest
import yaml

from tests.apiserver import plane
from tests.apiserver.compare import TOKEN_VOLUME, TOKEN_VOLUME_PREFIX, token_mounts, token_volumes
from tests.apiserver.stored import reference
from tests.install.conftest import run_cli
from webhook.core import conventions
from webhook.core.mutation import mutate_pod

ON, OFF = "plane-preview-on", "plane-preview-off"


def _template(chart: str, role: str, automount: bool | None) -> dict:
    template = plane.plane_template(chart, role)
    if automount is not None:
        template["spec"]["automountServiceAccountToken"] = automount
    return template


#: Deployment name -> pod template: the chart's (no volumes, token mounted), and one without a token.
WORKLOADS = {
    "plane-api-wl": _template("ee", "api", None),
    "plane-worker-wl": _template("ce", "worker", False),
}


@pytest.fixture(scope="module")
def pods(control_plane, installed) -> dict[str, tuple[dict, dict]]:
    """Deployment name -> (its pod as stored unguarded, its pod as stored guarded)."""
    if not control_plane.with_controller_manager:
        pytest.skip("needs kube-controller-manager in KUBEBUILDER_ASSETS to turn Deployments into pods")
    documents = [plane.deployment(template, name) for name, template in WORKLOADS.items()]
    for namespace, label in ((ON, "enabled"), (OFF, None)):
        control_plane.create_namespace(namespace, {conventions.INJECT: label} if label else None)
        control_plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", plane.service_account())
        control_plane.kubectl("-n", namespace, "apply", "-f", "-", input=yaml.safe_dump_all(documents))
    return {name: (_one_pod(control_plane, OFF, name), _one_pod(control_plane, ON, name)) for name in WORKLOADS}


def _one_pod(control_plane, namespace: str, deployment: str, timeout: float = 60) -> dict:
    selector = "app.name=" + WORKLOADS[deployment]["metadata"]["labels"]["app.name"]
    deadline = time.monotonic() + timeout
    while True:
        found = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector})
        if found["items"]:
            (pod,) = found["items"]
            return pod
        assert time.monotonic() < deadline, f"no pod for {namespace}/{deployment} after {timeout} s"
        time.sleep(0.2)


def _previewed(installed) -> dict[str, dict]:
    """``plane-guard preview --patch`` as a user runs it on the rendered manifests (ServiceAccount included)."""
    documents = [plane.service_account()] + [plane.deployment(template, name) for name, template in WORKLOADS.items()]
    policy = str(installed.policy_file)
    result = run_cli("preview", "-f", "-", "--patch", "-n", ON, "--policy", policy, input=yaml.safe_dump_all(documents))
    assert result.returncode == 0, result.stderr
    assert "--patch: each patch is the webhook's answer for a pod as the API server hands it over" in result.stderr
    return {entry["name"]: entry for entry in yaml.safe_load(result.stdout) if entry["kind"] == "Deployment"}


def _creatable(pod: dict) -> dict:
    """A stored pod as a body to create again: without what the server sets per object."""
    pod = copy.deepcopy(pod)
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "namespace"):
        pod["metadata"].pop(key, None)
    pod.pop("status", None)
    return pod


def _same_pod(pod: dict) -> dict:
    """The pod without what the server makes up per object: names, uids, times, the token's random suffix.
    Order is kept: the patch must put things where the webhook's does."""
    pod = copy.deepcopy(pod)
    metadata = pod["metadata"]
    for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        metadata.pop(key, None)
    for owner in metadata.get("ownerReferences", []):
        owner.pop("uid", None)
    spec = pod["spec"]
    for volume in spec.get("volumes", []):
        if volume["name"].startswith(TOKEN_VOLUME_PREFIX):
            volume["name"] = TOKEN_VOLUME
    for container in spec.get("initContainers", []) + spec["containers"]:
        for mount in container.get("volumeMounts", []):
            if mount["name"].startswith(TOKEN_VOLUME_PREFIX):
                mount["name"] = TOKEN_VOLUME
    for key in ("status", "kind", "apiVersion"):  # items of a list read carry no kind
        pod.pop(key, None)
    return pod


@pytest.mark.parametrize("name", WORKLOADS)
def test_preview_patch_applied_to_the_unguarded_pod_gives_the_guarded_pod(control_plane, pods, installed, name):
    unguarded, guarded = pods[name]
    entry = _previewed(installed)[name]
    assert conventions.STATUS_ANNOTATION in guarded["metadata"]["annotations"]
    # The webhook's own patch for that pod, computed by the same core.
    assert entry["patch"] == mutate_pod(unguarded, installed.policy).patch
    applied = jsonpatch.apply_patch(unguarded, entry["patch"])
    # As the server stores it (its defaults filled into what the patch added): the guarded pod.
    stored = reference(control_plane, _creatable(applied))
    assert jsonpatch.make_patch(_same_pod(guarded), _same_pod(stored)).patch == []
    # The token the API server gave the pod (or not) is kept as it was, with its mounts.
    assert token_volumes(applied) == token_volumes(unguarded) == token_volumes(guarded)
    assert token_mounts(applied) == token_mounts(guarded)


def test_with_the_token_the_patch_appends_and_a_template_patch_would_drop_it(pods, installed):
    unguarded, guarded = pods["plane-api-wl"]
    entry = _previewed(installed)["plane-api-wl"]
    assert "ServiceAccount plane-preview-on/plane-srv-account in the input" in entry["appliesTo"]
    assert len(token_volumes(unguarded)) == 1 and len(token_volumes(guarded)) == 1
    assert set(token_mounts(jsonpatch.apply_patch(unguarded, entry["patch"])).values()) == {1}
    assert {"op": "add", "path": "/spec/volumes/-"} in [{"op": o["op"], "path": o["path"]} for o in entry["patch"]]
    # What the patch of the template as written (no volumes) does to the real pod: the token is gone.
    template_patch = mutate_pod(WORKLOADS["plane-api-wl"], installed.policy, workload="plane-api-wl").patch
    assert token_volumes(jsonpatch.apply_patch(unguarded, template_patch)) == []


def test_without_automount_the_pod_has_no_token_and_the_patch_says_so(pods, installed):
    unguarded, guarded = pods["plane-worker-wl"]
    entry = _previewed(installed)["plane-worker-wl"]
    said = "without a ServiceAccount token volume (the pod sets automountServiceAccountToken: false)"
    assert said in entry["appliesTo"]
    assert "volumes" not in unguarded["spec"] and token_volumes(guarded) == []
    assert any(o["op"] == "add" and o["path"] == "/spec/volumes" for o in entry["patch"])
