"""A throw-away Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``KUBEBUILDER_ASSETS`` (controller-runtime's envtest convention), so the
same tests run with ``setup-envtest``'s assets or any other copy. Everything listens on 127.0.0.1
only. The API server runs with RBAC, the ServiceAccount admission plugin and an audit log that
records writes (with the admission webhooks' audit annotations) and every request made by a
service account. When ``kube-controller-manager`` is available it runs the Deployment,
ReplicaSet, Job, ResourceQuota, namespace, garbage-collector, ServiceAccount and token
controllers, so Deployments and Jobs get pods, ``kubectl rollout restart`` works and quotas are
enforced; there is no scheduler and no kubelet, so pods stay ``Pending``.

Every server is started with a parent-death signal: if the test process is killed, the kernel
kills them too.
"""

from __future__ import annotations

import base64
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import processes

ASSETS_VARIABLE = "KUBEBUILDER_ASSETS"
#: controller-runtime's default asset directory, used when the variable is unset.
DEFAULT_ASSETS = Path("/usr/local/kubebuilder/bin")
REQUIRED = ("kube-apiserver", "etcd")
CONTROLLER_MANAGER = "kube-controller-manager"
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "job-controller",
    "resourcequota-controller",
    "statefulset-controller",
    "daemonset-controller",
)
HOW_TO_GET = (
    "set KUBEBUILDER_ASSETS to a directory holding kube-apiserver, etcd and kubectl "
    "(and kube-controller-manager for the Deployment tests): `sh ../shared/envtest/install.sh DIR` "
    "(the kit CI unpacks) or `setup-envtest use -p path` (controller-runtime)"
)
#: Writes are recorded at Metadata level, so each one carries the admission webhooks' audit
#: annotations; reads only when a service account makes them (the RBAC tests need those).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "None", "users": ["system:apiserver"]},
        {"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
        {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
        {"level": "None"},
    ],
}


def find_assets() -> tuple[Path | None, str]:
    """The envtest asset directory, or None and the reason (which says how to get one)."""
    configured = os.environ.get(ASSETS_VARIABLE)
    directory = Path(configured) if configured else DEFAULT_ASSETS
    missing = [name for name in REQUIRED if not os.access(directory / name, os.X_OK)]
    if not missing:
        return directory, ""
    where = f"{ASSETS_VARIABLE}={configured}" if configured else f"{ASSETS_VARIABLE} is not set and {DEFAULT_ASSETS}"
    return None, f"no real API server: {where} has no {', '.join(missing)}; {HOW_TO_GET}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: killed when the test process goes away (Linux prctl). SIGKILL,
    because a kube-apiserver told to stop after its etcd is gone waits for it indefinitely."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ControlPlaneError(RuntimeError):
    pass


class _Server:
    """One server process with its log file."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str] | None = None):
        self.name, self.log = name, log
        with open(log, "wb") as handle:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                env=env, preexec_fn=_die_with_parent,
            )

    def check(self) -> None:
        if self.process.poll() is not None:
            raise ControlPlaneError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15) -> None:
        processes.stop(self.process, timeout)


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) in ``workdir``; ``start()`` then ``stop()``.

    ``controller_manager=None`` runs it when the asset directory (or
    ``TEST_ASSET_KUBE_CONTROLLER_MANAGER``) has it. ``service_accounts`` turns the
    ServiceAccount admission plugin on, so pods get the projected token volume as in real
    clusters; without the controller manager ``create_namespace`` then makes the ``default``
    ServiceAccount itself.
    """

    def __init__(self, assets: Path, workdir: Path, *, controller_manager: bool | None = None,
                 service_accounts: bool = True, start_timeout: float = 90):
        self.assets = Path(assets)
        self.workdir = Path(workdir)
        self.service_accounts = service_accounts
        self.start_timeout = start_timeout
        kcm = os.environ.get("TEST_ASSET_KUBE_CONTROLLER_MANAGER") or str(self.assets / CONTROLLER_MANAGER)
        self.controller_manager_binary = kcm if os.access(kcm, os.X_OK) else None
        if controller_manager and self.controller_manager_binary is None:
            raise ControlPlaneError(f"{CONTROLLER_MANAGER} not found in {self.assets}; {HOW_TO_GET}")
        self.with_controller_manager = bool(self.controller_manager_binary) if controller_manager is None else controller_manager
        kubectl = self.assets / "kubectl"
        self.kubectl_binary = str(kubectl) if os.access(kubectl, os.X_OK) else shutil.which("kubectl")
        self.certs = self.workdir / "certs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.audit_log = self.workdir / "audit.log"
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.timings: dict[str, float] = {}
        self._servers: list[_Server] = []
        self._client: Any = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> ControlPlane:
        began = time.monotonic()
        try:
            self._prepare()
            etcd_url = self._start_etcd()
            self._start_apiserver(etcd_url)
            self.timings["apiserver"] = time.monotonic() - began
            self._write_kubeconfig()
            if self.with_controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = time.monotonic() - began
        return self

    def describe_timings(self) -> str:
        text = f"control plane ready in {self.timings['total']:.1f} s (kube-apiserver after {self.timings['apiserver']:.1f} s"
        if CONTROLLER_MANAGER in self.timings:
            text += f", {CONTROLLER_MANAGER} {self.timings[CONTROLLER_MANAGER]:.1f} s later"
        return text + ")"

    @property
    def pids(self) -> dict[str, int]:
        """Server name -> process id, for the servers running now."""
        return {server.name: server.process.pid for server in self._servers if server.process.poll() is None}

    def stop(self) -> None:
        """Controller manager, then API server (it needs etcd to shut down), then etcd."""
        if self._client is not None:
            self._client.close()
            self._client = None
        for server in reversed(self._servers):
            server.stop()
        self._servers.clear()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _prepare(self) -> None:
        self.certs.mkdir(parents=True, exist_ok=True)
        (self.workdir / "etcd").mkdir(mode=0o700, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        self._write(self.certs / "sa.key", private, 0o600)
        self._write(self.certs / "sa.pub", public, 0o644)
        self._write(self.certs / "tokens.csv", f'{self.token},admin,admin-uid,"system:masters"\n'.encode(), 0o600)
        self._write(self.workdir / "audit-policy.yaml", yaml.safe_dump(AUDIT_POLICY).encode(), 0o644)

    @staticmethod
    def _write(path: Path, data: bytes, mode: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    def _wait(self, what: str, ready: Callable[[], bool], servers: list[_Server]) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            for server in servers:
                server.check()
            if ready():
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {s.name}\n{s.tail()}" for s in servers)
                raise ControlPlaneError(f"{what} not ready after {self.start_timeout} s:\n{tails}")
            time.sleep(0.1)

    def _start_etcd(self) -> str:
        binary = os.environ.get("TEST_ASSET_ETCD") or str(self.assets / "etcd")
        client, peer = free_port(), free_port()
        url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        args = [
            binary, "--name=test", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=test={peer_url}", "--log-level=warn", "--unsafe-no-fsync=true",
        ]
        # etcd reads ETCD_* variables as flags.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        etcd = _Server("etcd", args, self.workdir / "etcd.log", env)
        self._servers.append(etcd)
        self._wait("etcd", lambda: _http_ok(f"{url}/health"), [etcd])
        return url

    def _start_apiserver(self, etcd_url: str) -> None:
        binary = os.environ.get("TEST_ASSET_KUBE_APISERVER") or str(self.assets / "kube-apiserver")
        args = [
            binary, f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            f"--cert-dir={self.certs}", f"--token-auth-file={self.certs / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.certs / 'sa.pub'}",
            f"--service-account-signing-key-file={self.certs / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
            f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
            f"--audit-log-path={self.audit_log}", "--audit-log-format=json", "--audit-log-mode=blocking",
        ]
        if not self.service_accounts:
            args.append("--disable-admission-plugins=ServiceAccount")
        apiserver = _Server("kube-apiserver", args, self.workdir / "kube-apiserver.log")
        self._servers.append(apiserver)
        self._wait("kube-apiserver", lambda: self._readyz() == 200, self._servers)

    def _readyz(self) -> int:
        ca = self.certs / "apiserver.crt"
        if not ca.exists():
            return 0
        request = urllib.request.Request(f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=2, context=ssl.create_default_context(cafile=str(ca))) as response:
                return response.status
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return 0

    def _write_kubeconfig(self) -> None:
        ca = base64.b64encode((self.certs / "apiserver.crt").read_bytes()).decode()
        self.kubeconfig.write_text(json.dumps(self.kubeconfig_for(self.token, ca_data=ca), indent=2))
        self.kubeconfig.chmod(0o600)

    def _start_controller_manager(self) -> None:
        port = free_port()
        args = [
            self.controller_manager_binary, f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}", "--authentication-skip-lookup=true",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={self.certs / 'sa.key'}",
            f"--controllers={','.join(CONTROLLERS)}",
        ]
        kcm = _Server(CONTROLLER_MANAGER, args, self.workdir / "kube-controller-manager.log")
        self._servers.append(kcm)
        # Plain /healthz answers before the controllers are built; the verbose list names them.
        # Its serving certificate is self-signed and in memory: nothing to verify it against.
        insecure = ssl._create_unverified_context()
        started = time.monotonic()
        self._wait(
            CONTROLLER_MANAGER,
            lambda: "-controller ok" in _http_text(f"https://127.0.0.1:{port}/healthz?verbose", insecure),
            self._servers,
        )
        self.timings[CONTROLLER_MANAGER] = time.monotonic() - started

    # ------------------------------------------------------------------ clients

    def kubeconfig_for(self, token: str, *, ca_data: str | None = None, namespace: str = "default") -> dict[str, Any]:
        """A kubeconfig (as a dict) for this server with a bearer token, e.g. a ServiceAccount's."""
        ca = ca_data or base64.b64encode((self.certs / "apiserver.crt").read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.server, "certificate-authority-data": ca}}],
            "users": [{"name": "user", "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user", "namespace": namespace}}],
            "current-context": "test",
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60,
                kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this server; ``check`` raises with stderr when it fails."""
        if self.kubectl_binary is None:
            raise ControlPlaneError(f"no kubectl in {self.assets} or on PATH")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env["KUBECACHEDIR"] = str(self.workdir / "kubectl-cache")  # not ~/.kube/cache
        result = subprocess.run(
            [self.kubectl_binary, *args], input=input, capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    @property
    def client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` with admin rights (system:masters)."""
        if self._client is None:
            from kubernetes import config

            self._client = config.new_client_from_config(config_file=str(self.kubeconfig))
        return self._client

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        """One API call as admin, JSON in and out, with nothing dropped by the client's models
        (``kubernetes.client.ApiException`` on an error status)."""
        from kubernetes.client.exceptions import ApiException

        method_, url, headers, body_, _ = self.client.param_serialize(
            method, path, query_params=list((query or {}).items()), body=body,
            header_params={"Content-Type": content_type, "Accept": "application/json"}, auth_settings=["BearerToken"],
        )
        response = self.client.call_api(method_, url, header_params=headers, body=body_)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=response.data.decode(errors="replace"), data=None)
        return json.loads(response.data or b"null")

    # ------------------------------------------------------------------ audit log

    def audit_lines(self) -> list[str]:
        return self.audit_log.read_text().splitlines() if self.audit_log.exists() else []

    def audit_events(self, predicate: Callable[[dict[str, Any]], bool] = lambda event: True) -> list[dict[str, Any]]:
        """Audit events (``ResponseComplete`` stage) for which ``predicate`` is true."""
        events = (json.loads(line) for line in self.audit_lines() if line.strip())
        return [e for e in events if e.get("stage") == "ResponseComplete" and predicate(e)]

    def wait_for_audit(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> list[dict[str, Any]]:
        """The matching events, waiting up to ``timeout`` s for at least one (the log is written
        as the response completes, which may be just after the client has its answer)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.audit_events(predicate)
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    # ------------------------------------------------------------------ helpers

    def create_namespace(self, name: str, labels: dict[str, str] | None = None, timeout: float = 30) -> None:
        """Create a namespace and wait for its ``default`` ServiceAccount (pods need it when
        the ServiceAccount admission plugin is on); without a controller manager, make it."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        core = client.CoreV1Api(self.client)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
        if not self.service_accounts:
            return
        if not self.with_controller_manager:
            core.create_namespaced_service_account(name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default")))
            return
        deadline = time.monotonic() + timeout
        while True:
            try:
                core.read_namespaced_service_account("default", name)
                return
            except ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)


def _http_text(url: str, context: ssl.SSLContext | None = None) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.read().decode(errors="replace")
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return ""


def _http_ok(url: str) -> bool:
    return bool(_http_text(url))
