"""``plane-guard status``: which Plane pods are guarded, which need a restart, and whether the
API server can call the webhook. Reads the cluster, never writes to it (``restart`` shares the
reading and the classification, and adds its patches).

The webhook checks: each configuration's caBundle verifies the certificate the webhook Deployment
serves (from its Secret), or, for a webhook called by ``url:``, the certificate presented at that
URL (a TLS handshake from here, bounded, nothing sent). Without read access to the Secret the
certificate checks are marked not done and the pods are still reported.

Credentials as ``kubectl`` finds them: ``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``
(``--context`` picks a context), else the pod's ServiceAccount when run in a cluster.

The running policy is the one the webhook Deployment mounts (its ``--policy`` file, from the
ConfigMap kustomize names with a content hash), or the embedded default when it passes none;
``--policy FILE`` overrides it. The running version is the tag of the Deployment's image (the
version the webhook writes into each pod's status annotation); when the tag is not a version (a
digest, ``latest``), this command's own version is used, and the output says so.

Exit 0: nothing needs attention. 1: unguarded or stale pods in an enabled namespace, or a
webhook configuration, certificate or Service that lets Plane pods start unguarded. 2: bad
usage, no credentials, the API server unreachable or refusing the reads.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from webhook import __version__
from webhook.core import conventions
from webhook.core.policy import PolicyError, default_policy, load_policy, load_policy_text
from webhook.ops.status_report import NamespaceReport, Running, StatusReport, as_json, as_table, clean, namespace_report, rollout
from webhook.ops.webhook_health import (
    Check,
    Probe,
    certificate_check,
    certificates,
    configuration_checks,
    endpoints_check,
    plain,
    services,
    urls,
)

#: Seconds to connect, then to read one answer; a monitoring check must not hang.
TIMEOUT = (5, 30)
#: Seconds for a TLS handshake with a webhook called by ``url:``.
PROBE_TIMEOUT = 3.0
ADMISSION = "/apis/admissionregistration.k8s.io/v1"
#: Workload kinds that carry a pod template, and the API group path of each.
WORKLOADS = {
    "Deployment": "/apis/apps/v1",
    "StatefulSet": "/apis/apps/v1",
    "DaemonSet": "/apis/apps/v1",
    "Job": "/apis/batch/v1",
    "CronJob": "/apis/batch/v1",
}
#: A Kubernetes object name (RFC 1123 subdomain): checked before it goes into a URL path.
OBJECT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
VERSION_TAG = re.compile(r"^v?(\d+\.\d+\.\d+(?:[-+.][0-9A-Za-z.+-]*)?)$")
#: What a reader of the cluster needs (the README's ClusterRole says the same).
PERMISSIONS = (
    "get/list namespaces, pods, deployments, statefulsets, daemonsets, jobs, cronjobs, replicasets and endpointslices; "
    "get webhook configurations; get the webhook's Deployment, ConfigMap, Secret and Service"
)


class StatusError(Exception):
    """Usage, credentials or connection: nothing can be reported (exit 2, this message)."""


class Forbidden(StatusError):
    """The API server refused one read (403): where a check can go without it, it is marked not done."""

    def __init__(self, message: str, refused: str):
        super().__init__(message)
        #: What was refused, in the API server's words (``secrets "x" is forbidden: User ...``).
        self.refused = refused


# --------------------------------------------------------------------------- reading the cluster


def connect(kubeconfig: str | None, context: str | None) -> Any:
    """A ``kubernetes.client.ApiClient`` from the kubeconfig kubectl would use, or in-cluster credentials."""
    from kubernetes import client, config

    configuration = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG") or None
    default = Path("~/.kube/config").expanduser()
    try:
        if path or context or default.exists():
            if kubeconfig and not Path(kubeconfig).exists():
                raise StatusError(f"kubeconfig {kubeconfig}: no such file")
            config.load_kube_config(config_file=path or str(default), context=context,
                                    client_configuration=configuration, persist_config=False)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            raise StatusError("no cluster credentials: pass --kubeconfig FILE or set KUBECONFIG "
                              "(or run in a pod with a ServiceAccount token)")
    except config.ConfigException as error:
        raise StatusError(f"cannot use the kubeconfig: {error}") from None
    except (OSError, ValueError, TypeError) as error:
        raise StatusError(f"cannot read the kubeconfig {path or default}: {error}") from None
    configuration.retries = 1
    return client.ApiClient(configuration)


class Cluster:
    """Reads (and ``restart``'s patches) of JSON paths, without the client's model classes:
    objects stay as the API server sends them (camelCase), the form ``mutate_pod`` takes, and
    the command starts fast. ``command`` and ``needs`` name the rights to ask for on a 403."""

    def __init__(self, api_client: Any, command: str = "status", needs: str = PERMISSIONS):
        self.api = api_client
        self.host = api_client.configuration.host
        self.command, self.needs = command, needs

    def get(self, path: str, **query: str) -> dict[str, Any] | None:
        """The object at ``path``, or None when it does not exist; StatusError when it cannot be read."""
        return self.call("GET", path, None, "application/json", **query)

    def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """A JSON merge patch (RFC 7386) of the object at ``path``: the object as stored afterwards."""
        return self.call("PATCH", path, body, "application/merge-patch+json")

    def call(self, verb: str, path: str, body: dict[str, Any] | None, content_type: str, **query: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            method, url, headers, serialized, _ = self.api.param_serialize(
                verb, path, query_params=list(query.items()), body=body,
                header_params={"Accept": "application/json", "Content-Type": content_type}, auth_settings=["BearerToken"],
            )
            response = self.api.call_api(method, url, header_params=headers, body=serialized, _request_timeout=TIMEOUT)
            response.read()
        except ApiException as error:  # the client's name for a TLS failure
            raise StatusError(f"cannot reach the API server at {self.host}: {plain(str(error.reason))}") from None
        except (HTTPError, OSError) as error:
            raise StatusError(f"cannot reach the API server at {self.host}: {_reason(error)}") from None
        if response.status == 404:
            return None
        if not 200 <= response.status <= 299:
            message = self._refused(response.status, response.reason, response.data)
            if response.status == 403:
                raise Forbidden(message, _message(response.data) or "forbidden")
            raise StatusError(message)
        try:
            return json.loads(response.data)
        except ValueError:
            raise StatusError(f"the API server at {self.host} answered {path} with something that is not JSON") from None

    def items(self, path: str, **query: str) -> list[dict[str, Any]]:
        return list((self.get(path, **query) or {}).get("items") or [])

    def _refused(self, status: int, reason: str, body: bytes) -> str:
        message = _message(body)
        if status == 401:
            return f"the API server at {self.host} refused the credentials (401 Unauthorized): check the kubeconfig's user or token"
        if status == 403:
            return f"forbidden: {message or reason}. plane-guard {self.command} needs to {self.needs}"
        return f"the API server at {self.host} answered {status} {reason}: {message}".rstrip(": ")


def _message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status answer, on one bounded line."""
    try:
        message = json.loads(body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        return ""
    return " ".join(str(message).split())[:300]


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return plain(str(reason).split(": ", 1)[-1])


def probe(url: str, ca_pem: bytes, timeout: float = PROBE_TIMEOUT) -> Probe:
    """A TLS handshake with the URL's host and port, trusting only ``ca_pem`` and verifying the
    certificate for the URL's host, as the API server does. Nothing is sent: the handshake is
    all. A host that does not resolve here is not checked (the API server may resolve it)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or 443
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii", "replace"))
    except (ValueError, ssl.SSLError) as error:
        return Probe(f"cannot be checked: {plain(error)}")
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            return Probe(None)
    except ssl.SSLCertVerificationError as error:
        return Probe(f"its certificate does not verify against the caBundle: {plain(error.verify_message or error)}")
    except ssl.SSLError as error:
        return Probe(f"TLS handshake failed: {plain(error.reason or error)}")
    except TimeoutError:
        return Probe(f"no answer from here within {timeout:g} s")
    except socket.gaierror as error:
        return Probe(f"{host} does not resolve here ({plain(error.strerror or error)})", done=False)
    except OSError as error:
        return Probe(f"not reachable from here: {plain(error.strerror or error)}")


# --------------------------------------------------------------------------- the webhook Deployment


def _argv(container: dict[str, Any]) -> list[str]:
    return [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]


def flag(argv: list[str], name: str) -> str | None:
    """The value of ``--name`` in a command line (``--name=value`` or ``--name value``; the last wins)."""
    value = None
    for index, argument in enumerate(argv):
        if argument.startswith(f"{name}="):
            value = argument.split("=", 1)[1]
        elif argument == name and index + 1 < len(argv):
            value = argv[index + 1]
    return value


def serve_container(deployment: dict[str, Any]) -> dict[str, Any] | None:
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return next((c for c in containers if "serve" in _argv(c)), containers[0] if containers else None)


def mounted(deployment: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str, str] | None:
    """(``configMap`` or ``secret``, its name, the key) of the volume a file of the container comes from."""
    spec = deployment["spec"]["template"]["spec"]
    for mount in container.get("volumeMounts") or []:
        mount_path = str(mount.get("mountPath", "")).rstrip("/")
        if mount.get("subPath"):
            if path != mount_path:
                continue
            relative = str(mount["subPath"])
        elif path.startswith(mount_path + "/"):
            relative = path[len(mount_path) + 1:]
        else:
            continue
        volume: dict[str, Any] = next((v for v in spec.get("volumes") or [] if v.get("name") == mount.get("name")), {})
        for kind, name_key in (("configMap", "name"), ("secret", "secretName")):
            source = volume.get(kind)
            if isinstance(source, dict):
                keys = {item.get("path"): item.get("key") for item in source.get("items") or []}
                return kind, str(source.get(name_key)), keys.get(relative, relative)
    return None


def image_version(image: str) -> str | None:
    """The version in an image reference's tag (``...:0.1.0``, ``...:v0.1.0@sha256:...``), if it has one."""
    reference = image.split("@", 1)[0]
    tag = reference.rsplit(":", 1)[1] if ":" in reference.rsplit("/", 1)[-1] else ""
    match = VERSION_TAG.match(tag)
    return match.group(1) if match else None


def _mounted_text(cluster: Cluster, namespace: str, deployment: dict[str, Any], container: dict[str, Any],
                  path: str, what: str) -> tuple[bytes | None, str, Check | None]:
    """The bytes of a file the webhook reads from a ConfigMap or Secret: (data, where, failed check)."""
    source = mounted(deployment, container, path)
    if source is None:
        return None, path, Check(what, False, f"{path} is not mounted from a ConfigMap or Secret", kind="install")
    kind, name, key = source
    where = f"{'ConfigMap' if kind == 'configMap' else 'Secret'} {namespace}/{name}"
    found = cluster.get(f"/api/v1/namespaces/{namespace}/{'configmaps' if kind == 'configMap' else 'secrets'}/{name}")
    if found is None:
        return None, where, Check(f"{what} ({where})", False, "not found: the webhook pods cannot start", kind="install")
    if kind == "configMap":
        value = (found.get("data") or {}).get(key)
        data = value.encode() if isinstance(value, str) else None
    else:
        value = (found.get("data") or {}).get(key)
        data = base64.b64decode(value) if isinstance(value, str) else None
    if data is None:
        return None, where, Check(f"{what} ({where})", False, f"has no key {key}", kind="install")
    return data, where, None


@dataclass(frozen=True)
class StatusOptions:
    """What ``plane-guard status`` is asked (the command line's options of the same names)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: tuple[str, ...] | None = None
    output: str = "table"
    policy: str | None = None
    cert_min_days: int = 21
    webhook_namespace: str = conventions.SERVICE_NAMESPACE
    webhook_deployment: str = conventions.SERVICE_NAME
    mutating_webhook: str = conventions.MUTATING_WEBHOOK_CONFIGURATION
    validating_webhook: str = conventions.VALIDATING_WEBHOOK_CONFIGURATION


def running_policy(cluster: Cluster, options: StatusOptions, deployment: dict[str, Any] | None,
                   container: dict[str, Any] | None, checks: list[Check]) -> tuple[Any, str]:
    """The policy to compare pods with, and where it came from."""
    if options.policy:
        try:
            return load_policy(options.policy), f"--policy {options.policy}"
        except PolicyError as error:
            raise StatusError(f"invalid policy:\n{error}") from None
    if deployment is None or container is None:
        return default_policy(), "the embedded default: no webhook Deployment to read"
    path = flag(_argv(container), "--policy")
    if path is None:
        return default_policy(), "the embedded default (the webhook passes no --policy)"
    text, where, failed = _mounted_text(cluster, options.webhook_namespace, deployment, container, path, "policy")
    if failed:
        checks.append(failed)
        return default_policy(), f"the embedded default: {failed.subject} {failed.detail}"
    try:
        return load_policy_text(text.decode("utf-8", "replace"), where), where  # type: ignore[union-attr]
    except PolicyError as error:
        checks.append(Check(f"policy ({where})", False, f"invalid, the webhook refuses to start: {error}", kind="install"))
        return default_policy(), f"the embedded default: the policy in {where} is invalid"


# --------------------------------------------------------------------------- the report


def _serving_certificate(cluster: Cluster, options: StatusOptions, deployment: dict[str, Any] | None,
                         container: dict[str, Any] | None) -> tuple[list[Any] | None, Check]:
    """The certificate the webhook serves (its ``--cert-file``, from the Secret the Deployment
    mounts; the conventional Secret without a Deployment), and the check of its dates. Without
    read access to that Secret the check is marked not done, and says which grant is missing."""
    cert_file = flag(_argv(container), "--cert-file") if container else None
    where = f"Secret {options.webhook_namespace}/{conventions.TLS_SECRET}"
    try:
        if deployment is not None and container is not None and cert_file:
            pem, where, failed = _mounted_text(cluster, options.webhook_namespace, deployment, container, cert_file, "serving certificate")
            if failed:
                return None, Check(failed.subject, False, failed.detail, kind="certificate")
        else:
            found = cluster.get(f"/api/v1/namespaces/{options.webhook_namespace}/secrets/{conventions.TLS_SECRET}")
            pem = base64.b64decode((found or {}).get("data", {}).get("tls.crt", ""))
            if not pem:
                return None, Check(f"serving certificate ({where})", False, "not found: the webhook pods cannot start", kind="certificate")
    except Forbidden as refused:
        return None, Check("serving certificate", False, f"no read access to the webhook's Secret ({refused.refused}); "
                                                         "an account that may read it can run these checks", done=False, kind="certificate")
    subject = f"serving certificate ({where})"
    try:
        chain = certificates(pem)  # type: ignore[arg-type]
    except ValueError:
        return None, Check(subject, False, "not a PEM certificate", kind="certificate")
    return chain, certificate_check(subject, chain, dt.datetime.now(dt.UTC), options.cert_min_days)


def _health(cluster: Cluster, options: StatusOptions, deployment: dict[str, Any] | None,
            container: dict[str, Any] | None) -> list[Check]:
    chain, certificate = _serving_certificate(cluster, options, deployment, container)
    checks = [certificate]
    no_chain = "no read access to the webhook's Secret" if not certificate.done else None
    now = dt.datetime.now(dt.UTC)
    configurations = [("MutatingWebhookConfiguration", options.mutating_webhook), ("ValidatingWebhookConfiguration", options.validating_webhook)]
    read: list[dict[str, Any] | None] = []
    for kind, name in configurations:
        try:
            read.append(cluster.get(f"{ADMISSION}/{kind.lower()}s/{name}"))
        except Forbidden as refused:
            checks.append(Check(f"{kind} {name}", False, f"not done: {refused.refused}", done=False))
            read.append({})
    probes = {url: probe(url, pem) for url, pem in urls(*read)}
    for (kind, name), configuration in zip(configurations, read):
        if configuration != {}:
            checks.extend(configuration_checks(kind, name, configuration, chain, now, probes, no_chain))
    for service_namespace, service in services(*read):
        try:
            found = cluster.get(f"/api/v1/namespaces/{service_namespace}/services/{service}")
            slices = cluster.items(f"/apis/discovery.k8s.io/v1/namespaces/{service_namespace}/endpointslices",
                                   labelSelector=f"kubernetes.io/service-name={service}")
        except Forbidden as refused:
            checks.append(Check(f"Service {service_namespace}/{service}", False, f"not done: {refused.refused}", done=False, kind="service"))
            continue
        checks.append(endpoints_check(service_namespace, service, found, slices))
    return checks


def _namespaces(cluster: Cluster, wanted: Sequence[str] | None) -> list[tuple[str, str | None]]:
    """(name, value of the inject label) of the namespaces to report on."""
    if wanted:
        found = []
        for name in dict.fromkeys(wanted):
            namespace = cluster.get(f"/api/v1/namespaces/{name}")
            if namespace is None:
                raise StatusError(f"namespace {name} not found")
            found.append((name, (namespace["metadata"].get("labels") or {}).get(conventions.INJECT)))
        return found
    selector = f"{conventions.INJECT} in ({','.join(conventions.NAMESPACE_MODES)})"
    listed = cluster.items("/api/v1/namespaces", labelSelector=selector)
    return sorted((n["metadata"]["name"], n["metadata"]["labels"][conventions.INJECT]) for n in listed)


def _namespace(cluster: Cluster, name: str, label: str | None, running: Running, kinds: Sequence[str]) -> NamespaceReport:
    if label not in conventions.NAMESPACE_MODES:
        return NamespaceReport(name, "not opted in", f"label it {conventions.INJECT}=enabled or =audit")
    workloads = {kind: cluster.items(f"{WORKLOADS[kind]}/namespaces/{name}/{kind.lower()}s") for kind in kinds}
    pods = cluster.items(f"/api/v1/namespaces/{name}/pods")
    try:
        # Only to tell a Deployment's new pods from its old ones during a rollout.
        replicasets = cluster.items(f"/apis/apps/v1/namespaces/{name}/replicasets") if "Deployment" in kinds else []
    except Forbidden:
        replicasets = []
    mode = "audit" if running.server_audit else label
    report = namespace_report(name, mode, workloads, pods, running, replicasets)
    if running.server_audit and label == "enabled":
        report.note = "labelled enabled, but the webhook runs with --mode audit"
    return report


def gather(cluster: Cluster, options: StatusOptions, kinds: Sequence[str] = tuple(WORKLOADS)) -> StatusReport:
    """Read the cluster: the webhook's health and every namespace asked for (``kinds``: the
    workload kinds to list; a pod of another kind is listed under its owner's kind and name)."""
    checks: list[Check] = []
    deployment_name = f"{options.webhook_namespace}/{options.webhook_deployment}"
    deployment = cluster.get(f"/apis/apps/v1/namespaces/{options.webhook_namespace}/deployments/{options.webhook_deployment}")
    container = serve_container(deployment) if deployment else None
    if deployment is None:
        checks.append(Check(f"Deployment {deployment_name}", False, "not found: is plane-guard installed there? "
                                                                    "(--webhook-namespace, --webhook-deployment)", kind="install"))
    policy, policy_source = running_policy(cluster, options, deployment, container, checks)
    version = image_version(str(container.get("image", ""))) if container else None
    version_source = "the webhook's image tag" if version else "this command's version: the webhook's image tag is not a version"
    server_audit = container is not None and flag(_argv(container), "--mode") == "audit"
    running = Running(policy, policy_source, version or __version__, version_source, server_audit)
    checks += _health(cluster, options, deployment, container)
    namespaces = [_namespace(cluster, name, label, running, kinds) for name, label in _namespaces(cluster, options.namespace)]
    webhook_rollout = rollout("Deployment", deployment, []) if deployment else None
    return StatusReport(running, deployment_name, checks, namespaces, webhook_rollout)


def invalid_names(options: StatusOptions) -> str | None:
    """The first option that is not a Kubernetes object name, as a message; None when all are."""
    names = [*(options.namespace or []), options.webhook_namespace, options.webhook_deployment, options.mutating_webhook, options.validating_webhook]
    invalid = [name for name in names if len(name) > 253 or not OBJECT_NAME.match(name)]
    return f"{clean(invalid[0], 80)!r} is not a Kubernetes object name (lower-case letters, digits, '-' and '.')" if invalid else None


def status_command(options: StatusOptions) -> int:
    """Print the report (table or JSON); exit 1 when something needs attention, 2 when nothing could be read."""
    if options.cert_min_days < 0:
        print("plane-guard status: --cert-min-days must be 0 or more", file=sys.stderr)
        return 2
    invalid = invalid_names(options)
    if invalid:
        print(f"plane-guard status: {invalid}", file=sys.stderr)
        return 2
    try:
        api_client = connect(options.kubeconfig, options.context)
        try:
            report = gather(Cluster(api_client), options)
        finally:
            api_client.close()
    except StatusError as error:
        print(f"plane-guard status: {error}", file=sys.stderr)
        return 2
    if options.output == "json":
        print(json.dumps(as_json(report), indent=2))
    else:
        sys.stdout.write(as_table(report))
    return 1 if report.attention() else 0
