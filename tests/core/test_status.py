"""The pure parts of ``plane-guard status``: pod states, workloads, the webhook Deployment's
command line, and the webhook health checks on real certificates. The whole command runs
against a real API server in tests/apiserver/test_status.py."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json

import pytest
from cryptography import x509

from webhook.core import conventions
from webhook.core.mutation import apply_patch, mutate_pod
from webhook.core.policy import default_policy
from webhook.ops import certs
from webhook.ops.status import flag, image_version, mounted
from webhook.ops.status_report import (
    AUDITED,
    GUARDED,
    SKIPPED,
    STALE,
    UNGUARDED,
    NamespaceReport,
    Running,
    StatusReport,
    as_table,
    namespace_report,
    owner,
    pod_state,
)
from webhook.ops.webhook_health import certificate_check, configuration_checks, endpoints_check

POLICY = default_policy()
RUNNING = Running(POLICY, "the embedded default", "0.1.0", "the webhook's image tag")
NOW = dt.datetime.now(dt.UTC)


def worker(name: str = "plane-worker-wl-7d9f8b6c5-abcde", **metadata) -> dict:
    return {
        "metadata": {"name": name, "labels": {"app.name": "plane-plane-worker", "pod-template-hash": "7d9f8b6c5"}, **metadata},
        "spec": {"containers": [{"name": "plane-worker", "image": "makeplane/backend-commercial:v3.1.2",
                                 "command": ["./bin/docker-entrypoint-worker.sh"]}]},
    }


def owned(pod: dict, kind: str, name: str) -> dict:
    pod = copy.deepcopy(pod)
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "v1", "kind": kind, "name": name, "uid": "u", "controller": True}]
    return pod


def guarded(pod: dict) -> dict:
    return apply_patch(pod, mutate_pod(pod, POLICY).patch)


# --------------------------------------------------------------------------- pods and workloads


def test_pod_states_follow_the_status_annotation_and_the_mutation():
    pod = worker()
    assert pod_state(guarded(pod), RUNNING, audit=False).state == GUARDED
    older = Running(POLICY, "", "0.2.0", "")
    assert pod_state(guarded(pod), older, audit=False).detail == "guarded by plane-guard 0.1.0 (running 0.2.0)"
    assert pod_state(pod, RUNNING, audit=False).state == UNGUARDED
    assert pod_state(pod, RUNNING, audit=True).state == AUDITED
    unreadable = guarded(pod)
    unreadable["metadata"]["annotations"][conventions.STATUS_ANNOTATION] = "{not json"
    assert (pod_state(unreadable, RUNNING, audit=False).state, pod_state(unreadable, RUNNING, audit=False).detail) == (
        STALE, f"unreadable {conventions.STATUS_ANNOTATION} annotation")


def test_a_plane_image_with_an_unknown_command_is_skipped_with_the_preview_s_words():
    pod = worker()
    pod["spec"]["containers"][0]["command"] = ["python", "manage.py", "shell"]
    state = pod_state(pod, RUNNING, audit=False)
    assert state.state == SKIPPED
    assert state.detail == "no role: plane-worker: Plane backend image, command not recognised: python manage.py shell"


def test_owners_are_the_workloads_to_restart():
    pod = worker()
    assert owner(owned(pod, "ReplicaSet", "plane-worker-wl-7d9f8b6c5"), {}) == ("Deployment", "plane-worker-wl")
    assert owner(owned(pod, "ReplicaSet", "handmade"), {}) == ("ReplicaSet", "handmade")
    assert owner(owned(pod, "Job", "nightly-29000000"), {"nightly-29000000": "nightly"}) == ("CronJob", "nightly")
    assert owner(owned(pod, "StatefulSet", "plane-worker"), {}) == ("StatefulSet", "plane-worker")
    assert owner(pod, {}) == ("Pod", pod["metadata"]["name"])


def test_a_namespace_groups_pods_under_workloads_and_restarts_only_what_a_rollout_can():
    template = {"metadata": worker()["metadata"], "spec": worker()["spec"]}
    cron = {"metadata": {"name": "nightly"}, "spec": {"jobTemplate": {"spec": {"template": copy.deepcopy(template)}}}}
    job = {"metadata": {"name": "nightly-1", "ownerReferences": [{"kind": "CronJob", "name": "nightly", "controller": True}]},
           "spec": {"template": copy.deepcopy(template)}}
    web = {"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "makeplane/web:1"}]}}}}
    deployment = {"metadata": {"name": "plane-worker-wl"}, "spec": {"template": copy.deepcopy(template)}}
    finished = owned(worker("plane-worker-wl-7d9f8b6c5-done", ), "ReplicaSet", "plane-worker-wl-7d9f8b6c5")
    finished["status"] = {"phase": "Succeeded"}
    pods = [
        owned(worker(), "ReplicaSet", "plane-worker-wl-7d9f8b6c5"),
        finished,
        owned(worker("nightly-1-xyz"), "Job", "nightly-1"),
        worker("bare"),
    ]
    report = namespace_report("plane", "enabled", {"Deployment": [deployment, web], "CronJob": [cron], "Job": [job]}, pods, RUNNING)
    assert [(w.target, [p.name for p in w.pods]) for w in report.workloads] == [
        ("deployment/plane-worker-wl", ["plane-worker-wl-7d9f8b6c5-abcde"]),
        ("cronjob/nightly", ["nightly-1-xyz"]),
        ("pod/bare", ["bare"]),
    ]
    assert report.workloads[0].roles == {"plane-worker": "worker"}
    assert report.restart_command() == "kubectl -n plane rollout restart deployment/plane-worker-wl"
    text = as_table(StatusReport(RUNNING, "plane-guard/plane-guard", [], [report]))
    assert "note: cronjob/nightly: the next scheduled Job is guarded" in text
    assert "note: pod/bare: a pod of no workload: delete and re-create it" in text

    audit = namespace_report("plane", "audit", {"Deployment": [deployment]}, [], RUNNING)
    assert audit.restart_command() is None
    assert "deployment/plane-worker-wl  -    -      no running pods" in as_table(StatusReport(RUNNING, "pg", [], [audit]))


def test_a_namespace_that_is_not_opted_in_is_named_and_not_looked_into():
    report = NamespaceReport("elsewhere", "not opted in", "label it plane-guard.io/inject=enabled or =audit")
    text = as_table(StatusReport(RUNNING, "pg", [], [report]))
    assert "namespace elsewhere: not opted in (label it plane-guard.io/inject=enabled or =audit)\n\nnothing needs attention" in text


def test_audit_namespaces_ask_for_no_restart_even_with_stale_pods():
    stale = guarded(owned(worker(), "ReplicaSet", "plane-worker-wl-7d9f8b6c5"))
    record = json.loads(stale["metadata"]["annotations"][conventions.STATUS_ANNOTATION])
    stale["metadata"]["annotations"][conventions.STATUS_ANNOTATION] = json.dumps(dict(record, policy="0123456789ab"))
    for mode, attention in (("enabled", 1), ("audit", 0)):
        report = namespace_report("plane", mode, {}, [stale], RUNNING)
        assert [p.state for w in report.workloads for p in w.pods] == [STALE]
        assert len(StatusReport(RUNNING, "pg", [], [report]).attention()) == attention


# --------------------------------------------------------------------------- the webhook Deployment


@pytest.mark.parametrize("image,version", [
    ("ghcr.io/plane-guard/plane-guard:0.1.0", "0.1.0"),
    ("registry.local:5000/plane-guard:v0.2.1@sha256:" + "a" * 64, "0.2.1"),
    ("registry.local:5000/plane-guard", None),
    ("plane-guard:latest", None),
    ("plane-guard@sha256:" + "a" * 64, None),
])
def test_the_version_is_the_image_tag_when_it_is_one(image, version):
    assert image_version(image) == version


def test_flags_are_read_as_argparse_reads_them():
    argv = ["plane-guard", "serve", "--policy=/etc/a.yaml", "--mode", "audit", "--policy", "/etc/b.yaml"]
    assert (flag(argv, "--policy"), flag(argv, "--mode"), flag(argv, "--cert-file")) == ("/etc/b.yaml", "audit", None)


def test_a_mounted_file_is_traced_to_its_configmap_key_or_secret():
    deployment = {"spec": {"template": {"spec": {"volumes": [
        {"name": "policy", "configMap": {"name": "plane-guard-policy-abc", "items": [{"key": "policy.yaml", "path": "p.yaml"}]}},
        {"name": "tls", "secret": {"secretName": "plane-guard-tls"}},
    ]}}}}
    container = {"volumeMounts": [{"name": "policy", "mountPath": "/etc/policy/"}, {"name": "tls", "mountPath": "/tls/tls.crt", "subPath": "tls.crt"}]}
    assert mounted(deployment, container, "/etc/policy/p.yaml") == ("configMap", "plane-guard-policy-abc", "policy.yaml")
    assert mounted(deployment, container, "/tls/tls.crt") == ("secret", "plane-guard-tls", "tls.crt")
    assert mounted(deployment, container, "/elsewhere/x") is None


# --------------------------------------------------------------------------- webhook health


#: Made at import, like NOW: the certificate's validity starts 5 minutes before NOW, whenever the test runs.
BUNDLE = certs.generate("plane-guard", "plane-guard", 30, ["127.0.0.1"])


@pytest.fixture(scope="module")
def bundle() -> certs.Bundle:
    return BUNDLE


def configuration(ca_pem: bytes | None, **client_config) -> dict:
    client_config = client_config or {"service": {"namespace": "plane-guard", "name": "plane-guard", "path": "/mutate"}}
    if ca_pem is not None:
        client_config["caBundle"] = base64.b64encode(ca_pem).decode()
    return {"webhooks": [{"name": "mutate.plane-guard.io", "clientConfig": client_config}]}


def test_the_ca_bundle_must_verify_the_serving_certificate_for_the_name_the_api_server_uses(bundle):
    chain = [x509.load_pem_x509_certificate(bundle.cert_pem)]
    (ok,) = configuration_checks("MutatingWebhookConfiguration", "pg", configuration(bundle.ca_pem), chain, NOW)
    assert ok.ok and ok.detail.endswith("verifies the serving certificate for plane-guard.plane-guard.svc")
    (by_ip,) = configuration_checks("MutatingWebhookConfiguration", "pg", configuration(bundle.ca_pem, url="https://127.0.0.1:8443/mutate"), chain, NOW)
    assert by_ip.ok
    (by_name,) = configuration_checks("MutatingWebhookConfiguration", "pg", configuration(bundle.ca_pem, url="https://webhook.example.com/mutate"), chain, NOW)
    assert not by_name.ok and "does not verify against the caBundle for webhook.example.com" in by_name.detail
    other = certs.generate("plane-guard", "plane-guard", 30)
    (wrong_ca,) = configuration_checks("MutatingWebhookConfiguration", "pg", configuration(other.ca_pem), chain, NOW)
    assert not wrong_ca.ok and "holds no CA that signed the serving certificate" in wrong_ca.detail
    (later,) = configuration_checks("MutatingWebhookConfiguration", "pg", configuration(bundle.ca_pem), chain, NOW + dt.timedelta(days=31))
    assert not later.ok
    (missing,) = configuration_checks("MutatingWebhookConfiguration", "pg", configuration(None), chain, NOW)
    assert not missing.ok and missing.detail.startswith("no caBundle")
    garbage = configuration(None)
    garbage["webhooks"][0]["clientConfig"]["caBundle"] = "bm90IGEgY2VydGlmaWNhdGU="
    (unreadable,) = configuration_checks("MutatingWebhookConfiguration", "pg", garbage, chain, NOW)
    assert unreadable.detail == "the caBundle is not base64 PEM certificates"
    (absent,) = configuration_checks("MutatingWebhookConfiguration", "pg", None, chain, NOW)
    assert not absent.ok and absent.subject == "MutatingWebhookConfiguration pg"


def test_certificate_expiry_against_the_threshold(bundle):
    chain = [x509.load_pem_x509_certificate(bundle.cert_pem)]
    assert certificate_check("c", chain, NOW, 21).ok
    assert "under the 40-day threshold" in certificate_check("c", chain, NOW, 40).detail
    assert certificate_check("c", chain, NOW + dt.timedelta(days=31), 0).detail.startswith("expired on ")


def test_ready_endpoints_count_an_unknown_readiness_as_ready():
    endpoints = [{"addresses": ["10.0.0.1"], "conditions": {"ready": False}}, {"addresses": ["10.0.0.2"]}]
    assert endpoints_check("pg", "pg", {}, [{"endpoints": endpoints}]).detail == "1 ready endpoint"
    assert not endpoints_check("pg", "pg", {}, [{"endpoints": endpoints[:1]}]).ok
    assert endpoints_check("pg", "pg", None, []).detail.startswith("not found")
