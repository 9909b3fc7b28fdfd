"""The manifests as these tests install them: one overlay, with the webhooks sent to a local URL.

The test control plane has no cluster network and no Service routing, so the only change made
to the rendered objects is in the two webhook configurations: ``clientConfig.service`` becomes
``clientConfig.url`` (``https://127.0.0.1:<port>`` plus the same path) and the caBundle of the
local serving certificate is filled in, as ``certs bootstrap`` or cert-manager would.
Everything else is applied exactly as ``kubectl apply -k`` would apply it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.server.harness import ROOT, WebhookProcess

WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
CERT_MANAGER_GROUP = "cert-manager.io/"


def local_webhooks(document: dict[str, Any], base_url: str, ca_bundle: str) -> dict[str, Any]:
    """A webhook configuration whose webhooks call ``base_url`` + their Service path."""
    if document.get("kind") not in WEBHOOK_KINDS:
        return document
    document = copy.deepcopy(document)
    for webhook in document["webhooks"]:
        service = webhook["clientConfig"].pop("service")
        webhook["clientConfig"]["url"] = base_url + service.get("path", "/")
        webhook["clientConfig"]["caBundle"] = ca_bundle
    return document


def policy_text(documents: list[dict[str, Any]]) -> str:
    """The policy the installed Deployment reads: ``policy.yaml`` of the generated ConfigMap."""
    (config_map,) = [
        d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("plane-guard-policy")
    ]
    return config_map["data"]["policy.yaml"]


def needs_cert_manager(document: dict[str, Any]) -> bool:
    return str(document.get("apiVersion", "")).startswith(CERT_MANAGER_GROUP)


def stream(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False)


@dataclass
class LocalWebhook:
    """A ``plane-guard serve`` on 127.0.0.1 and the documents with their webhooks sent to it."""

    server: WebhookProcess
    base_url: str
    ca_bundle: str
    documents: list[dict[str, Any]]


@contextlib.contextmanager
def local_webhook(work: Path, documents: list[dict[str, Any]], policy_file: Path, *, days: int) -> Iterator[LocalWebhook]:
    """Serve ``policy_file`` with a certificate of ``days`` for 127.0.0.1; stopped on exit."""
    certs = work / "certs"
    generated = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "certs", "generate", "--out", str(certs), "--days", str(days), "--ip", "127.0.0.1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert generated.returncode == 0, generated.stderr
    server = WebhookProcess(certs, work / "server.log", "--policy", str(policy_file)).start()
    try:
        base_url = f"https://127.0.0.1:{server.port}"
        ca_bundle = base64.b64encode((certs / "ca.crt").read_bytes()).decode()
        yield LocalWebhook(server, base_url, ca_bundle, [local_webhooks(d, base_url, ca_bundle) for d in documents])
    finally:
        server.stop()
