"""One source per rule: the chart renders the same objects as manifests/base plus an overlay.

Both are rendered by the real tools (helm template, kustomize) and compared object by object,
after taking out only what one of them adds by design: Helm's labels (chart version, release,
managed-by) and checksum annotations, kustomize's content hash on the policy ConfigMap's name,
the release revision on the chart's bootstrap Job, and the ``helm test`` pod. The Namespace is
rendered by the chart only with ``namespace.create`` (``helm install --create-namespace`` makes
it), and then it is kustomize's. ``restart.rbac.create`` adds what manifests/restart holds, the
rights of ``plane-guard restart``: the same comparison keeps the two from drifting.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.support import CHART, differences, normalised_chart, normalised_kustomize, template
from tests.install.conftest import render

RESTART_VALUES = CHART / "ci" / "restart-rbac-values.yaml"
PAIRS = [
    ("overlays/self-signed", ()),
    ("overlays/audit-only", (CHART / "ci" / "audit-values.yaml",)),
    ("overlays/cert-manager", (CHART / "ci" / "cert-manager-values.yaml",)),
    # The ci file for the default is the default: it renders the same.
    ("overlays/self-signed", (CHART / "ci" / "self-signed-values.yaml",)),
    # The defaults with restart.rbac.create: the overlay plus manifests/restart, applied beside it.
    ("overlays/self-signed+restart", (RESTART_VALUES,)),
]
NAMESPACE_KEY = ("Namespace", "plane-guard")
RESTART_KINDS = ("ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")


def kustomize(target: str) -> list[dict[str, Any]]:
    """The objects of one or more kustomize targets joined by ``+``, as applied one after the other."""
    return [doc for part in target.split("+") for doc in render(part)]


@pytest.mark.parametrize(("target", "values"), PAIRS, ids=[f"{t}:{v[0].name if v else 'defaults'}" for t, v in PAIRS])
def test_the_chart_renders_what_kustomize_renders(target: str, values: tuple) -> None:
    expected = normalised_kustomize(kustomize(target))
    found = normalised_chart(template(*values))
    assert set(found) == set(expected) - {NAMESPACE_KEY}, (
        f"only kustomize: {sorted(set(expected) - set(found) - {NAMESPACE_KEY})}, only the chart: {sorted(set(found) - set(expected))}"
    )
    for key in sorted(found):
        lines = differences(expected[key], found[key])
        assert not lines, f"{target} vs the chart, {key[0]}/{key[1]}:\n" + "\n".join(lines)


def test_namespace_create_renders_kustomizes_namespace() -> None:
    expected = normalised_kustomize(render("overlays/self-signed"))[NAMESPACE_KEY]
    found = normalised_chart(template(sets=("namespace.create=true",)))
    assert differences(expected, found[NAMESPACE_KEY]) == []


def test_the_comparison_sees_a_difference() -> None:
    """The comparison can fail: one changed value shows up as one line, at its path."""
    expected = normalised_kustomize(render("overlays/self-signed"))
    found = normalised_chart(template(sets=("replicas=3", "webhooks.timeoutSeconds=7")))
    assert differences(expected[("Deployment", "plane-guard")], found[("Deployment", "plane-guard")]) == [
        "/spec/replicas: kustomize 2 != chart 3"
    ]
    lines = differences(expected[("MutatingWebhookConfiguration", "plane-guard")], found[("MutatingWebhookConfiguration", "plane-guard")])
    assert lines == [f"/webhooks/{i}/timeoutSeconds: kustomize 5 != chart 7" for i in (0, 1)]


def test_the_normalisation_only_drops_what_helm_adds() -> None:
    """Names the normaliser drops are Helm's own; the rest of the metadata is compared."""
    chart = template()
    deployment = next(d for d in chart if d["kind"] == "Deployment")
    labels = deployment["metadata"]["labels"]
    assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["helm.sh/chart"] == "plane-guard-0.1.0"
    assert set(deployment["spec"]["template"]["metadata"]["annotations"]) == {"checksum/policy"}
    normalised = normalised_chart(chart)[("Deployment", "plane-guard")]
    assert "annotations" not in normalised["spec"]["template"]["metadata"]
    assert normalised["metadata"]["labels"] == {
        "app.kubernetes.io/name": "plane-guard", "app.kubernetes.io/part-of": "plane-guard",
        "app.kubernetes.io/component": "webhook", "app.kubernetes.io/version": "0.1.0",
    }


def test_the_restart_rbac_is_compared_object_by_object() -> None:
    """The pair above covers all five objects of manifests/restart, and only with the value set."""
    restart = {(d["kind"], d["metadata"]["name"]) for d in render("restart")}
    assert restart == {(kind, "plane-guard-restart") for kind in RESTART_KINDS}
    assert restart <= set(normalised_chart(template(RESTART_VALUES)))
    assert not restart & set(normalised_chart(template()))


def test_the_restart_comparison_sees_a_renamed_release() -> None:
    """The comparison can fail for the restart rights too: under another name the chart's roles
    name that release's objects, and the comparison says where."""
    expected = normalised_kustomize(render("restart"))
    found = normalised_chart(template(RESTART_VALUES, sets=("fullnameOverride=pg",)))
    lines = differences(expected[("ClusterRole", "plane-guard-restart")], found[("ClusterRole", "pg-restart")])
    assert lines == ["/metadata/name: kustomize 'plane-guard-restart' != chart 'pg-restart'",
                     "/rules/5/resourceNames/0: kustomize 'plane-guard' != chart 'pg'"]
    lines = differences(expected[("Role", "plane-guard-restart")], found[("Role", "pg-restart")])
    assert lines == ["/metadata/name: kustomize 'plane-guard-restart' != chart 'pg-restart'",
                     "/rules/1/resourceNames/0: kustomize 'plane-guard' != chart 'pg'"]
