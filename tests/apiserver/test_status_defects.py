"""``plane-guard status`` cannot be fooled, and says what it can, on the real API server.

Each test is one defect that was found by trying status on a real cluster:

- a pod that is not Plane's, with a forged or broken ``plane-guard.io/status`` annotation, was
  listed (and called stale);
- an unchanged Plane pod carrying a copied, current annotation was called guarded;
- annotation values and commands were printed raw: 200 KB lines, newlines that forged a
  "nothing needs attention" line, escape codes that cleared the screen;
- without read access to the TLS Secret there was no report at all;
- webhooks called by ``url:`` were never checked.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException

from tests.apiserver import plane, stored
from tests.apiserver.cluster import free_port
from tests.install.conftest import PLANE_GUARD, REPO
from webhook.core import conventions
from webhook.ops import certs

HOSTILE = "plane-status-hostile"
HOSTILE_AUDIT = "plane-status-hostile-audit"
API = "/apis/admissionregistration.k8s.io/v1"
READER = "plane-guard-status-reader"
PROBE = "plane-guard-status-url-probe"
ESCAPES = "\x1b[2J\x1b[H\x1b]0;owned\x07"
#: What a value with newlines could make the table say.
FORGED_LINE = "nothing needs attention"
BUSYBOX_ANNOTATIONS = {
    "busybox-bad-json": "{not json",
    "busybox-list": "[1,2]",
    "busybox-huge": "x" * 200_000,
    "busybox-future": json.dumps({"version": "99.0.0", "policy": "000000000000"}),
}


def busybox(name: str, annotation: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {conventions.STATUS_ANNOTATION: annotation}},
            "spec": {"containers": [{"name": "busybox", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}


def plane_pod(name: str, annotation: str | None = None, command: list[str] | None = None) -> dict:
    body = plane.pod(plane.plane_template("ee", "worker"), name)
    if annotation is not None:
        body["metadata"]["annotations"][conventions.STATUS_ANNOTATION] = annotation
    if command is not None:
        body["spec"]["containers"][0]["command"] = command
    return body


def create_unlabelled(control_plane, namespace: str, *bodies: dict) -> None:
    """Pods created while the namespace is not opted in (the webhook never sees them)."""
    control_plane.create_namespace(namespace)
    control_plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", plane.service_account())
    for body in bodies:
        control_plane.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)


def label(control_plane, namespace: str, mode: str) -> None:
    control_plane.request("PATCH", f"/api/v1/namespaces/{namespace}", {"metadata": {"labels": {conventions.INJECT: mode}}},
                          content_type="application/merge-patch+json")


@pytest.fixture(scope="module")
def copied(control_plane, installed) -> str:
    """A current status annotation, as the webhook writes it on a Plane worker pod now; and the
    namespaces whose pods carry copies of it (and forged ones)."""
    guarded = stored.create(control_plane, stored.ENABLED, plane_pod("copy-source"), dryRun="All")
    annotation = guarded["metadata"]["annotations"][conventions.STATUS_ANNOTATION]
    hostile = json.dumps({"policy": ESCAPES + f"\n{FORGED_LINE}\n" + "A" * 200_000, "version": "0.1.0\r\n" + ESCAPES})
    create_unlabelled(
        control_plane, HOSTILE,
        *(busybox(name, value) for name, value in BUSYBOX_ANNOTATIONS.items()),
        busybox("busybox-copied", annotation),
        plane_pod("plane-copied", annotation),
        plane_pod("plane-hostile", hostile),
        plane_pod("plane-odd-command", command=["python", "-c", f"{ESCAPES}\n{FORGED_LINE}\n"]),
    )
    label(control_plane, HOSTILE, "enabled")
    create_unlabelled(control_plane, HOSTILE_AUDIT, plane_pod("plane-copied", annotation))
    label(control_plane, HOSTILE_AUDIT, "audit")
    return annotation


def status(control_plane, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE") and k != "KUBECONFIG"}
    return subprocess.run([PLANE_GUARD, "status", "--kubeconfig", str(kubeconfig or control_plane.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def pods_of(report: dict, namespace: str) -> dict[str, dict]:
    (found,) = [n for n in report["namespaces"] if n["name"] == namespace]
    return {p["name"]: p for w in found["workloads"] for p in w["pods"]}


def test_pods_that_are_not_plane_s_are_not_listed_whatever_their_annotation(control_plane, copied):
    result = status(control_plane, "-n", HOSTILE, "-o", "json")
    assert result.returncode == 1, result.stderr
    listed = pods_of(json.loads(result.stdout), HOSTILE)
    assert set(listed) == {"plane-copied", "plane-hostile", "plane-odd-command"}
    assert listed["plane-odd-command"]["state"] == "skipped"
    assert listed["plane-odd-command"]["detail"].startswith("no role: plane-worker: Plane backend image, command not recognised: ")


def test_an_unchanged_pod_with_a_copied_annotation_is_not_guarded(control_plane, installed, copied):
    assert json.loads(copied)["policy"] == installed.policy.digest  # the copy names the running policy
    enabled = pods_of(json.loads(status(control_plane, "-n", HOSTILE, "-o", "json").stdout), HOSTILE)["plane-copied"]
    assert enabled["state"] == "unguarded"
    assert "annotation names the running policy, but" in enabled["detail"] and "of plane-guard's changes missing" in enabled["detail"]
    assert "pod:runtime-init-container" in enabled["detail"] or "+" in enabled["detail"]
    audit = pods_of(json.loads(status(control_plane, "-n", HOSTILE_AUDIT, "-o", "json").stdout), HOSTILE_AUDIT)["plane-copied"]
    assert audit["state"] == "audited"


def test_hostile_values_cannot_break_the_table(control_plane, copied):
    result = status(control_plane, "-n", HOSTILE)
    print(result.stdout)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert len(result.stdout) < 8_000, len(result.stdout)
    assert max(len(line) for line in lines) <= 700
    assert not [c for c in result.stdout if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F]
    assert FORGED_LINE not in lines and lines.count("needs attention:") == 1
    (hostile,) = [line for line in lines if " plane-hostile " in line]
    assert " unguarded " in hostile and "\\x1b[2J" in hostile and "chars)" in hostile
    (odd,) = [line for line in lines if " plane-odd-command " in line]
    assert " skipped " in odd and "\\x1b]0;owned\\x07" in odd
    # JSON escapes by itself; the values are cut there too.
    listed = pods_of(json.loads(status(control_plane, "-n", HOSTILE, "-o", "json").stdout), HOSTILE)
    assert len(listed["plane-hostile"]["detail"]) < 600 and "\x1b" not in listed["plane-hostile"]["detail"]


@pytest.fixture
def reader(control_plane, copied, tmp_path):
    """An account with every read status needs but the Secret (a monitoring account, say)."""
    rules = [
        {"apiGroups": [""], "resources": ["namespaces", "pods", "services", "configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"], "verbs": ["get", "list"]},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["get", "list"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
        {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
         "verbs": ["get"]},
    ]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": READER}, "rules": rules}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": READER},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": READER},
               "subjects": [{"kind": "ServiceAccount", "name": READER, "namespace": HOSTILE}]}
    control_plane.request("POST", f"/api/v1/namespaces/{HOSTILE}/serviceaccounts", {"metadata": {"name": READER}})
    control_plane.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    control_plane.request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)
    try:
        token = control_plane.kubectl("-n", HOSTILE, "create", "token", READER, "--duration=10m").stdout.strip()
        path = tmp_path / "kubeconfig"
        path.write_text(json.dumps(control_plane.kubeconfig_for(token)))
        yield path
    finally:
        control_plane.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/{READER}")
        control_plane.request("DELETE", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{READER}")


def test_without_read_access_to_the_secret_the_pods_are_still_reported(control_plane, reader):
    result = status(control_plane, "-n", HOSTILE, kubeconfig=reader)
    print(result.stdout)
    assert result.returncode == 1 and result.stderr == "", result.stderr
    (certificate,) = [line for line in result.stdout.splitlines() if line.startswith("serving certificate ")]
    assert "  not done  no read access to the webhook's Secret (secrets " in certificate and "is forbidden" in certificate
    assert [line.split()[2] for line in result.stdout.splitlines() if line.startswith("pod/plane-")] == ["unguarded", "unguarded", "skipped"]
    # Not done is not a failure: the attention list names the pods only.
    attention = result.stdout.split("needs attention:\n", 1)[1].splitlines()
    assert attention == [f"- namespace {HOSTILE}: 2 pod(s) to replace (2 unguarded, 0 stale) in 2 workload(s)"]
    found = json.loads(status(control_plane, "-n", HOSTILE, "-o", "json", kubeconfig=reader).stdout)
    (check,) = [c for c in found["webhook"]["checks"] if c["subject"] == "serving certificate"]
    assert (check["ok"], check["done"]) == (False, False)


@pytest.fixture
def probe_configuration(control_plane, installed):
    """A copy of the installed mutating configuration (called by url:) that selects no namespace,
    so the API server never calls it; the test points it where it wants. Deleted afterwards."""
    (document,) = [d for d in installed.documents if d["kind"] == "MutatingWebhookConfiguration"]
    probe = copy.deepcopy(document)
    probe["metadata"] = {"name": PROBE}
    for hook in probe["webhooks"]:
        hook["namespaceSelector"] = {"matchLabels": {"plane-guard.io/status-probe": "never"}}
    path = f"{API}/mutatingwebhookconfigurations"
    control_plane.request("POST", path, probe)
    yield f"{path}/{PROBE}"
    try:
        control_plane.request("DELETE", f"{path}/{PROBE}")
    except ApiException as gone:
        assert gone.status == 404


def _webhook_checks(found: dict) -> dict[str, dict]:
    return {c["subject"]: c for c in found["webhook"]["checks"] if "WebhookConfiguration" in c["subject"]}


def test_url_webhooks_are_checked_by_a_tls_handshake_with_the_ca_bundle(control_plane, installed, copied, probe_configuration):
    checked = _webhook_checks(json.loads(status(control_plane, "-n", HOSTILE, "-o", "json").stdout))
    assert len(checked) == 4
    for check in checked.values():
        assert check["ok"], check
        assert check["detail"].startswith(f"URL {installed.base_url}/") and check["detail"].endswith(
            "answers here, and the caBundle verifies its certificate for 127.0.0.1")

    args = ("-n", HOSTILE, "-o", "json", "--mutating-webhook", PROBE)
    closed = f"https://127.0.0.1:{free_port()}"
    other = certs.generate(conventions.SERVICE_NAME, conventions.SERVICE_NAMESPACE, 30, ["127.0.0.1"])
    control_plane.request("PATCH", probe_configuration, [
        {"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": closed + "/mutate"},
        {"op": "replace", "path": "/webhooks/1/clientConfig/caBundle", "value": certs.ca_bundle_b64(other.ca_pem)},
    ], content_type="application/json-patch+json")
    found = json.loads(status(control_plane, *args).stdout)
    checked = _webhook_checks(found)
    refused = checked[f"mutate.plane-guard.io (MutatingWebhookConfiguration {PROBE})"]
    assert not refused["ok"] and refused["done"]
    assert refused["detail"] == (f"URL {closed}/mutate: not reachable from here: Connection refused; "
                                 "if the API server fails the same way, Plane pods start unguarded")
    untrusted = checked[f"audit.mutate.plane-guard.io (MutatingWebhookConfiguration {PROBE})"]
    assert not untrusted["ok"] and "its certificate does not verify against the caBundle: " in untrusted["detail"]
    assert "<" not in untrusted["detail"]
    assert any(a.startswith(f"mutate.plane-guard.io (MutatingWebhookConfiguration {PROBE}): URL {closed}") for a in found["attention"])
