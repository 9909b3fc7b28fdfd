"""Install for real: every object of every kustomization, checked by the API server itself."""

from __future__ import annotations

import re
import time

import pytest
from kubernetes.client.exceptions import ApiException

from tests.apiserver import install
from tests.install.conftest import INSTALLABLE, REPO, render
from webhook.core import conventions

TARGETS = ("base", *INSTALLABLE)


def _cert_manager_served(control_plane) -> bool:
    try:
        control_plane.request("GET", "/apis/cert-manager.io/v1")
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def _dry_run(control_plane, documents: list[dict]):
    return control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=install.stream(documents), check=False)


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_is_accepted_by_a_server_side_dry_run(control_plane, installed, target):
    documents = render(target)
    skipped = []
    if not _cert_manager_served(control_plane):
        skipped = [f"{d['kind']}/{d['metadata']['name']}" for d in documents if install.needs_cert_manager(d)]
        documents = [d for d in documents if not install.needs_cert_manager(d)]
    assert sorted(skipped) == (["Certificate/plane-guard", "Issuer/plane-guard-selfsigned"] if "cert-manager" in target else [])
    result = _dry_run(control_plane, documents)
    assert result.returncode == 0, result.stderr
    accepted = [line for line in result.stdout.splitlines() if line.endswith("(server dry run)")]
    assert len(accepted) == len(documents), result.stdout
    kinds = {d["kind"] for d in documents}
    assert {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "PodDisruptionBudget", "Deployment"} <= kinds
    if target != "overlays/cert-manager":
        assert {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} <= kinds


def test_the_dry_run_compiles_the_match_conditions(control_plane, installed):
    """The same dry run refuses a matchCondition that is not valid CEL: the server compiled it."""
    (config,) = [d for d in render("base") if d["kind"] == "MutatingWebhookConfiguration"]
    config["webhooks"][0]["matchConditions"][0]["expression"] += " &&"
    result = _dry_run(control_plane, [config])
    assert result.returncode != 0
    assert "matchConditions[0].expression" in result.stderr and "compilation failed" in result.stderr


def test_the_webhook_pods_are_admitted_under_the_restricted_pod_security_profile(control_plane, installed):
    if not control_plane.with_controller_manager:
        pytest.skip("needs kube-controller-manager in KUBEBUILDER_ASSETS: the ReplicaSet controller creates the pods")
    (deployment,) = [d for d in installed.documents if d["kind"] == "Deployment"]
    namespace = deployment["metadata"]["namespace"]
    (ns,) = [d for d in installed.documents if d["kind"] == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    deadline = time.monotonic() + 30
    while True:
        pods = control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods", query={"labelSelector": selector})["items"]
        if len(pods) >= deployment["spec"]["replicas"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(pods) == deployment["spec"]["replicas"], _events(control_plane, namespace)
    # The webhook's own pods get no API token (the server never calls the API).
    assert all(not any(v["name"].startswith("kube-api-access-") for v in p["spec"]["volumes"]) for p in pods)


def _events(control_plane, namespace: str) -> list[str]:
    return [e.get("message", "") for e in control_plane.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]]


def test_the_readme_install_section_names_what_was_applied(installed):
    """Every kind the tests applied from overlays/self-signed is in the README's install section."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Install in a cluster"):readme.index("## Opt a namespace in")]
    assert "kubectl apply -k manifests/overlays/self-signed" in section
    words = {
        "Role": "RBAC", "RoleBinding": "RBAC", "ClusterRole": "RBAC", "ClusterRoleBinding": "RBAC",
        "Namespace": f"namespace `{conventions.SERVICE_NAMESPACE}`", "ConfigMap": "policy ConfigMap",
    }
    for document in installed.documents:
        word = words.get(document["kind"], document["kind"])
        assert word in section, f"README's install section does not mention the {document['kind']} that is installed"
    (deployment,) = [d for d in installed.documents if d["kind"] == "Deployment"]
    assert re.search(rf"Deployment of {deployment['spec']['replicas']} replicas", section)
