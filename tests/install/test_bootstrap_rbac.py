"""The RBAC of overlays/self-signed covers every API call `certs bootstrap` makes, and no more.

There is no API server here, so `webhook.certs.bootstrap` runs against a recording stand-in of
the two kubernetes client APIs it is given: each call is turned into the (resource, verb, name)
the API server would authorise, and checked against the rendered Role/ClusterRole with the
Kubernetes RBAC rules (resourceNames restrict get/update/patch/delete, never create).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kubernetes.client.exceptions import ApiException

from webhook import certs, conventions
from tests.install.conftest import render, one

VERBS = {"read": "get", "create": "create", "patch": "patch", "replace": "update", "delete": "delete", "list": "list"}


class RecordingApi:
    """Records each call as (resource, verb, name, namespace) and plays a tiny in-memory cluster."""

    def __init__(self, calls: list[tuple[str, str, str | None, str]], store: dict[str, Any]) -> None:
        self.calls, self.store = calls, store

    # CoreV1Api
    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        self.calls.append(("secrets", "get", name, namespace))
        if name not in self.store:
            raise ApiException(status=404, reason="Not Found")
        return self.store[name]

    def create_namespaced_secret(self, namespace: str, body: Any) -> Any:
        self.calls.append(("secrets", "create", None, namespace))
        self.store[body.metadata.name] = SimpleNamespace(data=dict(body.data))
        return body

    def patch_namespaced_secret(self, name: str, namespace: str, body: dict[str, Any]) -> Any:
        self.calls.append(("secrets", "patch", name, namespace))
        self.store[name].data.update(body["data"])
        return self.store[name]

    # AdmissionregistrationV1Api
    def _read(self, resource: str, name: str) -> Any:
        self.calls.append((resource, "get", name, ""))
        (doc,) = [d for d in render("overlays/self-signed") if d["kind"].lower() + "s" == resource and d["metadata"]["name"] == name]
        return SimpleNamespace(webhooks=[
            SimpleNamespace(name=h["name"], client_config=SimpleNamespace(ca_bundle=self.store.get((resource, h["name"]))))
            for h in doc["webhooks"]
        ])

    def read_mutating_webhook_configuration(self, name: str) -> Any:
        return self._read("mutatingwebhookconfigurations", name)

    def read_validating_webhook_configuration(self, name: str) -> Any:
        return self._read("validatingwebhookconfigurations", name)

    def _patch(self, resource: str, name: str, ops: list[dict[str, Any]]) -> None:
        self.calls.append((resource, "patch", name, ""))
        names = {op["path"]: op["value"] for op in ops if op["op"] == "test"}
        for op in ops:
            if op["op"] == "add":
                index_path = op["path"].rsplit("/clientConfig/", 1)[0] + "/name"
                self.store[(resource, names[index_path])] = op["value"]

    def patch_mutating_webhook_configuration(self, name: str, body: list[dict[str, Any]]) -> None:
        self._patch("mutatingwebhookconfigurations", name, body)

    def patch_validating_webhook_configuration(self, name: str, body: list[dict[str, Any]]) -> None:
        self._patch("validatingwebhookconfigurations", name, body)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"bootstrap calls {name}, which this test (and probably the RBAC) does not cover")


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str, name: str | None) -> bool:
    for rule in rules:
        if group not in rule["apiGroups"] or resource not in rule["resources"] or verb not in rule["verbs"]:
            continue
        names = rule.get("resourceNames")
        if not names or (name is not None and name in names):
            return True
    return False


def run_bootstrap() -> list[tuple[str, str, str | None, str]]:
    calls: list[tuple[str, str, str | None, str]] = []
    store: dict[str, Any] = {}
    api = RecordingApi(calls, store)
    arguments = dict(service=conventions.SERVICE_NAME, namespace=conventions.SERVICE_NAMESPACE,
                     secret=conventions.TLS_SECRET, mutating=conventions.MUTATING_WEBHOOK_CONFIGURATION,
                     validating=conventions.VALIDATING_WEBHOOK_CONFIGURATION)
    # First install: no Secret yet (create). Certificate valid 1 day, renewed 30 days before expiry,
    # so the second run renews it (patch); the third finds it good after a 365-day renewal.
    first = certs.bootstrap(api, api, days=1, renew_before_days=30, **arguments)
    second = certs.bootstrap(api, api, days=365, renew_before_days=30, **arguments)
    third = certs.bootstrap(api, api, days=365, renew_before_days=30, **arguments)
    assert first["secret"] == "created" and second["secret"].startswith("renewed") and third["secret"] == "unchanged"
    # Every webhook of both configurations now trusts the CA.
    for doc in render("overlays/self-signed"):
        if doc["kind"].endswith("WebhookConfiguration"):
            resource = doc["kind"].lower() + "s"
            for hook in doc["webhooks"]:
                assert store.get((resource, hook["name"])), (resource, hook["name"])
    return calls


def test_bootstrap_calls_are_all_allowed_and_all_used() -> None:
    docs = render("overlays/self-signed")
    role = one(docs, "Role")["rules"]
    cluster_role = one(docs, "ClusterRole")["rules"]
    calls = run_bootstrap()
    assert calls
    for resource, verb, name, namespace in calls:
        if resource == "secrets":
            assert namespace == conventions.SERVICE_NAMESPACE
            assert allowed(role, "", resource, verb, name), (resource, verb, name)
        else:
            assert allowed(cluster_role, "admissionregistration.k8s.io", resource, verb, name), (resource, verb, name)
    # Least privilege: every granted verb is used by bootstrap.
    used = {(resource, verb) for resource, verb, _, _ in calls}
    granted = {(resource, verb) for rule in role + cluster_role for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == used, f"granted but unused: {granted - used}; used but not granted: {used - granted}"


def test_rbac_check_can_fail() -> None:
    rules = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": [conventions.TLS_SECRET]}]
    assert allowed(rules, "", "secrets", "get", conventions.TLS_SECRET)
    assert not allowed(rules, "", "secrets", "get", "another-secret")
    assert not allowed(rules, "", "secrets", "create", None)
    assert not allowed(rules, "", "secrets", "patch", conventions.TLS_SECRET)
