"""``plane-guard certs bootstrap`` as its ServiceAccount, under the RBAC the overlay installs.

The command runs as ``system:serviceaccount:plane-guard:plane-guard`` with a token from the
TokenRequest API, exactly as in the bootstrap Job. What it did is read back from the API server
and from the audit log, which records every request that account makes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shlex
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.apiserver import install
from tests.install.conftest import PLANE_GUARD, REPO
from webhook.core import conventions
from webhook.ops import certs

NAMESPACE = conventions.SERVICE_NAMESPACE
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{conventions.SERVICE_NAME}"
CONFIGURATIONS = {
    "mutatingwebhookconfigurations": conventions.MUTATING_WEBHOOK_CONFIGURATION,
    "validatingwebhookconfigurations": conventions.VALIDATING_WEBHOOK_CONFIGURATION,
}
API = "/apis/admissionregistration.k8s.io/v1"


@pytest.fixture(scope="module")
def account(control_plane, installed, tmp_path_factory):
    """A kubeconfig holding a TokenRequest token of plane-guard's ServiceAccount. Afterwards the
    webhook configurations are applied again, so they trust the local test server's CA."""
    token = control_plane.kubectl("-n", NAMESPACE, "create", "token", conventions.SERVICE_NAME, "--duration=1h").stdout.strip()
    path = tmp_path_factory.mktemp("account") / "kubeconfig"
    path.write_text(json.dumps(control_plane.kubeconfig_for(token, namespace=NAMESPACE)))
    yield path
    configurations = [d for d in installed.documents if d["kind"] in install.WEBHOOK_KINDS]
    control_plane.kubectl("apply", "-f", "-", input=install.stream(configurations))


def bootstrap(kubeconfig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env["KUBECONFIG"] = str(kubeconfig)
    return subprocess.run([PLANE_GUARD, "certs", "bootstrap", *args], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def done(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(part.split("=", 1) for part in result.stdout.split() if "=" in part)


def secret(control_plane) -> tuple[dict[str, bytes], str]:
    found = control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{conventions.TLS_SECRET}")
    assert found["type"] == "kubernetes.io/tls"
    return {k: base64.b64decode(v) for k, v in found["data"].items()}, found["metadata"]["resourceVersion"]


def bundles(control_plane) -> list[list[bytes]]:
    """Each webhook's caBundle, split into its certificates (stripped PEM)."""
    found = []
    for resource, name in CONFIGURATIONS.items():
        for hook in control_plane.request("GET", f"{API}/{resource}/{name}")["webhooks"]:
            bundle = base64.b64decode(hook["clientConfig"].get("caBundle", ""))
            found.append([c.public_bytes(serialization.Encoding.PEM).strip() for c in x509.load_pem_x509_certificates(bundle)])
    return found


def versions(control_plane) -> dict[str, str]:
    found = {"secret": secret(control_plane)[1]}
    for resource, name in CONFIGURATIONS.items():
        found[resource] = control_plane.request("GET", f"{API}/{resource}/{name}")["metadata"]["resourceVersion"]
    return found


def requests_by_the_account(control_plane) -> list[dict]:
    return control_plane.audit_events(lambda e: e["user"]["username"] == ACCOUNT)


def writes_by_the_account(control_plane, since: int) -> list[tuple[str, str]]:
    """(resource, verb) of each write, in order, after the first ``since`` requests."""
    events = requests_by_the_account(control_plane)[since:]
    return [(e["objectRef"]["resource"], e["verb"]) for e in events if e["verb"] in ("create", "patch")]


def test_bootstrap_creates_keeps_and_renews_the_certificate(control_plane, installed, account):
    start = writes = len(requests_by_the_account(control_plane))
    first = done(bootstrap(account))
    assert first == {"mutating-webhook": "updated", "validating-webhook": "updated", "secret": "created"}
    data, _ = secret(control_plane)
    assert certs.secret_problem(data, conventions.SERVICE_NAME, NAMESPACE, dt.timedelta(days=30)) is None
    local_ca = base64.b64decode(installed.ca_bundle).strip()
    # Trust is published before the certificate, and the CA the webhook serves with now stays
    # trusted next to the new one.
    assert writes_by_the_account(control_plane, writes) == [
        ("mutatingwebhookconfigurations", "patch"), ("validatingwebhookconfigurations", "patch"), ("secrets", "create"),
    ]
    assert bundles(control_plane) == [[data["ca.crt"].strip(), local_ca]] * 4
    # The README's check after installing.
    readme = (REPO / "README.md").read_text()
    (check,) = [line for line in readme.splitlines() if line.startswith("kubectl get mutatingwebhookconfiguration plane-guard")]
    command = shlex.split(check.split("|")[0])
    assert len(control_plane.kubectl(*command[1:]).stdout) > 0

    before = versions(control_plane)
    writes = len(requests_by_the_account(control_plane))
    again = done(bootstrap(account))
    assert again == {"mutating-webhook": "unchanged", "validating-webhook": "unchanged", "secret": "unchanged"}
    assert versions(control_plane) == before
    assert writes_by_the_account(control_plane, writes) == []

    # Near expiry: a 365-day certificate is due when renewal starts 400 days before the end.
    renewed = done(bootstrap(account, "--renew-before-days=400"))
    assert renewed["secret"].startswith("renewed") and renewed["mutating-webhook"] == "updated"
    fresh, _ = secret(control_plane)
    assert fresh["ca.crt"] != data["ca.crt"]
    assert bundles(control_plane) == [[fresh["ca.crt"].strip(), data["ca.crt"].strip()]] * 4
    assert writes_by_the_account(control_plane, writes)[-1] == ("secrets", "patch")
    # Both the previous serving certificate (still mounted until the kubelet catches up) and the
    # new one verify against the published bundle.
    trusted = {x509.load_pem_x509_certificate(p).subject: x509.load_pem_x509_certificate(p) for p in bundles(control_plane)[0]}
    for pair in (data, fresh):
        served = x509.load_pem_x509_certificate(pair["tls.crt"])
        served.verify_directly_issued_by(trusted[served.issuer])

    # A second renewal drops the oldest CA: the bundle holds the current and the previous one.
    done(bootstrap(account, "--renew-before-days=600", "--days=700"))
    third, _ = secret(control_plane)
    assert bundles(control_plane) == [[third["ca.crt"].strip(), fresh["ca.crt"].strip()]] * 4

    # The Role is enough and nothing more: no request of these runs was refused (a 404 for the
    # Secret not there yet is an allowed request), and each granted (resource, verb) was used.
    events = requests_by_the_account(control_plane)[start:]
    assert [(e["verb"], e["requestURI"]) for e in events if e["responseStatus"]["code"] in (401, 403)] == []
    used = {(e["objectRef"]["resource"], e["verb"]) for e in events}
    rules = [r for d in installed.documents if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    assert used == {(resource, verb) for rule in rules for resource in rule["resources"] for verb in rule["verbs"]}


@pytest.mark.parametrize(
    "action",
    [
        ("get", "secret", "another-secret"),
        ("get", "secrets"),
        ("delete", "secret", conventions.TLS_SECRET),
        ("create", "secret", "generic", "elsewhere", "--from-literal=a=b", "-n", "default"),
        ("patch", "mutatingwebhookconfiguration", "another-webhook", "--type=json", "-p", "[]"),
        ("get", "validatingwebhookconfigurations"),
        ("get", "pods"),
    ],
    ids=lambda action: " ".join(action[:3]),
)
def test_an_action_outside_the_role_is_refused(control_plane, account, action):
    result = control_plane.kubectl(*action, kubeconfig=account, check=False)
    assert result.returncode != 0
    assert "forbidden" in result.stderr.lower() and f'User "{ACCOUNT}" cannot' in result.stderr, result.stderr


def test_bootstrap_of_another_secret_is_refused_and_says_what_to_check(control_plane, account):
    result = bootstrap(account, "--secret=another-tls")
    assert result.returncode == 1
    assert "403" in result.stderr and "RBAC" in result.stderr
    with pytest.raises(ApiException) as missing:
        control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/another-tls")
    assert missing.value.status == 404


def test_bootstrap_repairs_a_bundle_that_lost_the_ca(control_plane, account):
    done(bootstrap(account))
    path = f"{API}/validatingwebhookconfigurations/{conventions.VALIDATING_WEBHOOK_CONFIGURATION}"
    control_plane.request("PATCH", path, [{"op": "remove", "path": "/webhooks/0/clientConfig/caBundle"}],
                          content_type="application/json-patch+json")
    assert done(bootstrap(account)) == {"mutating-webhook": "unchanged", "validating-webhook": "updated", "secret": "unchanged"}
    data, _ = secret(control_plane)
    assert all(bundle[0] == data["ca.crt"].strip() for bundle in bundles(control_plane))


def test_bootstrap_without_the_webhook_configurations_says_to_apply_them(control_plane, installed, tmp_path):
    result = bootstrap(control_plane.kubeconfig, "--mutating-webhook=not-installed", "--secret=never-written")
    assert result.returncode == 1
    assert "apply the plane-guard manifests first" in result.stderr
    with pytest.raises(ApiException) as missing:
        control_plane.request("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/never-written")
    assert missing.value.status == 404


def test_a_configuration_changed_between_read_and_patch_is_read_again(control_plane, installed, account):
    """The JSON patch's ``test`` guard fails on the real server when the webhooks moved; the
    patch is computed again from a fresh read."""
    admission = client.AdmissionregistrationV1Api(control_plane.client)
    path = f"{API}/mutatingwebhookconfigurations/{conventions.MUTATING_WEBHOOK_CONFIGURATION}"
    reads = []

    def read_then_reorder(name):
        current = admission.read_mutating_webhook_configuration(name)
        reads.append([w.name for w in current.webhooks])
        if len(reads) == 1:  # someone else swaps the two webhooks before the patch lands
            hooks = control_plane.request("GET", path)["webhooks"]
            control_plane.request("PATCH", path, {"webhooks": hooks[::-1]}, content_type="application/merge-patch+json")
        return current

    wanted = b"-----BEGIN CERTIFICATE-----\nbm90IGEgcmVhbCBjZXJ0aWZpY2F0ZQ==\n-----END CERTIFICATE-----\n"
    outcome = certs._patch_ca_bundle(read_then_reorder, admission.patch_mutating_webhook_configuration,
                                     conventions.MUTATING_WEBHOOK_CONFIGURATION, lambda previous: wanted)
    assert outcome == "updated" and len(reads) == 2 and reads[1] == reads[0][::-1]
    hooks = control_plane.request("GET", path)["webhooks"]
    assert all(base64.b64decode(h["clientConfig"]["caBundle"]) == wanted for h in hooks)
