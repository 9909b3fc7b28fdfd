"""``plane-guard status`` against the real API server, on a cluster with every kind of Plane pod.

The scene is what an operator meets after a while:

- Plane ran before its namespace was labelled: the worker's pod is unguarded;
- the api was guarded by the policy the webhook ran then; the policy has changed since: stale;
- the beat worker is opted out by its pod label, the importers by a rule of the new policy;
- the migrator Job is recognised and left alone, the web frontend is not Plane's backend;
- the outbox poller's pod says it was guarded by an older plane-guard: stale too.

The new policy is installed the way kustomize installs it (a ConfigMap whose name carries a
content hash, mounted by a webhook Deployment, with the serving certificate in a Secret) next to
the installed one, as the Deployment ``plane-guard-next``; a real ``plane-guard serve`` with that
policy and certificate answers the webhook configurations while this module runs (they are
applied again afterwards, and the objects removed). There is no kubelet: that Deployment has no
replicas, and the local process is the webhook that answers.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Collection
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from tests.apiserver import install, plane
from tests.apiserver.cluster import free_port
from tests.install.conftest import PLANE_GUARD, REPO
from tests.server.harness import WebhookProcess
from webhook import __version__, cli
from webhook.core import conventions
from webhook.core.policy import load_policy
from webhook.ops import certs

INSTALL = conventions.SERVICE_NAMESPACE
NEXT = "plane-guard-next"
NEXT_TLS = "plane-guard-next-tls"
MIXED = "plane-status"
HEALTHY = "plane-status-ok"
AUDIT = "plane-status-audit"
API = "/apis/admissionregistration.k8s.io/v1"
CONFIGURATIONS = {"mutatingwebhookconfigurations": "plane-guard", "validatingwebhookconfigurations": "plane-guard"}
READY_SLICE = "plane-guard-ready"
OPTED_OUT_BY_RULE = "the importers are restarted by hand after each import"
MIGRATE = ["./bin/docker-entrypoint-migrator.sh"]


def template(role: str, container: str, command: list[str] | None = None, **labels: str) -> dict:
    """A plane-enterprise pod template (``app.name: <namespace>-<release>-<component>``, as the chart sets it)."""
    found = plane.plane_template("ee", role)
    found["spec"]["containers"][0]["name"] = container
    if command:
        found["spec"]["containers"][0]["command"] = command
    found["metadata"]["labels"].update({"app.name": f"plane-{container}", **labels})
    return found


def deployment(name: str, pod_template: dict) -> dict:
    return plane.deployment(pod_template, name)


def job(name: str, pod_template: dict) -> dict:
    pod_template = copy.deepcopy(pod_template)
    pod_template["spec"]["restartPolicy"] = "OnFailure"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": 3, "template": pod_template}}


COLLECTIONS = {"Deployment": "/apis/apps/v1/namespaces/{}/deployments", "Job": "/apis/batch/v1/namespaces/{}/jobs",
               "ConfigMap": "/api/v1/namespaces/{}/configmaps", "Secret": "/api/v1/namespaces/{}/secrets"}


def apply(control_plane, namespace: str, *documents: dict) -> list[str]:
    """Create the objects; their paths, to delete them afterwards."""
    paths = []
    for document in documents:
        collection = COLLECTIONS[document["kind"]].format(namespace)
        control_plane.request("POST", collection, document)
        paths.append(f"{collection}/{document['metadata']['name']}")
    return paths


def merge_patch(control_plane, path: str, patch: dict) -> None:
    control_plane.request("PATCH", path, patch, content_type="application/merge-patch+json")


def pods(control_plane, namespace: str) -> list[dict]:
    return control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods")["items"]


def wait_for_pods(control_plane, namespace: str, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = pods(control_plane, namespace)
        if len(found) >= count:
            return found
        assert time.monotonic() < deadline, [p["metadata"]["name"] for p in found]
        time.sleep(0.1)


def wait_for_deployments_seen(control_plane, namespace: str, surging: Collection[str] = (), timeout: float = 60) -> None:
    """Every Deployment's status counts its pods (``surging``: one old pod kept besides the new
    ones): the controller writes it after it creates them, so a read in between finds (rightly)
    a rollout under way, or counts of a moment before."""
    def seen(d: dict) -> bool:
        status, wanted = d.get("status", {}), d["spec"]["replicas"]
        return (status.get("observedGeneration", 0) >= d["metadata"]["generation"] and status.get("updatedReplicas") == wanted
                and status.get("replicas") == wanted + (d["metadata"]["name"] in surging))

    deadline = time.monotonic() + timeout
    while True:
        items = control_plane.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
        behind = [d["metadata"]["name"] for d in items if not seen(d)]
        if not behind:
            return
        assert time.monotonic() < deadline, f"{namespace}: the controller has not counted the pods of {behind}"
        time.sleep(0.1)


def new_policy(installed) -> str:
    """The installed policy with one workloads rule more: a new digest, and a workload opted out."""
    policy = yaml.safe_load(installed.policy_file.read_text())
    policy["workloads"] = [{"match": {"podLabels": {"app.name": "-worker-importers$"}}, "inject": False, "reason": OPTED_OUT_BY_RULE}]
    return yaml.safe_dump(policy, sort_keys=False)


def install_documents(installed, policy_text: str, bundle: certs.Bundle) -> list[dict]:
    """The overlay's Deployment as ``NEXT``, mounting the new policy ConfigMap (its name hashed as
    kustomize does) and the Secret of its own serving certificate."""
    config_map = f"plane-guard-policy-{hashlib.sha256(policy_text.encode()).hexdigest()[:10]}"
    (rendered,) = [d for d in installed.documents if d["kind"] == "Deployment"]
    webhook = copy.deepcopy(rendered)
    webhook["metadata"]["name"] = NEXT
    webhook["spec"]["replicas"] = 0
    volumes = {v["name"]: v for v in webhook["spec"]["template"]["spec"]["volumes"]}
    volumes["policy"]["configMap"]["name"] = config_map
    volumes["tls"]["secret"]["secretName"] = NEXT_TLS
    encoded = {k: base64.b64encode(v).decode() for k, v in (("ca.crt", bundle.ca_pem), ("tls.crt", bundle.cert_pem), ("tls.key", bundle.key_pem))}
    return [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": config_map, "namespace": INSTALL}, "data": {"policy.yaml": policy_text}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
         "metadata": {"name": NEXT_TLS, "namespace": INSTALL}, "data": encoded},
        webhook,
    ]


def point_webhooks_at(control_plane, url: str, ca_bundle: str) -> None:
    for resource, name in CONFIGURATIONS.items():
        path = f"{API}/{resource}/{name}"
        hooks = control_plane.request("GET", path)["webhooks"]
        ops = []
        for index, hook in enumerate(hooks):
            route = "/" + hook["clientConfig"]["url"].split("/", 3)[3]
            ops += [{"op": "replace", "path": f"/webhooks/{index}/clientConfig/url", "value": url + route},
                    {"op": "replace", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": ca_bundle}]
        control_plane.request("PATCH", path, ops, content_type="application/json-patch+json")


@pytest.fixture(scope="module")
def scene(control_plane, installed, tmp_path_factory):
    if not control_plane.with_controller_manager:
        pytest.skip("needs kube-controller-manager in KUBEBUILDER_ASSETS: its controllers create the workloads' pods")
    work = tmp_path_factory.mktemp("status")
    # 1. Plane runs; then its namespace is labelled, and the webhook (the installed policy) guards what starts next.
    control_plane.create_namespace(MIXED)
    control_plane.request("POST", f"/api/v1/namespaces/{MIXED}/serviceaccounts", plane.service_account())
    apply(control_plane, MIXED, deployment("plane-worker-wl", template("worker", "plane-worker")))
    wait_for_pods(control_plane, MIXED, 1)
    merge_patch(control_plane, f"/api/v1/namespaces/{MIXED}", {"metadata": {"labels": {conventions.INJECT: "enabled"}}})
    apply(control_plane, MIXED,
          deployment("plane-api-wl", template("api", "plane-api")),
          deployment("plane-beat-worker-wl", template("beat", "plane-beat-worker", **{conventions.INJECT: "false"})))
    wait_for_pods(control_plane, MIXED, 3)

    # 2. A new policy is rolled out: its own install, and the webhook configurations call it.
    policy_text = new_policy(installed)
    policy_file = work / "policy.yaml"
    policy_file.write_text(policy_text)
    bundle = certs.generate(conventions.SERVICE_NAME, INSTALL, 30, ["127.0.0.1"])
    certs.write_files(bundle, work / "certs")
    created = apply(control_plane, INSTALL, *install_documents(installed, policy_text, bundle))
    server = WebhookProcess(work / "certs", work / "server.log", "--policy", str(policy_file)).start()
    try:
        point_webhooks_at(control_plane, f"https://127.0.0.1:{server.port}", certs.ca_bundle_b64(bundle.ca_pem))
        apply(control_plane, MIXED,
              deployment("plane-worker-importers-wl", template("worker", "plane-worker-importers")),
              deployment("plane-external-api-wl", template("api", "plane-external-api")),
              deployment("plane-outbox-poller-wl", template("worker", "plane-outbox-poller", ["./bin/docker-entrypoint-outbox-poller.sh"])),
              job("plane-api-migrate-1", template("api", "plane-api-migrate", MIGRATE)),
              plane.deployment(plane.web_template(), "plane-web-wl"))
        control_plane.create_namespace(HEALTHY, {conventions.INJECT: "enabled"})
        control_plane.request("POST", f"/api/v1/namespaces/{HEALTHY}/serviceaccounts", plane.service_account())
        apply(control_plane, HEALTHY,
              deployment("plane-api-wl", template("api", "plane-api")),
              deployment("plane-worker-wl", template("worker", "plane-worker")))
        control_plane.create_namespace(AUDIT, {conventions.INJECT: "audit"})
        control_plane.request("POST", f"/api/v1/namespaces/{AUDIT}/serviceaccounts", plane.service_account())
        control_plane.request("POST", f"/api/v1/namespaces/{AUDIT}/pods", plane.pod(template("worker", "plane-worker"), "plane-worker"))
        found = wait_for_pods(control_plane, MIXED, 8)
        wait_for_pods(control_plane, HEALTHY, 2)
        for namespace in (MIXED, HEALTHY):
            wait_for_deployments_seen(control_plane, namespace)
        # A pod guarded by an older plane-guard (the annotation as that version wrote it).
        (poller,) = [p for p in found if p["metadata"]["name"].startswith("plane-outbox-poller-wl-")]
        record = json.loads(poller["metadata"]["annotations"][conventions.STATUS_ANNOTATION])
        merge_patch(control_plane, f"/api/v1/namespaces/{MIXED}/pods/{poller['metadata']['name']}",
                    {"metadata": {"annotations": {conventions.STATUS_ANNOTATION: json.dumps(dict(record, version="0.0.9"))}}})
        yield {"policy": load_policy(policy_file), "server": server, "bundle": bundle, "work": work}
    finally:
        configurations = [d for d in installed.documents if d["kind"] in install.WEBHOOK_KINDS]
        control_plane.kubectl("apply", "-f", "-", input=install.stream(configurations))
        server.stop()
        for path in created:
            control_plane.request("DELETE", path)


def status(control_plane, *args: str, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE") and k != "KUBECONFIG"}
    return subprocess.run([PLANE_GUARD, "status", "--kubeconfig", str(kubeconfig or control_plane.kubeconfig), *args],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)


def report(control_plane, capsys, *args: str) -> tuple[int, dict]:
    """The command in this process (faster), with JSON output: (exit code, report)."""
    capsys.readouterr()
    code = cli.main(["status", "--kubeconfig", str(control_plane.kubeconfig), "-o", "json", *args])
    return code, json.loads(capsys.readouterr().out)


def by_workload(namespace: dict) -> dict[str, dict]:
    return {f"{w['kind'].lower()}/{w['name']}": w for w in namespace["workloads"]}


def states(namespace: dict) -> dict[str, list[str]]:
    return {target: [p["state"] for p in w["pods"]] for target, w in by_workload(namespace).items()}


EXPECTED = {
    "deployment/plane-api-wl": ["stale"],
    "deployment/plane-beat-worker-wl": ["skipped"],
    "deployment/plane-external-api-wl": ["guarded"],
    "deployment/plane-outbox-poller-wl": ["stale"],
    "deployment/plane-worker-importers-wl": ["skipped"],
    "deployment/plane-worker-wl": ["unguarded"],
    "job/plane-api-migrate-1": ["skipped"],
}
RESTART = "kubectl -n plane-status rollout restart deployment/plane-api-wl deployment/plane-outbox-poller-wl deployment/plane-worker-wl"


def test_a_mixed_namespace_prints_each_pod_and_the_restart_line_and_exits_1(control_plane, installed, scene):
    result = status(control_plane, "--webhook-deployment", NEXT, "-n", MIXED)
    print(result.stdout)
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    rows = {}
    for line in result.stdout.splitlines():
        if line.startswith(("deployment/", "job/")):
            target, pod, state, detail = line.split(None, 3)
            rows[target] = (pod, state, detail)
    assert {target: [row[1]] for target, row in rows.items()} == EXPECTED
    old, new = installed.policy.digest, scene["policy"].digest
    assert rows["deployment/plane-api-wl"][2] == f"guarded by policy {old} (running {new})"
    assert rows["deployment/plane-outbox-poller-wl"][2] == f"guarded by plane-guard 0.0.9 (running {__version__})"
    assert rows["deployment/plane-worker-wl"][2].startswith("created before the namespace opted in or while the webhook was down")
    assert rows["deployment/plane-beat-worker-wl"][2] == f"opted out by its {conventions.INJECT} label or annotation"
    assert rows["deployment/plane-worker-importers-wl"][2] == f"left unchanged by the policy: {OPTED_OUT_BY_RULE}"
    assert rows["job/plane-api-migrate-1"][2].startswith("plane-api-migrate: role migrator: left unchanged: ")
    assert rows["deployment/plane-external-api-wl"][2] == f"policy {new}, plane-guard {__version__}"
    assert "plane-web-wl" not in result.stdout
    assert f"restart: {RESTART}" in result.stdout.splitlines()
    assert f"namespace {MIXED}: enabled" in result.stdout
    assert f"policy {new} (ConfigMap {INSTALL}/plane-guard-policy-" in result.stdout


def test_json_lists_every_labelled_namespace_with_its_mode(control_plane, installed, scene, capsys):
    code, found = report(control_plane, capsys, "--webhook-deployment", NEXT)
    assert code == 1
    namespaces = {n["name"]: n for n in found["namespaces"]}
    assert {MIXED, HEALTHY, AUDIT} <= namespaces.keys()
    assert "plane-off" not in namespaces and INSTALL not in namespaces
    assert states(namespaces[MIXED]) == EXPECTED
    assert namespaces[MIXED]["restart"] == RESTART
    workloads = by_workload(namespaces[MIXED])
    assert workloads["deployment/plane-external-api-wl"]["roles"] == {"plane-external-api": "api"}
    assert {t for t, w in workloads.items() if w["needsRestart"]} == {
        "deployment/plane-api-wl", "deployment/plane-outbox-poller-wl", "deployment/plane-worker-wl"}
    assert workloads["deployment/plane-worker-wl"]["restart"] == "kubectl -n plane-status rollout restart deployment/plane-worker-wl"
    # An audit namespace: a pod plane-guard would change is reported, and nothing asks for a restart.
    audit = namespaces[AUDIT]
    assert audit["mode"] == "audit" and audit["restart"] is None
    assert states(audit) == {"pod/plane-worker": ["audited"]} and not by_workload(audit)["pod/plane-worker"]["needsRestart"]
    assert not [a for a in found["attention"] if AUDIT in a]
    assert found["webhook"]["policy"] == scene["policy"].digest and found["webhook"]["mode"] == "enforce"
    assert found["webhook"]["version"] == __version__ and found["webhook"]["versionSource"] == "the webhook's image tag"
    assert all(check["ok"] for check in found["webhook"]["checks"]), found["webhook"]["checks"]
    assert [a for a in found["attention"] if a.startswith(f"namespace {MIXED}:")] == [
        f"namespace {MIXED}: 3 pod(s) to replace (1 unguarded, 2 stale) in 3 workload(s)"]


def test_an_all_guarded_namespace_and_a_healthy_webhook_exit_0(control_plane, scene):
    result = status(control_plane, "--webhook-deployment", NEXT, "-n", HEALTHY)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "restart:" not in result.stdout and "FAIL" not in result.stdout
    assert result.stdout.rstrip().endswith("nothing needs attention")
    webhooks = [line for line in result.stdout.splitlines() if ".plane-guard.io (" in line]
    assert len(webhooks) == 4 and all("  ok  " in line for line in webhooks)  # every webhook of both configurations


def test_the_restart_line_replaces_the_pods_with_guarded_ones(control_plane, scene, capsys):
    code, before = report(control_plane, capsys, "--webhook-deployment", NEXT, "-n", MIXED)
    (namespace,) = before["namespaces"]
    line = namespace["restart"]
    assert code == 1 and line == RESTART
    restarted = [target.split("/", 1)[1] for target in line.split()[5:]]
    old = {p["metadata"]["name"] for p in pods(control_plane, MIXED)}
    control_plane.kubectl(*line.split()[1:])
    # No kubelet: each Deployment surges by one pod and keeps the old one (never becomes unready).
    wait_for_pods(control_plane, MIXED, len(old) + len(restarted))
    wait_for_deployments_seen(control_plane, MIXED, surging=restarted)
    code, after = report(control_plane, capsys, "--webhook-deployment", NEXT, "-n", MIXED)
    workloads = by_workload(after["namespaces"][0])
    for name in restarted:
        new = [p for p in workloads[f"deployment/{name}"]["pods"] if p["name"] not in old]
        assert [p["state"] for p in new] == ["guarded"], (name, workloads[f"deployment/{name}"])
    assert code == 1  # the old pods are still there (no kubelet to stop them)

    # During the rollout: said so, with the new pods, and no restart line for these workloads again.
    assert after["namespaces"][0]["restart"] is None
    for name in restarted:
        workload = workloads[f"deployment/{name}"]
        assert workload["rollout"]["state"] == "under way" and not workload["needsRestart"], workload
        assert {p["name"]: p["new"] for p in workload["pods"]} == {p["name"]: p["name"] not in old for p in workload["pods"]}
        assert f"namespace {MIXED}: deployment/{name}: rollout under way, 1 pod(s) not guarded yet" in after["attention"]
    table = status(control_plane, "--webhook-deployment", NEXT, "-n", MIXED).stdout
    assert "restart: " not in table
    for name in restarted:
        (new,) = [p["name"] for p in workloads[f"deployment/{name}"]["pods"] if p["new"]]
        assert f"rollout under way: deployment/{name} (1 of 1 pods updated, 1 old pod(s) not yet replaced); new pods guarded: {new}" in table


def test_the_policy_is_read_from_the_installed_deployment(control_plane, installed, capsys):
    """The overlay as applied: the ConfigMap's name is kustomize's, with its content hash."""
    _, found = report(control_plane, capsys, "-n", "plane-enabled")
    (config_map,) = [d for d in installed.documents if d["kind"] == "ConfigMap"]
    assert found["webhook"]["policySource"] == f"ConfigMap {conventions.SERVICE_NAMESPACE}/{config_map['metadata']['name']}"
    assert found["webhook"]["policy"] == installed.policy.digest
    _, overridden = report(control_plane, capsys, "-n", "plane-enabled", "--policy", str(installed.policy_file))
    assert overridden["webhook"]["policySource"] == f"--policy {installed.policy_file}"


@pytest.fixture
def probe_configurations(control_plane, installed, scene):
    """Webhook configurations that call the installed Service (as the manifests do) and select no
    namespace, so nothing ever calls them; deleted afterwards, with the EndpointSlice the test adds."""
    created = []
    for document in installed.documents:
        if document["kind"] not in install.WEBHOOK_KINDS:
            continue
        probe = copy.deepcopy(document)
        probe["metadata"] = {"name": "plane-guard-status-probe"}
        for hook in probe["webhooks"]:
            route = "/" + hook["clientConfig"]["url"].split("/", 3)[3]
            hook["clientConfig"] = {
                "service": {"namespace": INSTALL, "name": conventions.SERVICE_NAME, "port": conventions.SERVICE_PORT, "path": route},
                "caBundle": certs.ca_bundle_b64(scene["bundle"].ca_pem),
            }
            hook["namespaceSelector"] = {"matchLabels": {"plane-guard.io/status-probe": "never"}}
        control_plane.request("POST", f"{API}/{document['kind'].lower()}s", probe)
        created.append(f"{API}/{document['kind'].lower()}s/plane-guard-status-probe")
    yield ["--webhook-deployment", NEXT, "--mutating-webhook", "plane-guard-status-probe",
           "--validating-webhook", "plane-guard-status-probe", "-n", HEALTHY]
    for path in [*created, f"/apis/discovery.k8s.io/v1/namespaces/{INSTALL}/endpointslices/{READY_SLICE}"]:
        try:
            control_plane.request("DELETE", path)
        except ApiException as gone:
            assert gone.status == 404


def _failed(found: dict) -> dict[str, str]:
    return {c["subject"]: c["detail"] for c in found["webhook"]["checks"] if not c["ok"]}


def test_webhook_health_through_the_service(control_plane, scene, probe_configurations, capsys):
    service = f"Service {INSTALL}/{conventions.SERVICE_NAME}"
    code, found = report(control_plane, capsys, *probe_configurations)
    assert code == 1 and _failed(found) == {service: f"no ready endpoints: Plane pods start unguarded; see kubectl -n {INSTALL} get pods"}
    assert sum(1 for c in found["webhook"]["checks"] if c["detail"].startswith(f"{service}: the caBundle verifies")) == 4

    # What the EndpointSlice controller writes for a ready webhook pod (there is no kubelet here
    # to make one ready; the address is never contacted).
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": READY_SLICE, "labels": {"kubernetes.io/service-name": conventions.SERVICE_NAME}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.10"], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": conventions.CONTAINER_PORT, "protocol": "TCP"}],
    }
    control_plane.request("POST", f"/apis/discovery.k8s.io/v1/namespaces/{INSTALL}/endpointslices", endpoint_slice)
    code, found = report(control_plane, capsys, *probe_configurations)
    assert (code, _failed(found)) == (0, {})
    assert {c["subject"]: c["detail"] for c in found["webhook"]["checks"]}[service] == "1 ready endpoint"

    # A caBundle of another CA, and a webhook without one.
    other = certs.generate(conventions.SERVICE_NAME, INSTALL, 30)
    path = f"{API}/validatingwebhookconfigurations/plane-guard-status-probe"
    control_plane.request("PATCH", path, [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": certs.ca_bundle_b64(other.ca_pem)}],
                          content_type="application/json-patch+json")
    path = f"{API}/mutatingwebhookconfigurations/plane-guard-status-probe"
    control_plane.request("PATCH", path, [{"op": "remove", "path": "/webhooks/1/clientConfig/caBundle"}],
                          content_type="application/json-patch+json")
    code, found = report(control_plane, capsys, *probe_configurations)
    failed = _failed(found)
    assert code == 1 and len(failed) == 2, failed
    assert failed["validate.plane-guard.io (ValidatingWebhookConfiguration plane-guard-status-probe)"].startswith(
        f"Service {INSTALL}/{conventions.SERVICE_NAME}: the caBundle holds no CA that signed the serving certificate")
    assert failed["audit.mutate.plane-guard.io (MutatingWebhookConfiguration plane-guard-status-probe)"].startswith("no caBundle:")


def test_a_certificate_expiring_within_the_threshold_needs_attention(control_plane, scene, capsys):
    code, found = report(control_plane, capsys, "--webhook-deployment", NEXT, "-n", HEALTHY, "--cert-min-days", "40")
    (detail,) = _failed(found).values()
    assert code == 1 and detail.endswith("in 29 days, under the 40-day threshold: renew it (certs bootstrap, or check cert-manager)")


@pytest.mark.parametrize("case", ["no-file", "unreachable", "bad-token", "no-namespace", "no-context", "bad-policy"])
def test_usage_and_connection_errors_exit_2_with_a_message(control_plane, installed, tmp_path, capsys, case):
    """Each one in this process, but the unreachable server, which is asked by the command as a
    user runs it (a real process: no traceback, nothing on stdout)."""
    kubeconfig = tmp_path / "kubeconfig"
    config = control_plane.kubeconfig_for(control_plane.token)
    args: list[str] = []
    if case == "unreachable":
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    elif case == "bad-token":
        config = control_plane.kubeconfig_for("not-a-token")
    elif case == "no-namespace":
        args = ["-n", "no-such-namespace"]
    elif case == "no-context":
        args = ["--context", "no-such-context"]
    elif case == "bad-policy":
        (tmp_path / "policy.yaml").write_text("apiVersion: plane-guard.io/v1\nkind: Policy\nroles: {}\n")
        args = ["--policy", str(tmp_path / "policy.yaml")]
    kubeconfig.write_text(json.dumps(config))
    if case == "no-file":
        kubeconfig = tmp_path / "missing"
    if case == "unreachable":
        result = status(control_plane, *args, kubeconfig=kubeconfig)
        code, stdout, stderr = result.returncode, result.stdout, result.stderr
    else:
        capsys.readouterr()
        code = cli.main(["status", "--kubeconfig", str(kubeconfig), *args])
        stdout, stderr = capsys.readouterr()
    assert code == 2, (stdout, stderr)
    assert stdout == "" and "Traceback" not in stderr
    assert stderr.startswith("plane-guard status: ") and stderr.endswith("\n")
    expected = {
        "no-file": "no such file",
        "unreachable": "cannot reach the API server at https://127.0.0.1:",
        "bad-token": "refused the credentials (401 Unauthorized)",
        "no-namespace": "namespace no-such-namespace not found",
        "no-context": "no-such-context",
        "bad-policy": "roles",
    }[case]
    assert expected in stderr, stderr
