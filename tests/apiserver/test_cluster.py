"""The control plane fixture itself: loopback only, RBAC, audit log, ServiceAccount admission."""

from __future__ import annotations

import json
import re
import subprocess

from kubernetes import client


def _listening(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets these processes listen on (``ss``, iproute2)."""
    output = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, timeout=10, check=True).stdout
    found = []
    for line in output.splitlines():
        owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if owners & pids:
            found.append(line.split()[3])
    return found


def test_every_server_listens_on_loopback_only(control_plane):
    pids = set(control_plane.pids.values())
    addresses = _listening(pids)
    assert control_plane.server.startswith("https://127.0.0.1:")
    assert len(addresses) >= len(pids), addresses  # every server was found
    assert all(a.startswith("127.0.0.1:") for a in addresses), addresses


def test_kubectl_and_the_client_reach_the_same_server(control_plane):
    version = control_plane.kubectl("version", "-o", "json").stdout
    assert '"serverVersion"' in version
    names = {n.metadata.name for n in client.CoreV1Api(control_plane.client).list_namespace().items}
    assert {"default", "kube-system"} <= names


def test_pods_get_the_projected_token_and_writes_are_audited(control_plane):
    control_plane.create_namespace("fixture-check")
    core = client.CoreV1Api(control_plane.client)
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="probe"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]),
    )
    stored = core.create_namespaced_pod("fixture-check", pod)
    assert stored.spec.service_account_name == "default"
    (token,) = [v for v in stored.spec.volumes if v.name.startswith("kube-api-access-")]
    assert token.projected is not None
    events = control_plane.wait_for_audit(
        lambda e: e["verb"] == "create" and e["objectRef"].get("namespace") == "fixture-check"
        and e["objectRef"].get("name") == "probe"
    )
    assert len(events) == 1 and events[0]["responseStatus"]["code"] == 201
    # Reads by the admin are not recorded: the log stays small.
    core.read_namespaced_pod("probe", "fixture-check")
    assert not control_plane.audit_events(lambda e: e["verb"] == "get" and e["objectRef"].get("name") == "probe")


def test_rbac_is_enforced_for_a_service_account_token(control_plane, tmp_path):
    control_plane.create_namespace("fixture-rbac")
    token = control_plane.kubectl("-n", "fixture-rbac", "create", "token", "default").stdout.strip()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps(control_plane.kubeconfig_for(token, namespace="fixture-rbac")))
    whoami = control_plane.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kubeconfig)
    assert whoami.stdout == "system:serviceaccount:fixture-rbac:default"
    refused = control_plane.kubectl("get", "pods", kubeconfig=kubeconfig, check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr
