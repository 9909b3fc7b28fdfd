"""One source per rule: the chart renders the same objects as manifests/base plus an overlay.

Both are rendered by the real tools (helm template, kustomize) and compared object by object,
after taking out only what one of them adds by design: Helm's labels (chart version, release,
managed-by) and checksum annotations, kustomize's content hash on the policy ConfigMap's name,
the release revision on the chart's bootstrap Job, and the ``helm test`` pod. The Namespace is
rendered by the chart only with ``namespace.create`` (``helm install --create-namespace`` makes
it), and then it is kustomize's.
"""

from __future__ import annotations

import pytest

from tests.chart.support import CHART, differences, normalised_chart, normalised_kustomize, template
from tests.install.conftest import render

PAIRS = [
    ("overlays/self-signed", ()),
    ("overlays/audit-only", (CHART / "ci" / "audit-values.yaml",)),
    ("overlays/cert-manager", (CHART / "ci" / "cert-manager-values.yaml",)),
    # The ci file for the default is the default: it renders the same.
    ("overlays/self-signed", (CHART / "ci" / "self-signed-values.yaml",)),
]
NAMESPACE_KEY = ("Namespace", "plane-guard")


@pytest.mark.parametrize(("target", "values"), PAIRS, ids=[f"{t}:{v[0].name if v else 'defaults'}" for t, v in PAIRS])
def test_the_chart_renders_what_kustomize_renders(target: str, values: tuple) -> None:
    expected = normalised_kustomize(render(target))
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
