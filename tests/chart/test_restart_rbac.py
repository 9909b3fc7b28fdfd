"""``restart.rbac.create``: the rights of ``plane-guard restart`` in the chart. Off by default,
named after the release's own objects (its Service and webhook configurations), and never
granted to the webhook's ServiceAccount. That they hold what manifests/restart holds is
test_same_as_kustomize.py's job."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.chart.support import CHART, RELEASE, only, template

RESTART_VALUES = CHART / "ci" / "restart-rbac-values.yaml"
KINDS = ("ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")
#: What restart may do to Plane and the webhook: a role with any of these is restart's.
WORKLOADS = {"pods", "deployments", "statefulsets", "daemonsets", "replicasets"}


def restart_objects(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The objects the template adds, by kind (one of each)."""
    found = [d for d in docs if (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "restart"]
    by_kind = {d["kind"]: d for d in found}
    assert len(by_kind) == len(found), [f"{d['kind']}/{d['metadata']['name']}" for d in found]
    return by_kind


def test_off_by_default() -> None:
    assert yaml.safe_load((CHART / "values.yaml").read_text())["restart"] == {"rbac": {"create": False}}
    assert restart_objects(template()) == {}
    assert not [d for d in template() if d["metadata"]["name"].endswith("-restart")]


@pytest.mark.parametrize(
    ("release", "sets", "name"),
    [(RELEASE, (), "plane-guard"), ("ops", (), "ops-plane-guard"), (RELEASE, ("fullnameOverride=guard",), "guard")],
    ids=["plane-guard", "other-release", "fullnameOverride"],
)
def test_the_names_follow_the_chart_s_objects(release: str, sets: tuple[str, ...], name: str) -> None:
    """resourceNames, roleRefs and subjects name what this release renders, in its namespace."""
    namespace = "guard-system"
    docs = template(RESTART_VALUES, release=release, namespace=namespace, sets=sets)
    service, mutating, validating = (only(docs, kind)["metadata"]["name"]
                                     for kind in ("Service", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"))
    assert service == mutating == validating == name
    objects = restart_objects(docs)
    assert sorted(objects) == sorted(KINDS)
    assert {d["metadata"]["name"] for d in objects.values()} == {f"{name}-restart"}
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        assert objects[kind]["metadata"]["namespace"] == namespace, kind
    (configurations,) = [r for r in objects["ClusterRole"]["rules"] if r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert set(configurations["resources"]) == {"mutatingwebhookconfigurations", "validatingwebhookconfigurations"}
    assert configurations["resourceNames"] == [mutating] and configurations["verbs"] == ["get"]
    (services,) = [r for r in objects["Role"]["rules"] if "services" in r["resources"]]
    assert services["resourceNames"] == [service] and services["verbs"] == ["get"]
    account = {"kind": "ServiceAccount", "name": f"{name}-restart", "namespace": namespace}
    for kind, role in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        assert objects[kind]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role, "name": f"{name}-restart"}
        assert objects[kind]["subjects"] == [account]


@pytest.mark.parametrize("sets", [(), ("certificates.source=certManager",)], ids=["self-signed", "cert-manager"])
def test_the_webhook_s_own_account_gets_none_of_it(sets: tuple[str, ...]) -> None:
    """Every binding of the render that names the webhook's ServiceAccount (the Deployment's, which
    the certificate Jobs share) refers to a role that touches no pod or workload."""
    docs = template(RESTART_VALUES, sets=sets)
    webhook = only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    account = restart_objects(docs)["ServiceAccount"]["metadata"]["name"]
    assert webhook != account
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    bindings = [d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    assert len(bindings) == (4 if not sets else 2)
    for binding in bindings:
        names = {s["name"] for s in binding["subjects"] if s["kind"] == "ServiceAccount"}
        role = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        touches = {r for rule in role["rules"] for r in rule["resources"]} & WORKLOADS
        if webhook in names:
            assert not touches, f"{binding['kind']}/{binding['metadata']['name']} gives {webhook} {sorted(touches)}"
            assert binding["roleRef"]["name"] != account
        else:
            assert names == {account}, binding["metadata"]["name"]
    # What the check above looks for is there: restart's ClusterRole patches workloads.
    assert {r for rule in roles[("ClusterRole", account)]["rules"] for r in rule["resources"]} & WORKLOADS
