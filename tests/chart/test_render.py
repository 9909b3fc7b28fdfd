"""``helm lint`` and ``helm template`` of the chart, for the default values and every
``ci/*-values.yaml``, each output valid against the strict Kubernetes schemas (kubernetes-validate,
as tests/install does for kustomize). cert-manager and prometheus-operator kinds have no schema
there: they get a structural check of the fields the chart relies on."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml

from tests.chart.support import CHART, CI_VALUES, FILES, NAMESPACE, RELEASE, helm, is_hook, only, template
from tests.install.test_schemas import VERSIONS

#: (name, values files): the default values, then each ci file.
RENDERS = [("default", ()), *((path.name, (path,)) for path in CI_VALUES)]
FOREIGN_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")


def test_the_ci_values_cover_each_way_to_install() -> None:
    assert {path.name for path in CI_VALUES} == {
        "self-signed-values.yaml", "cert-manager-values.yaml", "existing-secret-values.yaml", "audit-values.yaml",
        "monitoring-values.yaml", "restart-rbac-values.yaml",
    }


@pytest.mark.parametrize(("name", "values"), RENDERS, ids=[name for name, _ in RENDERS])
def test_helm_lint_passes(name: str, values: tuple) -> None:
    args = [arg for path in values for arg in ("--values", str(path))]
    done = helm("lint", str(CHART), "--strict", "--namespace", NAMESPACE, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout


def test_helm_lint_can_fail(tmp_path) -> None:
    """The lint above means something: a template that does not parse fails it."""
    broken = tmp_path / "plane-guard"
    done = helm("create", str(broken))
    assert done.returncode == 0, done.stderr
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.nothing.here }\n")
    done = helm("lint", str(broken))
    assert done.returncode != 0 and "broken.yaml" in done.stdout + done.stderr


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("name", "values"), RENDERS, ids=[name for name, _ in RENDERS])
def test_every_rendered_object_validates_strictly(name: str, values: tuple, version: str) -> None:
    docs = template(*values)
    assert len(docs) >= 9, f"{name} renders only {len(docs)} objects"
    for doc in docs:
        if doc["apiVersion"].startswith(FOREIGN_GROUPS):
            continue  # test_foreign_kinds_are_well_formed
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version}: "
                        f"{error.message} at {list(error.path)}")


def test_only_the_expected_kinds_escape_the_schemas() -> None:
    foreign = {(d["apiVersion"], d["kind"]) for _, values in RENDERS for d in template(*values) if d["apiVersion"].startswith(FOREIGN_GROUPS)}
    assert foreign == {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate"),
                       ("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}


def test_foreign_kinds_are_well_formed() -> None:
    """Structural: the fields the chart sets, where cert-manager and prometheus-operator want them."""
    docs = template(CHART / "ci" / "cert-manager-values.yaml") + template(CHART / "ci" / "monitoring-values.yaml")
    by_kind = {d["kind"]: d for d in docs if d["apiVersion"].startswith(FOREIGN_GROUPS)}
    for doc in by_kind.values():
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"] == NAMESPACE
    certificate = by_kind["Certificate"]["spec"]
    assert certificate["secretName"] == "plane-guard-tls"
    assert certificate["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": by_kind["Issuer"]["metadata"]["name"]}
    assert "plane-guard.plane-guard.svc" in certificate["dnsNames"]
    monitor = by_kind["ServiceMonitor"]["spec"]
    service = only(template(CHART / "ci" / "monitoring-values.yaml"), "Service")
    assert set(monitor["selector"]["matchLabels"].items()) <= set(service["metadata"]["labels"].items())
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["serverName"] == f"{service['metadata']['name']}.{NAMESPACE}.svc"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "plane-guard-tls", "key": "ca.crt"}
    assert by_kind["ServiceMonitor"]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = by_kind["PrometheusRule"]["spec"]["groups"]
    assert groups and all(g["name"] and g["rules"] for g in groups)
    assert all(("alert" in r) != ("record" in r) and r["expr"] for g in groups for r in g["rules"])


def test_nothing_is_rendered_that_the_values_did_not_ask_for() -> None:
    kinds = {d["kind"] for d in template()}
    assert not kinds & {"Namespace", "Certificate", "Issuer", "ServiceMonitor", "PrometheusRule"}
    assert [d["metadata"]["name"] for d in template() if d["kind"] == "ConfigMap"] == ["plane-guard-policy"]
    assert [d["metadata"]["name"] for d in template() if d["kind"] == "ServiceAccount"] == ["plane-guard"]
    existing = template(CHART / "ci" / "existing-secret-values.yaml")
    assert not {d["kind"] for d in existing} & {"Job", "CronJob", "Role", "ClusterRole", "Certificate"}


def test_the_only_hook_is_the_helm_test_pod() -> None:
    hooks = [d for d in template() if is_hook(d)]
    assert [(d["kind"], d["metadata"]["annotations"]["helm.sh/hook"]) for d in hooks] == [("Pod", "test")]


def test_the_grafana_dashboard_configmap_carries_the_sidecar_label() -> None:
    docs = template(CHART / "ci" / "monitoring-values.yaml")
    (dashboard,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "plane-guard"}
    (key,) = dashboard["data"]
    assert key.endswith(".json") and json.loads(dashboard["data"][key]) == json.loads((FILES / "dashboard.json").read_text())


def test_the_webhooks_follow_the_label_and_webhook_values() -> None:
    webhooks = only(template(CHART / "ci" / "monitoring-values.yaml"), "MutatingWebhookConfiguration")["webhooks"]
    keys = {e["key"] for w in webhooks for e in w["namespaceSelector"]["matchExpressions"] if e["operator"] == "In"}
    assert keys == {"example.com/plane-guard"}
    assert {w["failurePolicy"] for w in webhooks} == {"Fail"} and {w["timeoutSeconds"] for w in webhooks} == {10}


def test_yaml_of_the_render_is_plain() -> None:
    """No document renders empty or as a bare string (a template whose `if` left stray text)."""
    done = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--values", str(CHART / "ci" / "monitoring-values.yaml"))
    assert done.returncode == 0, done.stderr
    for doc in yaml.safe_load_all(done.stdout):
        assert doc is None or (isinstance(doc, dict) and doc.get("kind")), doc
