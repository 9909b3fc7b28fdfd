"""Another webhook after plane-guard, plane-guard down, and the validating webhook's answer.

What is expected is computed at test time from the policy (``mutate_pod``, ``validate_pod``),
never written down, so these tests follow the mutation and the rules as they change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.apiserver import install, plane
from tests.apiserver.cluster import free_port
from tests.apiserver.compare import differences
from tests.apiserver.sidecar_webhook import SIDECAR, VARIABLE, SidecarWebhook
from tests.apiserver.stored import ENABLED, audit_annotations, create, read, reference
from tests.server.harness import WebhookProcess, metric_samples
from webhook.core import conventions
from webhook.core.admission import short_warning
from webhook.core.mutation import mutate_pod
from webhook.core.policy import load_policy
from webhook.core.validation import validate_pod

NAMESPACE = "plane-reinvoke"
ROUND = "mutation.webhook.admission.k8s.io/round_{}_index_{}"
API = "/apis/admissionregistration.k8s.io/v1"


@pytest.fixture(scope="module")
def sidecar_injector(control_plane, installed):
    """The second webhook, for one namespace, sorted after plane-guard's configuration."""
    with SidecarWebhook() as webhook:
        configuration = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "zz-log-shipper"},
            "webhooks": [{
                "name": "inject.log-shipper.example.com",
                "clientConfig": {"url": webhook.url, "caBundle": webhook.ca_bundle},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
                "reinvocationPolicy": "Never", "timeoutSeconds": 5,
            }],
        }
        control_plane.request("POST", f"{API}/mutatingwebhookconfigurations", configuration)
        control_plane.create_namespace(NAMESPACE, {conventions.INJECT: "enabled"})
        control_plane.request("POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts", plane.service_account())
        try:
            yield webhook
        finally:
            control_plane.request("DELETE", f"{API}/mutatingwebhookconfigurations/zz-log-shipper")


@pytest.mark.parametrize("chart,role", [("ee", "api"), ("ce", "worker")])
def test_a_later_webhook_gets_plane_guard_reinvoked_without_doubling_anything(control_plane, installed, sidecar_injector, chart, role):
    name = f"{chart}-{role}-with-sidecar"
    reviews = sidecar_injector.reviews
    stored = create(control_plane, NAMESPACE, plane.pod(plane.plane_template(chart, role), name))
    assert sidecar_injector.reviews == reviews + 1

    runtime = conventions.RUNTIME_INIT_CONTAINER
    assert [c["name"] for c in stored["spec"].get("initContainers", [])] == [runtime]
    assert [v["name"] for v in stored["spec"]["volumes"]].count(conventions.RUNTIME_VOLUME) == 1
    plane_container, sidecar = stored["spec"]["containers"]
    wrapper = f"{installed.policy.runtime.mount_path}/{conventions.RUNTIME_ENTRYPOINT}"
    assert json.dumps(plane_container.get("command", []) + plane_container.get("args", [])).count(wrapper) == 1
    assert sidecar["name"] == SIDECAR["name"] and "initContainers" not in sidecar
    assert all(VARIABLE in c["env"] for c in stored["spec"]["containers"][:1])
    # Stored guarded: plane-guard has nothing left to change, the sidecar's additions included.
    assert mutate_pod(stored, installed.policy).patch == []

    # The server re-invoked plane-guard after the later webhook changed the pod.
    annotations = audit_annotations(control_plane, NAMESPACE, name)
    rounds = [json.loads(annotations[k]) for k in sorted(annotations) if k.startswith("mutation.webhook.admission.k8s.io/round_")]
    assert [(r["webhook"], r["mutated"]) for r in rounds] == [
        ("mutate.plane-guard.io", True), ("inject.log-shipper.example.com", True), ("mutate.plane-guard.io", False),
    ]


@pytest.fixture
def plane_guard_restarted(installed):
    """Whatever the test does to the server, it runs again afterwards."""
    try:
        yield installed.server
    finally:
        if installed.server.process.poll() is not None:
            installed.server.start()


def test_with_plane_guard_stopped_pods_start_unchanged_and_guarded_once_it_is_back(control_plane, installed, plane_guard_restarted):
    body = plane.pod(plane.plane_template("ee", "worker"), "ee-worker-while-down")
    installed.server.stop()
    created = control_plane.kubectl("-n", ENABLED, "create", "-f", "-", input=json.dumps(body))
    stored = read(control_plane, ENABLED, "ee-worker-while-down")
    assert differences(reference(control_plane, body), stored) == []
    assert "Warning" not in created.stderr
    annotations = audit_annotations(control_plane, ENABLED, "ee-worker-while-down")
    assert annotations.get("failed-open.mutation.webhook.admission.k8s.io/round_0_index_0") == "mutate.plane-guard.io"
    assert annotations.get("failed-open.validating.webhook.admission.k8s.io/round_0_index_0") == "validate.plane-guard.io"

    installed.server.start()
    back = create(control_plane, ENABLED, plane.pod(plane.plane_template("ee", "worker"), "ee-worker-after-restart"))
    assert conventions.STATUS_ANNOTATION in back["metadata"]["annotations"]
    assert mutate_pod(back, installed.policy).patch == []


@pytest.fixture
def validator_for(control_plane, installed, tmp_path):
    """A plane-guard whose policy sets the notMutated rule, answering the validating webhook,
    while the mutating webhook's calls fail (nothing listens at its URL): as if only the
    mutating call was lost. The configurations are applied again afterwards."""
    servers = []

    def start(action: str) -> tuple[WebhookProcess, object]:
        policy = yaml.safe_load(installed.policy_file.read_text())
        policy["validation"]["rules"]["notMutated"] = action
        path = tmp_path / f"policy-{action}.yaml"
        path.write_text(yaml.safe_dump(policy))
        certs = Path(installed.server.ca_file).parent
        server = WebhookProcess(certs, tmp_path / f"{action}.log", "--policy", str(path)).start()
        servers.append(server)
        for resource, url in (("mutatingwebhookconfigurations", f"https://127.0.0.1:{free_port()}/mutate"),
                              ("validatingwebhookconfigurations", f"https://127.0.0.1:{server.port}/validate")):
            path_ = f"{API}/{resource}/plane-guard"
            (hook,) = [i for i, h in enumerate(control_plane.request("GET", path_)["webhooks"]) if "audit" not in h["name"]]
            control_plane.request("PATCH", path_, [{"op": "replace", "path": f"/webhooks/{hook}/clientConfig/url", "value": url}],
                                  content_type="application/json-patch+json")
        return server, load_policy(path)

    try:
        yield start
    finally:
        configurations = [d for d in installed.documents if d["kind"] in install.WEBHOOK_KINDS]
        control_plane.kubectl("apply", "-f", "-", input=install.stream(configurations))
        for server in servers:
            server.stop()


@pytest.mark.parametrize("action", ["warn", "deny", "audit"])
def test_the_validating_webhook_answers_an_unguarded_plane_pod_as_the_policy_says(control_plane, validator_for, action):
    server, policy = validator_for(action)
    name = f"ee-worker-unguarded-{action}"
    body = plane.pod(plane.plane_template("ee", "worker"), name)
    verdict = validate_pod(reference(control_plane, body), policy)
    assert any(f.rule == "notMutated" and f.action == action for f in verdict.findings)

    created = control_plane.kubectl("-n", ENABLED, "create", "-f", "-", input=json.dumps(body), check=False)
    printed = [line.removeprefix("Warning: ") for line in created.stderr.splitlines() if line.startswith("Warning: ")]
    assert printed == [short_warning(w) for w in verdict.warnings()]
    if verdict.allowed:
        assert created.returncode == 0, created.stderr
        annotations = audit_annotations(control_plane, ENABLED, name)
        recorded = {k.split("/", 1)[1]: v for k, v in annotations.items() if k.startswith("validate.plane-guard.io/")}
        assert recorded == verdict.audit_annotations()
    else:
        assert created.returncode != 0
        assert verdict.deny_message() in created.stderr
        assert control_plane.kubectl("-n", ENABLED, "get", "pod", name, check=False).returncode != 0

    status, text = server.client().get("/metrics")
    assert status == 200
    counted = metric_samples(text.decode(), "plane_guard_admission_requests_total")
    assert counted == {f'decision="{verdict.decision}",mode="enforce",webhook="validate"': 1.0}
