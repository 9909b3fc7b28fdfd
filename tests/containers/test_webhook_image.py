"""The plane-guard image serves the webhook the way manifests/base/deployment.yaml runs it.

``podman run --read-only`` as the Deployment's user and groups, without capabilities, with the
serving certificate (made by ``plane-guard certs generate``) and the policy mounted where the
Deployment mounts its Secret and ConfigMap, with the Secret's file mode. Command, args, port,
probe paths and the mutating webhook's path are read from the manifests, not written here.
The container has no network but its own loopback; the client runs inside it (``podman exec``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from tests.pods import podman
from webhook.core import conventions
from webhook.core.mutation import mutate_pod
from webhook.core.policy import load_policy

pytestmark = pytest.mark.containers

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "manifests" / "base"
EXAMPLE = ROOT / "manifests" / "examples" / "admission-review.json"
SERVER_NAME = f"{conventions.SERVICE_NAME}.{conventions.SERVICE_NAMESPACE}.svc"

#: In-container client: waits (bounded) for the TLS port, then GETs each path and POSTs stdin to
#: the last one; prints [[status, body], ...]. TLS is verified against the mounted CA, for the
#: Service's DNS name (the certificate has no IP address).
CLIENT = """
import http.client, json, socket, ssl, sys, time
port, ca, name, gets, post = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:-1], sys.argv[-1]
context = ssl.create_default_context(cafile=ca)
def call(method, path, body=None):
    deadline = time.monotonic() + 30
    while True:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    connection = http.client.HTTPSConnection(name, port, context=context, timeout=10)
    connection.sock = context.wrap_socket(raw, server_hostname=name)
    headers = {"Content-Type": "application/json"} if body else {}
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return [response.status, response.read().decode()]
answers = [call("GET", path) for path in gets]
answers.append(call("POST", post, sys.stdin.buffer.read()))
print(json.dumps(answers))
"""


def _webhook_pod() -> tuple[dict, dict]:
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "webhook"]
    return pod, container


def _port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def _mutate_path() -> str:
    configuration = yaml.safe_load((BASE / "mutatingwebhookconfiguration.yaml").read_text())
    return configuration["webhooks"][0]["clientConfig"]["service"]["path"]


def _mounts(pod: dict, container: dict, scratch: Path) -> list[str]:
    """podman volume options for the Deployment's volumes: Secret, ConfigMap and emptyDir."""
    security = pod["securityContext"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    options = []
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        source = scratch / mount["name"]
        if "secret" in volume:
            done = subprocess.run(
                [str(Path(sys.executable).with_name("plane-guard")), "certs", "generate", "--out", str(source),
                 "--service", conventions.SERVICE_NAME, "--namespace", conventions.SERVICE_NAMESPACE],
                capture_output=True, text=True, timeout=60,
            )
            assert done.returncode == 0, done.stderr
            for path in source.iterdir():  # what the kubelet does with defaultMode and fsGroup
                os.chown(path, 0, security["fsGroup"])
                os.chmod(path, volume["secret"]["defaultMode"])
        elif "configMap" in volume:
            source.mkdir()
            shutil.copy(BASE / "policy" / "policy.yaml", source / "policy.yaml")
        else:
            assert "emptyDir" in volume, volume
            options += ["--tmpfs", mount["mountPath"]]
            continue
        os.chmod(source, 0o755)
        options += ["--volume", f"{source}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}"]
    return options


def test_the_image_serves_probes_and_the_example_patch(images, tmp_path):
    pod, container = _webhook_pod()
    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    name = f"plane-guard-webhook-pgt{os.getpid()}-{uuid.uuid4().hex[:6]}"
    argv = [
        "run", "--detach", "--name", name, "--network", "none", "--read-only",
        "--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--group-add", str(pod["securityContext"]["fsGroup"]),
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        *_mounts(pod, container, tmp_path),
        *[option for variable in container["env"] for option in ("--env", f"{variable['name']}={variable['value']}")],
        "--entrypoint", json.dumps(container["command"]), images.full, *container["args"],
    ]
    port = container["ports"][0]["containerPort"]
    probes = [container[probe]["httpGet"] for probe in ("readinessProbe", "livenessProbe")]
    assert all(p["scheme"] == "HTTPS" and _port(container, p["port"]) == port for p in probes)
    review = json.loads(EXAMPLE.read_text())
    policy = load_policy(BASE / "policy" / "policy.yaml")
    try:
        podman(*argv, timeout=120)
        ca = f"{next(m['mountPath'] for m in container['volumeMounts'] if m['name'] == 'tls')}/ca.crt"
        done = podman("exec", "--interactive", name, "python3", "-c", CLIENT, str(port), ca, SERVER_NAME,
                      *[p["path"] for p in probes], _mutate_path(), input=EXAMPLE.read_text(), timeout=120, check=False)
        logs = podman("logs", name, check=False).stderr
        assert done.returncode == 0, f"client: {done.stderr[-2000:]}\nserver: {logs[-3000:]}"
        *probe_answers, (status, body) = json.loads(done.stdout)
        status_line = podman("exec", name, "cat", "/proc/1/status").stdout
    finally:
        podman("rm", "--force", "--time", "2", name, check=False, timeout=120)

    assert [answer[0] for answer in probe_answers] == [200, 200], probe_answers
    assert status == 200, body
    response = json.loads(body)["response"]
    assert response["uid"] == review["request"]["uid"] and response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    assert patch == mutate_pod(review["request"]["object"], policy).patch
    assert any(op["path"] == "/spec/initContainers" for op in patch)  # the example is a Plane API pod
    uid_line = next(line for line in status_line.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1] == str(security["runAsUser"])
