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
from webhook.ops.status import flag, image_version, mounted, probe
from webhook.ops.status_report import (
    AUDITED,
    COMPLETE,
    GUARDED,
    MANUAL,
    SKIPPED,
    STALE,
    STUCK,
    UNDER_WAY,
    UNGUARDED,
    WAITING,
    NamespaceReport,
    Running,
    StatusReport,
    as_table,
    clean,
    namespace_report,
    owner,
    pod_state,
    rollout,
)
from webhook.ops.webhook_health import Probe, certificate_check, configuration_checks, endpoints_check, plain, urls

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


def busybox(name: str, annotation: str) -> dict:
    return {"metadata": {"name": name, "annotations": {conventions.STATUS_ANNOTATION: annotation}},
            "spec": {"containers": [{"name": "busybox", "image": "busybox:1.36"}]}}


def test_an_annotation_makes_no_pod_plane_s_and_none_guarded():
    current = guarded(worker())["metadata"]["annotations"][conventions.STATUS_ANNOTATION]
    forged = [busybox(name, value) for name, value in
              (("bad-json", "{not json"), ("list", "[1,2]"), ("huge", "x" * 200_000), ("future", '{"version":"99.0.0"}'), ("copy", current))]
    assert namespace_report("plane", "enabled", {}, forged, RUNNING).workloads == []

    copied = worker()
    copied["metadata"]["annotations"] = {conventions.STATUS_ANNOTATION: current}
    state = pod_state(copied, RUNNING, audit=False)
    assert state.state == UNGUARDED
    assert state.detail.startswith(f"its {conventions.STATUS_ANNOTATION} annotation names the running policy, but 11 of plane-guard's "
                                   "changes missing (plane-worker:entrypoint, plane-worker:runtime-volume-mount, pod:runtime-volume, +8 more)")
    assert pod_state(copied, RUNNING, audit=True).state == AUDITED
    # An old annotation on an unchanged pod is not stale either: nothing of plane-guard is in it.
    old = json.dumps(dict(json.loads(current), policy="0123456789ab"))
    copied["metadata"]["annotations"][conventions.STATUS_ANNOTATION] = old
    assert pod_state(copied, RUNNING, audit=False).state == UNGUARDED
    # A pod guarded by an older policy still shows the runtime: stale, as before.
    stale = guarded(worker())
    stale["metadata"]["annotations"][conventions.STATUS_ANNOTATION] = old
    assert pod_state(stale, RUNNING, audit=False).state == STALE


def test_values_from_the_cluster_are_cut_and_escaped_in_the_table():
    hostile = guarded(worker())
    record = json.loads(hostile["metadata"]["annotations"][conventions.STATUS_ANNOTATION])
    record["policy"] = "\x1b[2J\nnothing needs attention\n" + "A" * 200_000
    hostile["metadata"]["annotations"][conventions.STATUS_ANNOTATION] = json.dumps(record)
    state = pod_state(hostile, RUNNING, audit=False)
    assert state.state == STALE and len(state.detail) < 200 and "\x1b" not in state.detail
    odd = worker("odd")
    odd["spec"]["containers"][0]["command"] = ["python", "-c", "\x1b]0;owned\x07\u202eevil"]
    report = namespace_report("plane", "enabled", {}, [owned(hostile, "ReplicaSet", "plane-worker-wl-7d9f8b6c5"), odd], RUNNING)
    text = as_table(StatusReport(RUNNING, "pg", [], [report]))
    assert not [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c == "\u202e"]
    assert "nothing needs attention" not in text.splitlines() and max(len(line) for line in text.splitlines()) < 400
    assert "\\x1b]0;owned\\x07\\u202eevil" in text


def test_clean_escapes_controls_and_says_what_it_cut():
    assert clean("a\x1b[2Jb\nc") == "a\\x1b[2Jb\\x0ac"
    assert clean("x" * 300, 50) == "x" * 35 + "... (300 chars)"
    assert clean([1, 2]) == "[1, 2]" and clean(None) == "null"
    assert plain("validation failed: cert is not valid at validation time (encountered processing <Certificate(subject=<Name(CN=x)>, ...)>)") == (
        "cert is not valid at validation time")


# --------------------------------------------------------------------------- rollouts


def deployment_object(generation: int = 2, observed: int = 2, replicas: int = 1, updated: int = 1, total: int = 1, available: int = 1,
                      revision: str = "2", reason: str = "NewReplicaSetAvailable") -> dict:
    return {"metadata": {"name": "plane-worker-wl", "generation": generation, "annotations": {"deployment.kubernetes.io/revision": revision}},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated, "availableReplicas": available,
                       "conditions": [{"type": "Progressing", "status": "False" if reason == "ProgressDeadlineExceeded" else "True",
                                       "reason": reason}]}}


def replicaset(template_hash: str, revision: str) -> dict:
    return {"metadata": {"name": f"plane-worker-wl-{template_hash}", "labels": {"pod-template-hash": template_hash},
                         "annotations": {"deployment.kubernetes.io/revision": revision},
                         "ownerReferences": [{"kind": "Deployment", "name": "plane-worker-wl", "controller": True}]}}


def test_a_deployment_s_rollout_is_read_as_kubectl_rollout_status_reads_it():
    assert rollout("Deployment", deployment_object(), []).state == COMPLETE
    assert rollout("Deployment", deployment_object(observed=1), []).state == UNDER_WAY
    assert rollout("Deployment", deployment_object(total=2), []).detail == "1 of 1 pods updated, 1 old pod(s) not yet replaced"
    assert rollout("Deployment", deployment_object(available=0), []).state == WAITING
    assert rollout("Deployment", deployment_object(updated=0, total=0, available=0), []).state == WAITING
    assert rollout("Deployment", deployment_object(total=2, reason="ProgressDeadlineExceeded"), []).state == STUCK
    assert rollout("StatefulSet", {"spec": {"updateStrategy": {"type": "OnDelete"}}}, []).state == MANUAL
    assert rollout("DaemonSet", {"metadata": {"generation": 3}, "spec": {},
                                 "status": {"observedGeneration": 3, "desiredNumberScheduled": 2, "updatedNumberScheduled": 1}}, []).state == UNDER_WAY


def test_a_partitioned_stateful_set_is_rolled_out_once_its_ordinals_from_the_partition_up_are():
    def sts(updated: int, partition: int | None, revisions: tuple[str, str] = ("a", "b")) -> dict:
        strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": partition}} if partition is not None else {}
        return {"metadata": {"generation": 2}, "spec": {"replicas": 3, "updateStrategy": strategy},
                "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                           "updatedReplicas": updated, "currentRevision": revisions[0], "updateRevision": revisions[1]}}
    assert rollout("StatefulSet", sts(0, 1), []).detail == "0 of 2 pods from ordinal 1 up updated (partition 1)"
    assert rollout("StatefulSet", sts(1, 1), []).state == UNDER_WAY
    assert rollout("StatefulSet", sts(2, 1), []).state == COMPLETE
    assert rollout("StatefulSet", sts(1, None), []).state == UNDER_WAY
    assert rollout("StatefulSet", sts(3, None, ("b", "b")), []).state == COMPLETE
    assert rollout("StatefulSet", sts(0, 5), []).state == COMPLETE  # a partition above every ordinal replaces nothing


def test_during_a_rollout_the_new_pods_are_named_and_no_restart_line_repeats_it():
    old = owned(worker("plane-worker-wl-7d9f8b6c5-abcde"), "ReplicaSet", "plane-worker-wl-7d9f8b6c5")
    new = guarded(owned(worker("plane-worker-wl-5f6d7c8b9-fghij"), "ReplicaSet", "plane-worker-wl-5f6d7c8b9"))
    new["metadata"]["labels"]["pod-template-hash"] = "5f6d7c8b9"
    template = {"metadata": worker()["metadata"], "spec": worker()["spec"]}
    workload = dict(deployment_object(total=2), spec={"replicas": 1, "template": template})
    report = namespace_report("plane", "enabled", {"Deployment": [workload]}, [old, new], RUNNING,
                              [replicaset("7d9f8b6c5", "1"), replicaset("5f6d7c8b9", "2")])
    (found,) = report.workloads
    assert found.rolling and {p.name: (p.state, p.new) for p in found.pods} == {
        "plane-worker-wl-7d9f8b6c5-abcde": (UNGUARDED, False), "plane-worker-wl-5f6d7c8b9-fghij": (GUARDED, True)}
    assert report.restart_command() is None and report.to_restart() == []
    text = as_table(StatusReport(RUNNING, "pg", [], [report]))
    assert ("rollout under way: deployment/plane-worker-wl (1 of 1 pods updated, 1 old pod(s) not yet replaced); "
            "new pods guarded: plane-worker-wl-5f6d7c8b9-fghij") in text
    assert "- namespace plane: deployment/plane-worker-wl: rollout under way, 1 pod(s) not guarded yet" in text
    # Once no old pod is left, the rollout is over and nothing is marked new or old.
    done = namespace_report("plane", "enabled", {"Deployment": [dict(workload, status=deployment_object()["status"])]}, [new], RUNNING)
    assert [p.new for w in done.workloads for p in w.pods] == [None]


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
    elsewhere = configuration(bundle.ca_pem, service={"namespace": "other", "name": "plane-guard", "path": "/mutate"})
    (by_name,) = configuration_checks("MutatingWebhookConfiguration", "pg", elsewhere, chain, NOW)
    # The reason after the colon is cryptography's own words, which vary by release; the host is named once.
    assert not by_name.ok and by_name.detail.startswith("Service other/plane-guard: the serving certificate does not verify against the "
                                                        "caBundle for plane-guard.other.svc: ")
    assert "subjectAltName" in by_name.detail and by_name.detail.count("plane-guard.other.svc") == 1
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
    (unread,) = configuration_checks("MutatingWebhookConfiguration", "pg", configuration(bundle.ca_pem), None, NOW, no_chain="no read access")
    assert (unread.ok, unread.done) == (False, False) and unread.detail.endswith("not checked against the serving certificate: no read access")


def test_a_url_webhook_is_judged_by_what_answers_at_its_url(bundle):
    """The probe (a TLS handshake trusting only the caBundle) decides, not the Secret's certificate."""
    url = "https://127.0.0.1:8443/mutate"
    hooks = configuration(bundle.ca_pem, url=url)
    (answered,) = configuration_checks("MutatingWebhookConfiguration", "pg", hooks, None, NOW, {url: Probe(None)})
    assert answered.ok and answered.detail == f"URL {url}: answers here, and the caBundle verifies its certificate for 127.0.0.1"
    (refused,) = configuration_checks("MutatingWebhookConfiguration", "pg", hooks, None, NOW, {url: Probe("not reachable from here: Connection refused")})
    assert not refused.ok and refused.done and refused.detail.startswith(f"URL {url}: not reachable from here: Connection refused; ")
    (unprobed,) = configuration_checks("MutatingWebhookConfiguration", "pg", hooks, None, NOW)
    assert (unprobed.ok, unprobed.done) == (False, False) and unprobed.detail.endswith("reachability not checked")
    (unresolved,) = configuration_checks("MutatingWebhookConfiguration", "pg", hooks, None, NOW, {url: Probe("x does not resolve here", done=False)})
    assert (unresolved.ok, unresolved.done) == (False, False) and unresolved.detail.endswith("reachability not checked: x does not resolve here")
    assert urls(hooks, hooks, configuration(bundle.ca_pem)) == [(url, bundle.ca_pem)]


def test_the_url_probe_verifies_the_certificate_a_real_server_presents(bundle, tmp_path):
    """Against a TLS listener on loopback: trusted, untrusted CA, wrong name, and nothing listening."""
    import socket
    import ssl
    import threading

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(bundle.cert_pem)
    key.write_bytes(bundle.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(connection, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert probe(f"https://127.0.0.1:{port}/mutate", bundle.ca_pem) == Probe(None)
        other = certs.generate("plane-guard", "plane-guard", 30)
        untrusted = probe(f"https://127.0.0.1:{port}/mutate", other.ca_pem).problem
        assert untrusted is not None and untrusted.startswith("its certificate does not verify against the caBundle: ")
        wrong_name = probe(f"https://localhost:{port}/mutate", bundle.ca_pem).problem
        assert wrong_name is not None and "does not verify" in wrong_name and "<" not in wrong_name
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert probe(f"https://127.0.0.1:{port}/mutate", bundle.ca_pem) == Probe("not reachable from here: Connection refused")


def test_certificate_expiry_against_the_threshold(bundle):
    chain = [x509.load_pem_x509_certificate(bundle.cert_pem)]
    assert certificate_check("c", chain, NOW, 21).ok
    early = certificate_check("c", chain, NOW - dt.timedelta(days=1), 0)
    assert not early.ok and early.detail.startswith("not valid before ")
    assert "under the 40-day threshold" in certificate_check("c", chain, NOW, 40).detail
    assert certificate_check("c", chain, NOW + dt.timedelta(days=31), 0).detail.startswith("expired on ")


def test_ready_endpoints_count_an_unknown_readiness_as_ready():
    endpoints = [{"addresses": ["10.0.0.1"], "conditions": {"ready": False}}, {"addresses": ["10.0.0.2"]}]
    assert endpoints_check("pg", "pg", {}, [{"endpoints": endpoints}]).detail == "1 ready endpoint"
    assert not endpoints_check("pg", "pg", {}, [{"endpoints": endpoints[:1]}]).ok
    assert endpoints_check("pg", "pg", None, []).detail.startswith("not found")
