"""The runtime image's pull secrets (``runtime.imagePullSecrets``) on the real API server.

The ServiceAccount admission plugin gives a pod without ``imagePullSecrets`` those of its
ServiceAccount before any webhook runs; plane-guard then appends the policy's Secrets that are
still missing. A ``plane-guard serve`` with such a policy answers the installed webhook
configurations while this module runs (they are applied again afterwards). The pods are stored by
the server, so they passed its validation; nothing expected is taken from plane-guard's own code
except where the previewed patch is compared with the webhook's.
"""

from __future__ import annotations

import json

import jsonpatch
import pytest
import yaml

from tests.apiserver import install, plane
from tests.install.conftest import render, run_cli
from webhook.core import conventions
from webhook.core.mutation import mutate_pod
from webhook.core.policy import load_policy

ON, OFF, BARE = "plane-pull-on", "plane-pull-off", "plane-pull-bare"
MIRROR, REGISTRY = "runtime-mirror", "plane-registry"


def _account(secrets: list[str]) -> dict:
    account = plane.service_account()
    if secrets:
        account["imagePullSecrets"] = [{"name": name} for name in secrets]
    return account


@pytest.fixture(scope="module")
def webhook(control_plane, installed, tmp_path_factory):
    """The installed policy plus a runtime pull secret, served for the webhook configurations."""
    work = tmp_path_factory.mktemp("pull-secrets")
    document = yaml.safe_load(installed.policy_file.read_text())
    document["runtime"]["imagePullSecrets"] = [MIRROR]
    policy_file = work / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(document, sort_keys=False))
    configurations = [d for d in render("overlays/self-signed") if d["kind"] in install.WEBHOOK_KINDS]
    with install.local_webhook(work, configurations, policy_file, days=2) as local:
        try:
            control_plane.kubectl("apply", "-f", "-", input=install.stream(local.documents))
            for namespace, label, secrets in ((ON, "enabled", [REGISTRY]), (OFF, None, [REGISTRY]), (BARE, "enabled", [])):
                control_plane.create_namespace(namespace, {conventions.INJECT: label} if label else None)
                control_plane.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", _account(secrets))
            yield {"policy": load_policy(policy_file), "policy_file": policy_file}
        finally:
            installed_configurations = [d for d in installed.documents if d["kind"] in install.WEBHOOK_KINDS]
            control_plane.kubectl("apply", "-f", "-", input=install.stream(installed_configurations))


def _create(control_plane, namespace: str, name: str, secrets: list[str] | None = None) -> dict:
    body = plane.pod(plane.plane_template("ce", "worker"), name)
    if secrets is not None:
        body["spec"]["imagePullSecrets"] = [{"name": s} for s in secrets]
    return control_plane.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)


def _pull_secrets(pod: dict) -> list[str]:
    return [s["name"] for s in pod["spec"].get("imagePullSecrets") or []]


def _status(pod: dict) -> dict:
    return json.loads(pod["metadata"]["annotations"][conventions.STATUS_ANNOTATION])


def test_the_mirror_s_secret_comes_after_the_service_account_s(control_plane, webhook):
    pod = _create(control_plane, ON, "plane-worker-a")
    assert _pull_secrets(pod) == [REGISTRY, MIRROR]
    status = _status(pod)
    assert status["policy"] == webhook["policy"].digest and "pod:runtime-pull-secrets" in status["changed"]
    assert [c["name"] for c in pod["spec"]["initContainers"]] == [conventions.RUNTIME_INIT_CONTAINER]


def test_a_pod_whose_account_has_none_gets_the_mirror_s_alone(control_plane, webhook):
    assert _pull_secrets(_create(control_plane, BARE, "plane-worker-b")) == [MIRROR]


def test_a_pod_that_names_the_secret_itself_keeps_its_list(control_plane, webhook):
    """Its own list stands (the plugin does not add the account's either), with no second copy."""
    pod = _create(control_plane, ON, "plane-worker-c", [MIRROR, "other"])
    assert _pull_secrets(pod) == [MIRROR, "other"]
    assert "pod:runtime-pull-secrets" not in _status(pod)["changed"]


def test_a_namespace_that_is_not_opted_in_is_left_as_the_plugin_made_it(control_plane, webhook):
    pod = _create(control_plane, OFF, "plane-worker-d")
    assert _pull_secrets(pod) == [REGISTRY]
    assert conventions.STATUS_ANNOTATION not in (pod["metadata"].get("annotations") or {})


def test_preview_patch_appends_as_the_webhook_does(control_plane, webhook):
    """Preview, given the ServiceAccount, hands the webhook the pod the plugin makes: its patch, applied
    to the unguarded pod the server stored, gives the pull secrets of the guarded one."""
    unguarded = _create(control_plane, OFF, "plane-worker-e")
    guarded = _create(control_plane, ON, "plane-worker-e")
    manifest = plane.pod(plane.plane_template("ce", "worker"), "plane-worker-e")
    documents = [_account([REGISTRY]), manifest]
    result = run_cli("preview", "-f", "-", "--patch", "-n", ON, "--policy", str(webhook["policy_file"]),
                     input=yaml.safe_dump_all(documents))
    assert result.returncode == 0, result.stderr
    (entry,) = [e for e in yaml.safe_load(result.stdout) if e["kind"] == "Pod"]
    assert f"the imagePullSecrets of ServiceAccount {ON}/{plane.SERVICE_ACCOUNT}" in entry["appliesTo"]
    assert {"op": "add", "path": "/spec/imagePullSecrets/-", "value": {"name": MIRROR}} in entry["patch"]
    assert entry["patch"] == mutate_pod(unguarded, webhook["policy"]).patch
    assert _pull_secrets(jsonpatch.apply_patch(unguarded, entry["patch"])) == _pull_secrets(guarded) == [REGISTRY, MIRROR]
