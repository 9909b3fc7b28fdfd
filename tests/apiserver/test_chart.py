"""The Helm chart on the real API server: its default render installed with server-side apply,
and a Plane pod in an opted-in namespace mutated through it.

The chart is rendered by the real helm for release ``chart`` in namespace ``plane-guard-chart``
(objects named ``chart-plane-guard``), so it sits beside the kustomize install of the other tests
without touching it. As there, the only change to the render is in the two webhook
configurations, sent to a local ``plane-guard serve`` (``tests/apiserver/install.py``); that
server reads the policy of the chart's ConfigMap. The namespace is made as
``helm install --create-namespace`` makes it, with the Pod Security labels the README asks for,
warnings included, so the API server judges every pod template of the chart against
``restricted``. The webhook configurations are deleted afterwards.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import time

import pytest
import yaml

from tests.apiserver import install, plane
from tests.apiserver.compare import differences
from tests.apiserver.stored import create, decisions_for
from tests.chart.support import CHART, helm, is_hook, policy_text, template
from tests.install.conftest import PLANE_GUARD, run_cli
from tests.server.harness import ROOT
from webhook.core import conventions
from webhook.core.mutation import mutate_pod
from webhook.core.policy import load_policy
from webhook.ops import certs

pytestmark = pytest.mark.helm

RELEASE, NAMESPACE = "chart", "plane-guard-chart"
NAME = "chart-plane-guard"
ENABLED, OFF = "plane-chart-enabled", "plane-chart-off"
MANAGER = "plane-guard-chart-test"
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}


@pytest.fixture(scope="module")
def chart(control_plane, tmp_path_factory):
    work = tmp_path_factory.mktemp("chart")
    rendered = template(release=RELEASE, namespace=NAMESPACE)
    documents = [d for d in rendered if not is_hook(d)]
    policy_file = work / "policy.yaml"
    policy_file.write_text(policy_text(documents))
    with install.local_webhook(work, documents, policy_file, days=2) as local:
        try:
            control_plane.create_namespace(NAMESPACE, RESTRICTED)
            result = control_plane.kubectl("apply", "--server-side", f"--field-manager={MANAGER}", "-f", "-",
                                           input=install.stream(local.documents))
            for name, labels in ((ENABLED, {conventions.INJECT: "enabled"}), (OFF, None)):
                control_plane.create_namespace(name, labels)
                control_plane.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts", plane.service_account())
            yield {"documents": local.documents, "hooks": [d for d in rendered if is_hook(d)], "result": result,
                   "server": local.server, "policy_file": policy_file}
        finally:
            for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
                control_plane.kubectl("delete", kind, NAME, "--ignore-not-found", check=False)


def test_every_object_of_the_default_render_is_applied_server_side(control_plane, chart):
    lines = chart["result"].stdout.splitlines()
    assert len(lines) == len(chart["documents"]) and all(line.endswith(" serverside-applied") for line in lines), lines
    kinds = {d["kind"] for d in chart["documents"]}
    assert {"Deployment", "Job", "CronJob", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ClusterRole"} <= kinds
    stored = control_plane.request("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{NAME}")
    assert {m["manager"] for m in stored["metadata"]["managedFields"]} >= {MANAGER}
    assert stored["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]


def test_no_pod_template_of_the_chart_breaks_the_restricted_profile(control_plane, chart):
    """The namespace warns about restricted: the API server judged the Deployment, Job and
    CronJob templates and said nothing. The ``helm test`` pod is created under enforce."""
    assert "PodSecurity" not in chart["result"].stderr and "would violate" not in chart["result"].stderr, chart["result"].stderr
    (test_pod,) = chart["hooks"]
    created = control_plane.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", test_pod)
    assert created["metadata"]["name"] == f"{NAME}-test"
    # The check can fail: a privileged container is refused in the same namespace.
    bad = json.loads(json.dumps(test_pod))
    bad["metadata"] = {"name": "not-restricted"}
    bad["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(Exception, match="violates PodSecurity"):
        control_plane.request("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", bad)


def test_the_controllers_create_the_charts_pods(control_plane, chart):
    if not control_plane.with_controller_manager:
        pytest.skip("needs kube-controller-manager in KUBEBUILDER_ASSETS: the ReplicaSet and Job controllers create the pods")
    (deployment,) = [d for d in chart["documents"] if d["kind"] == "Deployment"]
    deadline = time.monotonic() + 30
    while True:
        pods = control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
        webhook = [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/component") == "webhook"]
        certs = [p for p in pods if p["metadata"]["labels"].get("app.kubernetes.io/component") == "certs"]
        if (len(webhook) >= deployment["spec"]["replicas"] and certs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(webhook) == deployment["spec"]["replicas"] and len(certs) == 1
    assert all(not any(v["name"].startswith("kube-api-access-") for v in p["spec"]["volumes"]) for p in webhook)
    (policy_volume,) = [v for v in webhook[0]["spec"]["volumes"] if v["name"] == "policy"]
    assert policy_volume["configMap"]["name"] == f"{NAME}-policy"


def test_a_plane_pod_is_mutated_through_the_chart(control_plane, chart):
    template_ = plane.plane_template("ee", "api")
    body = plane.pod(template_, "ee-api-chart")
    predicted = run_cli("preview", "-f", "-", "--policy", str(chart["policy_file"]), input=yaml.safe_dump(body))
    assert predicted.returncode == 0, predicted.stderr
    expected_body = yaml.safe_load(predicted.stdout)
    stored = create(control_plane, ENABLED, body)
    expected = _reference(control_plane, expected_body)
    assert differences(expected, stored) == []
    unguarded = _reference(control_plane, body)
    assert differences(unguarded, stored) != [] and conventions.STATUS_ANNOTATION in stored["metadata"]["annotations"]
    assert mutate_pod(stored, load_policy(chart["policy_file"])).patch == []
    calls = decisions_for(chart["server"], ENABLED, "ee-api-chart")
    assert ("mutate", "patched") in {(d["webhook"], d["decision"]) for d in calls}, calls


def test_a_namespace_that_did_not_opt_in_is_left_alone(control_plane, chart):
    body = plane.pod(plane.plane_template("ce", "worker"), "ce-worker-chart-off")
    stored = create(control_plane, OFF, body)
    assert differences(_reference(control_plane, body), stored) == []
    assert decisions_for(chart["server"], OFF, "ce-worker-chart-off") == []


def _reference(control_plane, body: dict) -> dict:
    """The pod as stored without any webhook: a dry run in the namespace that did not opt in."""
    body = dict(body, metadata={**body["metadata"], "name": body["metadata"]["name"] + "-reference"})
    return create(control_plane, OFF, body, dryRun="All")


def test_the_bootstrap_job_works_under_the_charts_rbac(control_plane, chart, tmp_path):
    """The bootstrap Job's own command line, run as the chart's ServiceAccount (a TokenRequest
    token): the chart's Role and ClusterRole let it write its Secret and both caBundles."""
    (job,) = [d for d in chart["documents"] if d["kind"] == "Job"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:1] == ["plane-guard"]
    token = control_plane.kubectl("-n", NAMESPACE, "create", "token", pod["serviceAccountName"], "--duration=10m").stdout.strip()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(control_plane.kubeconfig_for(token, namespace=NAMESPACE)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env["KUBECONFIG"] = str(kubeconfig)
    done = subprocess.run([PLANE_GUARD, *container["command"][1:], *container["args"]], capture_output=True, text=True,
                          timeout=60, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert dict(part.split("=", 1) for part in done.stdout.split() if "=" in part) == {
        "mutating-webhook": "updated", "validating-webhook": "updated", "secret": "created"}
    secret = control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{NAME}-tls")
    data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert certs.secret_problem(data, NAME, NAMESPACE, dt.timedelta(days=30)) is None
    for resource in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        for hook in control_plane.request("GET", f"/apis/admissionregistration.k8s.io/v1/{resource}/{NAME}")["webhooks"]:
            assert data["ca.crt"].strip() in base64.b64decode(hook["clientConfig"]["caBundle"])
    # The webhook still answers: the CA of the local server stays in the bundle next to the new one.
    body = plane.pod(plane.plane_template("ce", "beat"), "ce-beat-chart-after-bootstrap")
    stored = create(control_plane, ENABLED, body)
    assert conventions.STATUS_ANNOTATION in stored["metadata"]["annotations"]


def test_notes_print_the_opt_in_label_and_status(control_plane):
    """``helm install --dry-run=client`` against this server (it checks that nothing it would
    create exists yet: another release name) prints the notes."""
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)}
    done = helm("install", "notes", str(CHART), "--namespace", "plane-guard-notes", "--dry-run=client", env=env)
    assert done.returncode == 0, done.stderr
    notes = done.stdout[done.stdout.index("NOTES:"):]
    assert f"kubectl label namespace plane {conventions.INJECT}=audit" in notes
    assert f"kubectl label namespace plane {conventions.INJECT}=enabled --overwrite" in notes
    assert "plane-guard status" in notes and "helm test notes -n plane-guard-notes" in notes
    assert "kubectl -n plane-guard-notes rollout status deployment/notes-plane-guard" in notes
    assert "kubectl label namespace plane-guard-notes pod-security.kubernetes.io/enforce=restricted" in notes


def test_the_charts_restart_rights_are_accepted_and_go_to_the_restart_account_only(control_plane, chart):
    """``restart.rbac.create``: the API server takes the chart's restart objects, and its
    authorizer gives the restart account the rollout rights and the webhook's account none."""
    rbac = [d for d in template(CHART / "ci" / "restart-rbac-values.yaml", release=RELEASE, namespace=NAMESPACE)
            if d["metadata"]["name"] == f"{NAME}-restart"]
    assert {d["kind"] for d in rbac} == {"ServiceAccount", "ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"}
    result = control_plane.kubectl("apply", "--server-side", f"--field-manager={MANAGER}", "-f", "-", input=install.stream(rbac))
    assert result.stdout.count("serverside-applied") == len(rbac), result.stdout

    def can(account: str, verb: str, resource: str, namespace: str = ENABLED) -> str:
        user = f"system:serviceaccount:{NAMESPACE}:{account}"
        return control_plane.kubectl("auth", "can-i", verb, resource, "-n", namespace, f"--as={user}", check=False).stdout.strip()

    for resource in ("deployments.apps", "statefulsets.apps", "daemonsets.apps"):
        assert (can(NAME, "patch", resource), can(f"{NAME}-restart", "patch", resource)) == ("no", "yes"), resource
    assert can(f"{NAME}-restart", "get", "services", NAMESPACE) == "no"  # only the chart's own Service, by name
    assert control_plane.kubectl("auth", "can-i", "get", f"services/{NAME}", "-n", NAMESPACE,
                                 f"--as=system:serviceaccount:{NAMESPACE}:{NAME}-restart", check=False).stdout.strip() == "yes"
    assert can(f"{NAME}-restart", "get", "secrets", NAMESPACE) == "no"
    assert can(f"{NAME}-restart", "delete", "pods") == "no"
