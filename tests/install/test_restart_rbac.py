"""The optional RBAC of ``plane-guard restart`` (manifests/restart): only what the command needs,
bound to its own ServiceAccount, never to the webhook's, and in no overlay. The same rules are
exercised for real by tests/apiserver/test_restart.py, which runs the command as that account."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import yaml

from tests.install.conftest import INSTALLABLE, MANIFESTS, REPO, deployment, find, one, render
from tests.install.test_schemas import VERSIONS
from webhook import cli
from webhook.core import conventions
from webhook.ops import restart, status

ACCOUNT = {"kind": "ServiceAccount", "name": "plane-guard-restart", "namespace": conventions.SERVICE_NAMESPACE}
WEBHOOK_ACCOUNT = {"kind": "ServiceAccount", "name": conventions.SERVICE_NAME, "namespace": conventions.SERVICE_NAMESPACE}


def rules(docs: list[dict[str, Any]], kind: str) -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs granted by the one role of that kind."""
    found: dict[tuple[str, str], set[str]] = {}
    for rule in one(docs, kind, "plane-guard-restart")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


def test_the_cluster_role_grants_only_what_restart_needs() -> None:
    docs = render("restart")
    assert rules(docs, "ClusterRole") == {
        ("", "namespaces"): {"get", "list"},
        ("", "pods"): {"get", "list"},
        ("apps", "deployments"): {"get", "list", "patch"},
        ("apps", "statefulsets"): {"get", "list", "patch"},
        ("apps", "daemonsets"): {"get", "list", "patch"},
        ("apps", "replicasets"): {"get", "list"},
        ("policy", "poddisruptionbudgets"): {"get", "list"},
        ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): {"get"},
        ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): {"get"},
    }
    (configurations,) = [r for r in one(docs, "ClusterRole", "plane-guard-restart")["rules"] if r["apiGroups"] == ["admissionregistration.k8s.io"]]
    assert configurations["resourceNames"] == [conventions.MUTATING_WEBHOOK_CONFIGURATION]
    # The only write: the workloads a rollout restart patches, the kinds the command restarts.
    patched = {resource for (_, resource), verbs in rules(docs, "ClusterRole").items() if verbs - {"get", "list"}}
    assert patched == {f"{kind.lower()}s" for kind in restart.RESTARTABLE}
    for role in find(docs, "ClusterRole") + find(docs, "Role"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule


def test_the_role_in_the_webhook_namespace_reads_policy_and_service_but_no_secret() -> None:
    docs = render("restart")
    role = one(docs, "Role", "plane-guard-restart")
    assert role["metadata"]["namespace"] == conventions.SERVICE_NAMESPACE
    assert rules(docs, "Role") == {("", "configmaps"): {"get"}, ("", "services"): {"get"}, ("discovery.k8s.io", "endpointslices"): {"list"}}
    assert not [d for d in docs if d["kind"] in ("Role", "ClusterRole") and any("secrets" in r["resources"] for r in d["rules"])]


def test_bound_to_its_own_account_and_never_to_the_webhook_s() -> None:
    docs = render("restart")
    one(docs, "ServiceAccount", "plane-guard-restart")
    bindings = find(docs, "ClusterRoleBinding") + find(docs, "RoleBinding")
    assert {(b["kind"], b["roleRef"]["name"]) for b in bindings} == {("ClusterRoleBinding", "plane-guard-restart"), ("RoleBinding", "plane-guard-restart")}
    for binding in bindings:
        assert binding["subjects"] == [ACCOUNT]
        assert WEBHOOK_ACCOUNT not in binding["subjects"]


def test_no_overlay_installs_it_and_the_webhook_s_account_gets_no_part_of_it() -> None:
    for target in ("base", *INSTALLABLE):
        docs = render(target)
        assert not [d for d in docs if d["metadata"]["name"] == "plane-guard-restart"], target
        for role in find(docs, "ClusterRole") + find(docs, "Role"):
            for rule in role["rules"]:
                assert not {"patch", "update"} & set(rule["verbs"]) or not {"deployments", "statefulsets", "daemonsets"} & set(rule["resources"]), target


def test_the_status_reads_restart_relies_on_are_in_the_role() -> None:
    """Every kind restart lists is granted (status lists Jobs and CronJobs too; restart does not)."""
    granted = rules(render("restart"), "ClusterRole")
    for kind in restart.RESTARTABLE:
        assert {"get", "list"} <= granted[("apps", f"{kind.lower()}s")]
        assert status.WORKLOADS[kind] == "/apis/apps/v1"


def test_the_readme_s_cronjob_example_is_valid_and_runs_restart_as_its_account() -> None:
    """The documented follow-up after a policy change: a valid CronJob (strict schema), as the
    ServiceAccount of manifests/restart, that restarts without asking (a Job has no terminal)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Replace what is not guarded: `plane-guard restart`"):readme.index("## Emergency: turn it off")]
    (example,) = [block for block in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL) if "kind: CronJob" in block]
    cronjob = yaml.safe_load(example)
    kubernetes_validate.validate(cronjob, VERSIONS[0], strict=True)
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == ACCOUNT["name"] and cronjob["metadata"]["namespace"] == ACCOUNT["namespace"]
    (container,) = spec["containers"]
    args = cli._parser().parse_args(container["command"][1:])
    assert (args.command, args.yes, args.dry_run) == ("restart", True, False)
    assert container["image"] == deployment("overlays/self-signed")["spec"]["template"]["spec"]["containers"][0]["image"]
    # Admitted in the plane-guard namespace, whose Pod Security level is restricted.
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert f"kubectl apply -k {MANIFESTS.name}/restart" in section
