"""The webhook Deployment, its Service, PDB, NetworkPolicy and RBAC agree with the code.

Names, ports and paths come from ``webhook.core.conventions``; the server arguments are parsed with
the real CLI parser, so a flag the CLI does not know, or a mounted path the arguments do not
use, fails here rather than in a crash-looping pod.
"""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.install.conftest import INSTALLABLE, REPO, TARGETS, deployment, find, one, render, serve_args, webhook_container
from webhook import __version__, cli
from webhook.core import conventions
from webhook.core.policy import Runtime

IMAGE = f"ghcr.io/plane-guard/plane-guard:{__version__}"
RUNTIME_IMAGE = f"ghcr.io/plane-guard/plane-guard-runtime:{__version__}"
WEBHOOK_LABELS = {"app.kubernetes.io/name": "plane-guard", "app.kubernetes.io/component": "webhook"}


def mount_of(pod_spec: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume a file path inside the container comes from."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        if PurePosixPath(path).is_relative_to(mount["mountPath"]):
            return volumes[mount["name"]]
    pytest.fail(f"{path} is not on any volume of container {container['name']}")


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    matches = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    assert matches, f"no container port named {port}"
    return matches[0]


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec plane-guard itself runs (Deployment, Job, CronJob)."""
    specs = []
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            specs.append((f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            specs.append((f"CronJob/{doc['metadata']['name']}", doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


# --- the server: arguments, ports, probes, volumes -------------------------------------------------


def test_server_arguments_parse_and_use_the_mounted_files() -> None:
    args = serve_args()
    spec = deployment()["spec"]["template"]["spec"]
    container = webhook_container()
    assert args.port == conventions.CONTAINER_PORT
    assert args.mode == "enforce"
    assert args.on_error == "allow"  # never block a pod on an internal error
    tls = [mount_of(spec, container, path) for path in (args.cert_file, args.key_file)]
    for volume in tls:
        assert volume["secret"]["secretName"] == conventions.TLS_SECRET
        # Not optional: the pod waits for the Secret instead of starting without TLS.
        assert volume["secret"].get("optional", False) is False
    # Keys of a kubernetes.io/tls Secret, as cert-manager and `certs bootstrap` write them.
    assert PurePosixPath(args.cert_file).name == "tls.crt"
    assert PurePosixPath(args.key_file).name == "tls.key"
    policy_volume = mount_of(spec, container, args.policy)
    configmap = one(render("base"), "ConfigMap", policy_volume["configMap"]["name"])
    assert PurePosixPath(args.policy).name in configmap["data"]


def test_mounts_are_directories_so_renewals_reach_the_pod() -> None:
    # subPath mounts are never updated by the kubelet: a renewed certificate would not arrive.
    for mount in webhook_container()["volumeMounts"]:
        assert "subPath" not in mount and "subPathExpr" not in mount, mount


def test_container_port_service_and_network_policy_agree() -> None:
    docs = render("base")
    container = webhook_container()
    service = one(docs, "Service", conventions.SERVICE_NAME)
    assert service["metadata"]["namespace"] == conventions.SERVICE_NAMESPACE
    (port,) = service["spec"]["ports"]
    assert port["port"] == conventions.SERVICE_PORT
    assert resolve_port(container, port["targetPort"]) == conventions.CONTAINER_PORT
    assert port.get("protocol", "TCP") == "TCP"
    assert [p["containerPort"] for p in container["ports"]] == [conventions.CONTAINER_PORT]

    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector.items() <= pod_labels.items()
    assert selector == WEBHOOK_LABELS  # the certificate Job's pods must not be endpoints

    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    allowed = [p for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert [resolve_port(container, p["port"]) for p in allowed] == [conventions.CONTAINER_PORT]
    assert all(p.get("protocol", "TCP") == "TCP" for p in allowed)

    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] == 1 < deployment()["spec"]["replicas"]


def test_probes_hit_the_health_paths_over_https() -> None:
    container = webhook_container()
    for probe, path in (("livenessProbe", conventions.PATH_HEALTHZ), ("readinessProbe", conventions.PATH_READYZ)):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert get["scheme"] == "HTTPS"
        assert resolve_port(container, get["port"]) == conventions.CONTAINER_PORT


def test_deployment_shape() -> None:
    dep = deployment()
    assert dep["metadata"]["namespace"] == conventions.SERVICE_NAMESPACE
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = dep["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False  # the server never calls the API
    assert spec["serviceAccountName"] == conventions.SERVICE_NAME
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys
    for constraint in spec["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"] == WEBHOOK_LABELS
    resources = webhook_container()["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]


@pytest.mark.parametrize("target", INSTALLABLE)
def test_every_plane_guard_pod_is_locked_down(target: str) -> None:
    specs = pod_specs(render(target))
    assert specs
    for name, spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in spec.get("initContainers", []) + spec["containers"]:
            sc = container["securityContext"]
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, (name, uid)
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), name
            assert sc.get("privileged", False) is False, name
            assert sc.get("seccompProfile", pod_sc["seccompProfile"])["type"] == "RuntimeDefault", name
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], name
            assert container["image"] == IMAGE, name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name


def test_namespace_enforces_the_restricted_pod_security_profile() -> None:
    namespace = one(render("base"), "Namespace", conventions.SERVICE_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_namespaced_objects_live_in_plane_guard_namespace() -> None:
    for target in INSTALLABLE:
        for doc in render(target):
            if doc["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding") or doc["kind"].endswith("WebhookConfiguration"):
                assert "namespace" not in doc["metadata"], doc["metadata"]
            else:
                assert doc["metadata"]["namespace"] == conventions.SERVICE_NAMESPACE, (target, doc["kind"])


# --- images and entry commands -----------------------------------------------------------------------


def test_one_image_everywhere() -> None:
    """Server and certificate Job/CronJob use one image; Plane pods' init container its runtime image, same version."""
    images = set()
    for target in INSTALLABLE:
        for _, spec in pod_specs(render(target)):
            images |= {c["image"] for c in spec["containers"] + spec.get("initContainers", [])}
    assert images == {IMAGE}
    default_policy = yaml.safe_load((REPO / "webhook" / "core" / "default_policy.yaml").read_text())
    assert default_policy["runtime"]["image"] == RUNTIME_IMAGE == Runtime().image
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == __version__


def test_entry_command_is_the_console_script() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["plane-guard"] == "webhook.cli:main"
    assert cli.main is not None
    # The subcommands the manifests run exist in the CLI.
    assert webhook_container()["command"] == ["plane-guard", "serve"]
    for target in ("overlays/self-signed",):
        for name, spec in pod_specs(render(target)):
            if name.startswith(("Job/", "CronJob/")):
                assert spec["containers"][0]["command"] == ["plane-guard", "certs", "bootstrap"], name


def test_audit_only_overlay_runs_every_namespace_in_audit_mode() -> None:
    assert serve_args("overlays/audit-only").mode == "audit"
    for target in ("overlays/self-signed", "overlays/cert-manager"):
        assert serve_args(target).mode == "enforce"
    # Apart from the mode, the server is started the same way.
    audit = webhook_container("overlays/audit-only")["args"]
    assert [a for a in audit if not a.startswith("--mode")] == webhook_container("overlays/self-signed")["args"]


# --- certificate bootstrap: Job, CronJob and RBAC line up ----------------------------------------------


def bootstrap_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = [(n, s) for n, s in pod_specs(render("overlays/self-signed")) if not n.startswith("Deployment/")]
    assert {n.split("/")[0] for n, _ in specs} == {"Job", "CronJob"}
    return specs


def test_bootstrap_job_arguments_are_the_conventions() -> None:
    for name, spec in bootstrap_specs():
        container = spec["containers"][0]
        args = cli._parser().parse_args([*container["command"][1:], *container["args"]])
        assert (args.command, args.certs_command) == ("certs", "bootstrap"), name
        assert args.service == conventions.SERVICE_NAME
        assert args.namespace == conventions.SERVICE_NAMESPACE
        assert args.secret == conventions.TLS_SECRET
        assert args.mutating_webhook == conventions.MUTATING_WEBHOOK_CONFIGURATION
        assert args.validating_webhook == conventions.VALIDATING_WEBHOOK_CONFIGURATION
        assert 0 < args.renew_before_days < args.days
        assert spec["serviceAccountName"] == conventions.SERVICE_NAME
        assert spec.get("automountServiceAccountToken", True) is True  # it needs the API
        assert spec["restartPolicy"] in ("OnFailure", "Never")
    (job_spec,), (cron_spec,) = ([s for n, s in bootstrap_specs() if n.startswith(k)] for k in ("Job/", "CronJob/"))
    assert job_spec == cron_spec  # the renewal runs exactly what the first install ran


def rbac_rules(docs: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rules granted to the plane-guard ServiceAccount, by (kind of role, namespace or '')."""
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    granted: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for binding in docs:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": conventions.SERVICE_NAME, "namespace": conventions.SERVICE_NAMESPACE}
        ]
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]  # KeyError: binding to a role that is not installed
        scope = binding["metadata"].get("namespace", "")
        granted.setdefault((ref["kind"], scope), []).extend(role["rules"])
    return granted


def test_rbac_is_exactly_what_bootstrap_needs() -> None:
    docs = render("overlays/self-signed")
    one(docs, "ServiceAccount", conventions.SERVICE_NAME)
    granted = rbac_rules(docs)
    assert set(granted) == {("Role", conventions.SERVICE_NAMESPACE), ("ClusterRole", "")}
    secret_rules = granted[("Role", conventions.SERVICE_NAMESPACE)]
    named = [r for r in secret_rules if r.get("resourceNames")]
    unnamed = [r for r in secret_rules if not r.get("resourceNames")]
    for rule in secret_rules:
        assert rule["apiGroups"] == [""] and rule["resources"] == ["secrets"], rule
    assert [r["resourceNames"] for r in named] == [[conventions.TLS_SECRET]]
    assert set(named[0]["verbs"]) == {"get", "patch"}
    # create cannot be limited by name; nothing else may be granted without a name.
    assert [r["verbs"] for r in unnamed] == [["create"]]

    cluster_rules = granted[("ClusterRole", "")]
    by_resource = {tuple(r["resources"]): r for r in cluster_rules}
    assert set(by_resource) == {("mutatingwebhookconfigurations",), ("validatingwebhookconfigurations",)}
    assert by_resource[("mutatingwebhookconfigurations",)]["resourceNames"] == [conventions.MUTATING_WEBHOOK_CONFIGURATION]
    assert by_resource[("validatingwebhookconfigurations",)]["resourceNames"] == [conventions.VALIDATING_WEBHOOK_CONFIGURATION]
    for rule in cluster_rules:
        assert rule["apiGroups"] == ["admissionregistration.k8s.io"]
        assert set(rule["verbs"]) == {"get", "patch"}
    for rule in secret_rules + cluster_rules:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


def test_cert_manager_overlay_grants_nothing() -> None:
    docs = render("overlays/cert-manager")
    assert not [d for d in docs if d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
    assert not find(docs, "Job") and not find(docs, "CronJob")


def test_every_target_is_rendered_by_the_tests() -> None:
    """A new overlay directory gets tested too (or this fails until it is added to TARGETS)."""
    on_disk = {f"overlays/{p.parent.name}" for p in (REPO / "manifests" / "overlays").glob("*/kustomization.yaml")}
    assert on_disk == {t for t in TARGETS if t.startswith("overlays/")}
    assert Path(TARGETS["base"], "kustomization.yaml").exists()
