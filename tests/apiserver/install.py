"""The manifests as these tests install them: one overlay, with the webhooks sent to a local URL.

The test control plane has no cluster network and no Service routing, so the only change made
to the rendered objects is in the two webhook configurations: ``clientConfig.service`` becomes
``clientConfig.url`` (``https://127.0.0.1:<port>`` plus the same path) and the caBundle of the
local serving certificate is filled in, as ``certs bootstrap`` or cert-manager would.
Everything else is applied exactly as ``kubectl apply -k`` would apply it.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

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
