"""The webhook container as the kubelet runs and probes it: `plane-guard serve` with the
Deployment's own arguments (mounted paths mapped to a temporary directory), a certificate from
`plane-guard certs generate`, and the liveness/readiness probes over HTTPS."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests import processes
from tests.install.conftest import BASE, PLANE_GUARD, REPO, run_cli, webhook_container
from webhook.core import conventions

SERVICE_HOST = f"{conventions.SERVICE_NAME}.{conventions.SERVICE_NAMESPACE}.svc"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def https_get(port: int, path: str, ca_file: Path) -> int:
    """GET over TLS, verified against the CA and the Service's DNS name, as the API server would."""
    context = ssl.create_default_context(cafile=str(ca_file))
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname=SERVICE_HOST)
    try:
        connection.request("GET", path, headers={"Host": SERVICE_HOST})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.fixture
def pod_filesystem(tmp_path: Path) -> dict[str, Path]:
    """The Deployment's mounts, as directories: TLS from `certs generate`, policy from the ConfigMap file."""
    container = webhook_container()
    mounts = {m["name"]: tmp_path / m["name"] for m in container["volumeMounts"]}
    result = run_cli("certs", "generate", "--out", str(mounts["tls"]))
    assert result.returncode == 0, result.stderr
    mounts["policy"].mkdir()
    (mounts["policy"] / "policy.yaml").write_bytes((BASE / "policy" / "policy.yaml").read_bytes())
    return mounts


def test_probes_pass_on_the_server_started_with_the_deployment_arguments(pod_filesystem: dict[str, Path]) -> None:
    container = webhook_container()
    mount_paths = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    port = free_port()
    args = []
    for arg in container["args"]:
        for name, mount_path in sorted(mount_paths.items(), key=lambda item: -len(item[1])):
            if f"={mount_path}/" in arg:
                arg = arg.replace(f"={mount_path}/", f"={pod_filesystem[name]}/", 1)
                break
        arg = arg.replace(f"--port={conventions.CONTAINER_PORT}", f"--port={port}")
        arg = arg.replace("--host=0.0.0.0", "--host=127.0.0.1")
        args.append(arg)
    assert f"--port={port}" in args and "--host=127.0.0.1" in args  # the Deployment's args were mapped
    assert container["command"] == ["plane-guard", "serve"]
    ca_file = pod_filesystem["tls"] / "ca.crt"
    probes = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}

    process = subprocess.Popen([PLANE_GUARD, "serve", *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        statuses: dict[str, int] = {}
        while time.monotonic() < deadline and process.poll() is None:
            try:
                statuses = {path: https_get(port, path, ca_file) for path in probes}
            except OSError:
                time.sleep(0.2)
                continue
            if all(status == 200 for status in statuses.values()):
                break
            time.sleep(0.2)
        assert process.poll() is None, f"server exited:\n{process.communicate()[0]}"
        assert statuses == {path: 200 for path in probes}
    finally:
        processes.stop(process)
