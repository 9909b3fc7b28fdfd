"""The webhook configurations: names, paths, selectors and matchConditions against the code.

Selectors are evaluated with the Kubernetes label-selector rules (In, NotIn, Exists,
DoesNotExist, matchLabels) on namespaces and pods; matchConditions are compiled and evaluated
by a real CEL implementation (cel-expr-python, a compiled CEL runtime), with every variable
dynamically typed, as the API server declares `object` for webhook matchConditions.
"""

from __future__ import annotations

import asyncio
import functools
import re
from typing import Any

import httpx
import pytest
import yaml
from cel_expr_python import cel
from cryptography import x509

from tests.install.conftest import BASE, INSTALLABLE, REPO, render, run_cli, serve_args
from webhook.core import conventions

KINDS = {
    "MutatingWebhookConfiguration": (conventions.MUTATING_WEBHOOK_CONFIGURATION, {
        "enabled": conventions.PATH_MUTATE, "audit": conventions.PATH_MUTATE_AUDIT}),
    "ValidatingWebhookConfiguration": (conventions.VALIDATING_WEBHOOK_CONFIGURATION, {
        "enabled": conventions.PATH_VALIDATE, "audit": conventions.PATH_VALIDATE_AUDIT}),
}
POLICY_COPY = BASE / "policy" / "policy.yaml"
#: The names the API server and clients use for the Service, shortest first.
SERVICE_NAMES = [
    conventions.SERVICE_NAME,
    f"{conventions.SERVICE_NAME}.{conventions.SERVICE_NAMESPACE}",
    f"{conventions.SERVICE_NAME}.{conventions.SERVICE_NAMESPACE}.svc",
    f"{conventions.SERVICE_NAME}.{conventions.SERVICE_NAMESPACE}.svc.cluster.local",
]


def configuration(kind: str, target: str = "base") -> dict[str, Any]:
    (doc,) = [d for d in render(target) if d["kind"] == kind]
    return doc


def all_webhooks(target: str = "base") -> list[tuple[str, dict[str, Any]]]:
    return [(kind, hook) for kind in KINDS for hook in configuration(kind, target)["webhooks"]]


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics; an empty or absent selector selects everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        assert operator in ("In", "NotIn", "Exists", "DoesNotExist"), operator
    return True


def namespace_labels(name: str, inject: str | None) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": name}  # set by the API server on every namespace
    if inject is not None:
        labels[conventions.INJECT] = inject
    return labels


def called_for(namespace: dict[str, str], pod: dict[str, str], target: str = "base") -> set[str]:
    return {
        hook["name"]
        for _, hook in all_webhooks(target)
        if selects(hook["namespaceSelector"], namespace) and selects(hook["objectSelector"], pod)
    }


# --- names, paths, service ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["base", *INSTALLABLE])
def test_configurations_call_the_service_on_the_code_paths(target: str) -> None:
    for kind, (name, paths) in KINDS.items():
        doc = configuration(kind, target)
        assert doc["metadata"]["name"] == name
        hooks = doc["webhooks"]
        assert len(hooks) == len(conventions.NAMESPACE_MODES) == 2
        by_mode = {}
        for hook in hooks:
            service = hook["clientConfig"]["service"]
            assert (service["name"], service["namespace"], service["port"]) == (
                conventions.SERVICE_NAME, conventions.SERVICE_NAMESPACE, conventions.SERVICE_PORT)
            assert "url" not in hook["clientConfig"]
            (mode,) = [e["values"] for e in hook["namespaceSelector"]["matchExpressions"]
                       if e["key"] == conventions.INJECT and e["operator"] == "In"]
            by_mode[tuple(mode)] = service["path"]
        assert by_mode == {(mode,): path for mode, path in paths.items()}


def test_webhook_names_are_fully_qualified_and_unique() -> None:
    names = [hook["name"] for _, hook in all_webhooks()]
    assert len(set(names)) == len(names) == 4
    for name in names:
        assert name.endswith("." + conventions.PREFIX), name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+", name), name
    assert set(names) == {"mutate.plane-guard.io", "audit.mutate.plane-guard.io",
                          "validate.plane-guard.io", "audit.validate.plane-guard.io"}


def test_webhook_settings() -> None:
    for kind, hook in all_webhooks():
        assert hook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                  "resources": ["pods"], "scope": "Namespaced"}]
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1", "v1beta1"]
        assert 1 <= hook["timeoutSeconds"] <= 5
        # Never block a pod because plane-guard is down; the validating webhook is the guard.
        assert hook["failurePolicy"] == "Ignore"
        assert hook["matchPolicy"] == "Equivalent"
        if kind == "MutatingWebhookConfiguration":
            assert hook["reinvocationPolicy"] == "IfNeeded"
        else:
            assert "reinvocationPolicy" not in hook


def test_no_ca_bundle_is_committed() -> None:
    """cert-manager or `certs bootstrap` own caBundle; a committed one would be stale and fought over."""
    for target in ["base", *INSTALLABLE]:
        for _, hook in all_webhooks(target):
            assert "caBundle" not in hook["clientConfig"]


# --- selectors --------------------------------------------------------------------------------------------


def test_object_selector_is_the_code_opt_out() -> None:
    for _, hook in all_webhooks():
        (expression,) = hook["objectSelector"]["matchExpressions"]
        assert expression["key"] == conventions.INJECT and expression["operator"] == "NotIn"
        assert set(expression["values"]) == conventions.OPT_OUT_VALUES


def test_opted_in_namespaces_reach_exactly_their_mode() -> None:
    plain_pod: dict[str, str] = {"app.name": "plane-plane-api"}
    assert called_for(namespace_labels("plane", "enabled"), plain_pod) == {"mutate.plane-guard.io", "validate.plane-guard.io"}
    assert called_for(namespace_labels("plane", "audit"), plain_pod) == {"audit.mutate.plane-guard.io", "audit.validate.plane-guard.io"}
    for value in (None, "", "true", "disabled", "Enabled"):
        assert called_for(namespace_labels("plane", value), plain_pod) == set(), value


@pytest.mark.parametrize("namespace", ["kube-system", "kube-node-lease", conventions.SERVICE_NAMESPACE])
def test_system_and_own_namespaces_are_never_called(namespace: str) -> None:
    for mode in conventions.NAMESPACE_MODES:
        assert called_for(namespace_labels(namespace, mode), {}) == set()


def test_pods_opt_out_with_the_label() -> None:
    namespace = namespace_labels("plane", "enabled")
    for value in conventions.OPT_OUT_VALUES:
        assert called_for(namespace, {conventions.INJECT: value}) == set(), value
    for value in ("enabled", "true", "audit", "yes"):
        assert called_for(namespace, {conventions.INJECT: value}) == {"mutate.plane-guard.io", "validate.plane-guard.io"}


def test_selector_evaluator_follows_kubernetes_rules() -> None:
    assert selects({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["x"]}]}, {})
    assert not selects({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]}]}, {})
    assert selects({"matchLabels": {"a": "x"}}, {"a": "x", "b": "y"})
    assert not selects({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": "1"})


# --- matchConditions (CEL) -------------------------------------------------------------------------------

#: Images of the stock charts (plane-deployment.md) and how registries and pins spell them.
PLANE_IMAGES = [
    "makeplane/backend-commercial:v2.6.3",
    "artifacts.plane.so/makeplane/backend-commercial:v2.6.3",
    "registry.plane.tools/plane/backend-enterprise:v2.1.0",
    "makeplane/plane-backend:v0.28.0",
    "docker.io/makeplane/plane-backend:stable",
    "makeplane/plane-backend",
    "registry.example.com:5000/mirror/makeplane/plane-backend:v1@sha256:" + "a" * 64,
    "registry.plane.tools/plane/backend-enterprise@sha256:" + "b" * 64,
]
OTHER_IMAGES = [
    "nginx:1.27",
    "makeplane/plane-frontend:v0.28.0",
    "makeplane/plane-backend-migrator:v1",
    "registry.plane.tools/plane/web-enterprise:v2.1.0",
    "example.com/plane-backend/tools:1",  # plane-backend is a path element here, not the repository name
    "ghcr.io/plane-guard/plane-guard:0.1.0",
    "rabbitmq:3.13-management",
]


@functools.lru_cache(maxsize=1)
def compiled_conditions() -> list[tuple[str, Any]]:
    env = cel.NewEnv(variables={name: cel.Type.DYN for name in ("object", "oldObject", "request", "authorizer")})
    out = []
    for _, hook in all_webhooks():
        assert hook["matchConditions"], hook["name"]
        for condition in hook["matchConditions"]:
            out.append((hook["name"], env.compile(condition["expression"])))
    return out


def admitted(obj: Any) -> bool:
    """Whether every webhook's matchConditions let the object through (they must all agree)."""
    results = set()
    for name, expression in compiled_conditions():
        value = expression.eval(data={"object": obj, "oldObject": None}).plain_value()
        assert isinstance(value, bool), (name, value)  # an error or non-bool would make the call fail
        results.add(value)
    assert len(results) == 1, "the four webhooks must select the same pods"
    return results.pop()


def pod(*images: str, init: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)],
                     "initContainers": [{"name": f"i{i}", "image": image} for i, image in enumerate(init)]}}


def test_match_conditions_are_identical_everywhere() -> None:
    conditions = {yaml.safe_dump(hook["matchConditions"]) for _, hook in all_webhooks()}
    assert len(conditions) == 1


@pytest.mark.parametrize("image", PLANE_IMAGES)
def test_plane_backend_images_reach_the_webhook(image: str) -> None:
    assert admitted(pod(image))
    assert admitted(pod("busybox:1.36", image))  # any container of the pod


@pytest.mark.parametrize("image", OTHER_IMAGES)
def test_other_images_are_admitted_without_a_call(image: str) -> None:
    assert not admitted(pod(image))
    assert not admitted(pod(image, init=("makeplane/plane-backend:v1",)))  # only spec.containers count


@pytest.mark.parametrize("obj", [
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
    {"apiVersion": "v1", "kind": "Pod", "spec": {}},
    {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": []}},
    {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "no-image"}]}},
    {"apiVersion": "v1", "kind": "ConfigMap", "data": {"image": "makeplane/plane-backend:v1"}},
    None,
])
def test_match_conditions_are_safe_on_missing_fields(obj: Any) -> None:
    assert admitted(obj) is False


def test_match_conditions_agree_with_the_default_policy() -> None:
    """Every image the CEL filter lets through is one the default policy's roles can match, and the
    stock Plane images pass both: the filter never hides a Plane pod from the policy."""
    policy = yaml.safe_load((REPO / "webhook" / "core" / "default_policy.yaml").read_text())
    patterns = [re.compile(p) for role in policy["roles"].values() for p in role["match"]["images"]]
    assert patterns
    for image in PLANE_IMAGES:
        assert any(p.search(image) for p in patterns), image
    for image in OTHER_IMAGES:
        if admitted(pod(image)):
            assert any(p.search(image) for p in patterns), image


# --- the server and the certificates -----------------------------------------------------------------------


def example_review(uid: str) -> dict[str, Any]:
    """An AdmissionReview for a pod of the example Plane API Deployment, as the API server sends it."""
    (api,) = [d for d in render("examples") if d["kind"] == "Deployment" and d["metadata"]["name"] == "plane-api-wl"]
    template = api["spec"]["template"]
    obj = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {**template["metadata"], "generateName": "plane-api-wl-5d8c9b7f6-", "namespace": "plane"},
           "spec": template["spec"]}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "namespace": "plane", "operation": "CREATE", "object": obj, "dryRun": False}}


class InstalledApp:
    """The server app, created with the arguments the target's Deployment passes and the policy
    file from the ConfigMap (its in-cluster path replaced by the file in the repo); requests go
    straight to the ASGI app."""

    def __init__(self, target: str) -> None:
        from webhook import cli
        from webhook.serve import app as server
        from webhook.serve.settings import Settings

        args = serve_args(target)
        args.policy = str(POLICY_COPY)
        self.app = server.create_app(cli._options(Settings, args))

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://plane-guard") as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(send())

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)


def test_every_configured_path_is_served() -> None:
    """POST an AdmissionReview to each path of the webhook configurations: each answers it, and
    the path's mode (enabled mutates, audit only reports) is what the configuration means."""
    client = InstalledApp("overlays/self-signed")
    for kind, (_, paths) in KINDS.items():
        configured = {hook["clientConfig"]["service"]["path"] for hook in configuration(kind)["webhooks"]}
        assert configured == set(paths.values())
    for mode, path in [*KINDS["MutatingWebhookConfiguration"][1].items(), *KINDS["ValidatingWebhookConfiguration"][1].items()]:
        uid = f"uid-{mode}-{path.strip('/').replace('/', '-')}"
        response = client.post(path, json=example_review(uid))
        assert response.status_code == 200, (path, response.text)
        answer = response.json()["response"]
        assert answer["uid"] == uid and answer["allowed"] is True, (path, answer)
        if path == conventions.PATH_MUTATE:
            assert answer.get("patchType") == "JSONPatch" and answer.get("patch"), "enabled mode must mutate"
        else:
            assert not answer.get("patch"), f"{path} must not change the pod"
    assert client.get(conventions.PATH_HEALTHZ).status_code == 200
    # Not ready here (no certificate, plain HTTP), but routed: 503, not 404.
    assert client.get(conventions.PATH_READYZ).status_code in (200, 503)
    assert client.post("/not-a-path", json={}).status_code == 404


def test_audit_only_overlay_never_mutates() -> None:
    client = InstalledApp("overlays/audit-only")
    for path in (conventions.PATH_MUTATE, conventions.PATH_MUTATE_AUDIT):
        answer = client.post(path, json=example_review("uid-audit-only")).json()["response"]
        assert answer["allowed"] is True and not answer.get("patch"), (path, answer)


def dns_names(certificate: x509.Certificate) -> set[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName))


def test_generated_certificate_names_match_service_and_cert_manager(tmp_path) -> None:
    result = run_cli("certs", "generate", "--out", str(tmp_path / "certs"),
                     "--service", conventions.SERVICE_NAME, "--namespace", conventions.SERVICE_NAMESPACE)
    assert result.returncode == 0, result.stderr
    generated = dns_names(x509.load_pem_x509_certificate((tmp_path / "certs" / "tls.crt").read_bytes()))
    (certificate,) = [d for d in render("overlays/cert-manager") if d["kind"] == "Certificate"]
    assert set(certificate["spec"]["dnsNames"]) == generated
    assert generated <= set(SERVICE_NAMES)
    # The name the API server dials for a service reference.
    assert f"{conventions.SERVICE_NAME}.{conventions.SERVICE_NAMESPACE}.svc" in generated


def test_cert_manager_overlay_wires_certificate_secret_and_ca_injection() -> None:
    docs = render("overlays/cert-manager")
    (certificate,) = [d for d in docs if d["kind"] == "Certificate"]
    (issuer,) = [d for d in docs if d["kind"] == "Issuer"]
    spec = certificate["spec"]
    assert spec["secretName"] == conventions.TLS_SECRET
    assert spec["dnsNames"] == SERVICE_NAMES
    assert (spec["issuerRef"]["kind"], spec["issuerRef"]["name"]) == ("Issuer", issuer["metadata"]["name"])
    assert certificate["metadata"]["namespace"] == issuer["metadata"]["namespace"] == conventions.SERVICE_NAMESPACE
    source = f"{certificate['metadata']['namespace']}/{certificate['metadata']['name']}"
    for kind in KINDS:
        annotations = configuration(kind, "overlays/cert-manager")["metadata"].get("annotations", {})
        assert annotations.get("cert-manager.io/inject-ca-from") == source
    for kind in KINDS:  # and only there
        for target in ("base", "overlays/self-signed"):
            assert "cert-manager.io/inject-ca-from" not in configuration(kind, target)["metadata"].get("annotations", {})
