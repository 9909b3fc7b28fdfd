"""manifests/examples: stock Plane workloads in an opted-in namespace, as plane-guard sees them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.install.conftest import MANIFESTS, render, run_cli
from tests.install.test_webhooks import admitted, called_for, namespace_labels
from webhook.core import conventions

EXAMPLES = MANIFESTS / "examples"
WORKLOADS = {
    "plane-api.yaml": ("plane-api-wl", "plane-plane-api", "plane-api", "./bin/docker-entrypoint-api-ee.sh"),
    "plane-worker.yaml": ("plane-worker-wl", "plane-plane-worker", "plane-worker", "./bin/docker-entrypoint-worker.sh"),
    "plane-beat-worker.yaml": ("plane-beat-worker-wl", "plane-plane-beat-worker", "plane-beat-worker", "./bin/docker-entrypoint-beat.sh"),
}


def deployments() -> list[dict[str, Any]]:
    return [d for d in render("examples") if d["kind"] == "Deployment"]


def test_namespace_is_opted_in() -> None:
    (namespace,) = [d for d in render("examples") if d["kind"] == "Namespace"]
    assert namespace["metadata"]["name"] == "plane"
    assert namespace["metadata"]["labels"][conventions.INJECT] == "enabled"
    assert "enabled" in conventions.NAMESPACE_MODES


@pytest.mark.parametrize("filename", sorted(WORKLOADS))
def test_workloads_have_the_stock_chart_shape(filename: str) -> None:
    name, app_label, container_name, command = WORKLOADS[filename]
    (doc,) = yaml.safe_load_all((EXAMPLES / filename).read_text())
    assert doc["metadata"] == {"name": name, "namespace": "plane"}
    template = doc["spec"]["template"]
    assert template["metadata"]["labels"] == {"app.name": app_label}
    assert "timestamp" in template["metadata"]["annotations"]
    spec = template["spec"]
    assert spec["serviceAccountName"] == "plane-srv-account"
    (container,) = spec["containers"]
    assert container["name"] == container_name
    assert container["image"] == "makeplane/backend-commercial:v2.6.3"
    assert container["command"] == [command] and "args" not in container
    assert container["stdin"] is True and container["tty"] is True
    assert "env" not in container  # AMQP_URL only through the Secret, as the chart does
    assert container["envFrom"] == [{"configMapRef": {"name": "plane-app-vars"}},
                                    {"secretRef": {"name": "plane-app-secrets"}}]


def test_example_pods_reach_the_enforcing_webhooks() -> None:
    namespace = namespace_labels("plane", "enabled")
    for deployment in deployments():
        template = deployment["spec"]["template"]
        assert called_for(namespace, template["metadata"].get("labels", {})) == {
            "mutate.plane-guard.io", "validate.plane-guard.io"}
        assert admitted({"apiVersion": "v1", "kind": "Pod", **template})


@pytest.mark.parametrize("filename", sorted(WORKLOADS))
def test_preview_mutates_each_example(filename: str) -> None:
    result = run_cli("preview", "-f", str(EXAMPLES / filename))
    assert result.returncode == 0, result.stderr
    (mutated,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    spec = mutated["spec"]["template"]["spec"]
    assert conventions.RUNTIME_INIT_CONTAINER in [c["name"] for c in spec.get("initContainers", [])]
    assert conventions.STATUS_ANNOTATION in mutated["spec"]["template"]["metadata"]["annotations"]


def test_preview_of_the_rendered_kustomization(tmp_path) -> None:
    """`kubectl kustomize manifests/examples | plane-guard preview -f -`, as the README shows."""
    rendered = yaml.safe_dump_all(render("examples"))
    result = run_cli("preview", "-f", "-", input=rendered)
    assert result.returncode == 0, result.stderr
    mutated = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment"]
    assert len(mutated) == len(WORKLOADS)
    for doc in mutated:
        init = doc["spec"]["template"]["spec"].get("initContainers", [])
        assert conventions.RUNTIME_INIT_CONTAINER in [c["name"] for c in init], doc["metadata"]["name"]
