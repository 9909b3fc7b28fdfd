"""``plane-guard preview`` on workload kinds, multi-document YAML, stdin, diff and audit.

Reading odd input is covered in ``test_preview_input``; ``--patch``, ``--diff`` and ``-n`` on
helm output in ``test_preview_output``."""

from __future__ import annotations

import json

import jsonpatch
import kubernetes_validate
import pytest
import yaml

from tests.core.preview_fixtures import expected_patch, preview, with_token
from tests.fixtures import golden
from webhook.core import conventions as names
from webhook.ops.preview import TEMPLATE_PATHS

POD = golden.load_input("api-envfrom-secret")
TEMPLATE = {"metadata": {"labels": POD["metadata"]["labels"]}, "spec": POD["spec"]}


def workload(kind: str) -> dict:
    template = json.loads(json.dumps(TEMPLATE))
    selector = {"matchLabels": {"app.name": "plane-plane-api"}}
    if kind == "CronJob":
        spec = {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {**template, "spec": {**template["spec"], "restartPolicy": "OnFailure"}}}}}
    elif kind == "Job":
        spec = {"template": {**template, "spec": {**template["spec"], "restartPolicy": "OnFailure"}}}
    elif kind == "StatefulSet":
        spec = {"selector": selector, "serviceName": "plane-api", "template": template}
    else:
        spec = {"selector": selector, "template": template}
    api = {"CronJob": "batch/v1", "Job": "batch/v1"}.get(kind, "apps/v1")
    return {"apiVersion": api, "kind": kind, "metadata": {"name": "plane-api-wl", "namespace": "plane"}, "spec": spec}


def template_of(document: dict) -> dict:
    node = document
    for part in TEMPLATE_PATHS[document["kind"]].split("/")[1:]:
        node = node[part]
    return node


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"])
def test_workload_templates_are_mutated_and_stay_valid(kind):
    result = preview("-f", "-", stdin=yaml.safe_dump(workload(kind)))
    assert result.returncode == 0, result.stderr
    mutated = yaml.safe_load(result.stdout)
    kubernetes_validate.validate(mutated, kubernetes_validate.latest_version(), strict=True)
    container = template_of(mutated)["spec"]["containers"][0]
    assert container["command"][:2] == ["/bin/sh", "/plane-guard/entrypoint.sh"]
    assert names.STATUS_ANNOTATION in template_of(mutated)["metadata"]["annotations"]
    assert f"{kind} plane/plane-api-wl (stdin:1): roles plane-api=api" in result.stderr


def test_multi_document_stream_keeps_every_document_in_order():
    documents = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plane-app-vars"}, "data": {"A": "1"}}, workload("Deployment"), POD]
    result = preview("-f", "-", stdin=yaml.safe_dump_all(documents))
    assert result.returncode == 0, result.stderr
    out = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in out] == ["ConfigMap", "Deployment", "Pod"]
    assert out[0] == documents[0]
    assert "ConfigMap plane-app-vars (stdin:1): no pod template; unchanged" in result.stderr


def test_patch_output_is_the_webhook_patch_and_applies(tmp_path):
    path = tmp_path / "pod.json"
    path.write_text(json.dumps(POD))
    result = preview("-f", str(path), "--patch")
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)
    assert entry["kind"] == "Pod" and entry["namespace"] == "plane" and entry["pod"] == ""
    assert entry["source"] == f"{path}:1"
    assert entry["patch"] == expected_patch(POD)
    # It applies to the pod the webhook receives: with the ServiceAccount token, which it keeps.
    patched = jsonpatch.apply_patch(with_token(POD), entry["patch"])
    assert patched["spec"]["containers"][0]["command"][0] == "/bin/sh"
    assert patched["spec"]["volumes"][0] == with_token(POD)["spec"]["volumes"][0]


def test_patch_of_an_untouched_pod_is_an_empty_array():
    foreign = json.loads(json.dumps(POD))
    foreign["spec"]["containers"][0]["image"] = "nginx:1.27"
    result = preview("-f", "-", "--patch", stdin=json.dumps(foreign))
    assert result.returncode == 0 and json.loads(result.stdout)[0]["patch"] == []


def test_diff_only_adds_lines_for_a_stock_pod():
    """The wrapper goes in front of the original command, so nothing of the user's is removed."""
    result = preview("-f", "-", "--diff", stdin=yaml.safe_dump(POD, sort_keys=False))
    assert result.returncode == 0
    removed = [line for line in result.stdout.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert removed == []
    added = [line[1:].strip() for line in result.stdout.splitlines() if line.startswith("+") and not line.startswith("+++")]
    assert "- /plane-guard/entrypoint.sh" in added and "- name: PLANE_GUARD_OVERRIDE_GUNICORN_MAX_REQUESTS" in added


def test_diff_and_summary_say_what_is_decided_at_container_start():
    result = preview("-f", "-", "--diff", stdin=yaml.safe_dump(POD, sort_keys=False))
    assert result.returncode == 0
    summary = result.stderr.splitlines()
    assert "  decided at container start in plane-api (replace: the policy's value replaces the container's own, and the container logs what it replaced): GUNICORN_MAX_REQUESTS, GUNICORN_MAX_REQUESTS_JITTER" in summary
    assert any(line.startswith("  decided at container start in plane-api (keep: ") and "CELERY_CONFIRM_PUBLISH" in line for line in summary)
    status = next(line for line in result.stdout.splitlines() if line.startswith("+") and names.STATUS_ANNOTATION in line)
    assert '"atStart":{"plane-api":{' in status and '"GUNICORN_MAX_REQUESTS":"replace"' in status


def test_why_a_workload_is_left_alone_is_said():
    migrator = {**POD, "spec": {**POD["spec"], "containers": [{**POD["spec"]["containers"][0], "command": ["./bin/docker-entrypoint-migrator.sh"]}]}}
    result = preview("-f", "-", stdin=yaml.safe_dump(migrator))
    assert result.returncode == 0 and yaml.safe_load(result.stdout) == migrator
    assert "unchanged (skipped-role)" in result.stderr
    assert "plane-api: role migrator: left unchanged: runs the database migrations" in result.stderr


def test_audit_label_reports_but_changes_nothing():
    result = preview("-f", "-", "--namespace-label", "audit", stdin=yaml.safe_dump(POD))
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout) == POD
    assert "would change" in result.stderr and "plane-api:entrypoint" in result.stderr
    patch = preview("-f", "-", "--namespace-label", "audit", "--patch", stdin=yaml.safe_dump(POD))
    assert [e["patch"] for e in json.loads(patch.stdout)] == [[]]


def test_namespace_not_opted_in_changes_nothing():
    result = preview("-f", "-", "--namespace-label", "none", "-n", "plane", stdin=yaml.safe_dump(POD))
    assert result.returncode == 0 and yaml.safe_load(result.stdout) == POD
    assert "plane is not opted in" in result.stderr


def test_a_bad_policy_is_reported_before_reading_input():
    result = preview("-f", "-", "--policy", "/nonexistent/p.yaml", stdin="")
    assert result.returncode == 2 and "cannot read the policy file" in result.stderr


def test_a_workload_rule_applies_to_a_deployment_by_its_own_name(tmp_path):
    from tests.core.test_mutation import WORKLOAD_RULES
    from webhook.core.policy import default_policy_text

    policy = tmp_path / "policy.yaml"
    policy.write_text(default_policy_text() + WORKLOAD_RULES)
    api, worker = workload("Deployment"), workload("Deployment")
    worker["metadata"]["name"] = "plane-worker-wl"
    result = preview("-f", "-", "--policy", str(policy), stdin=yaml.safe_dump_all([api, worker]))
    assert result.returncode == 0, result.stderr
    env = {
        document["metadata"]["name"]: {e["name"]: e.get("value") for e in template_of(document)["spec"]["containers"][0]["env"]}
        for document in yaml.safe_load_all(result.stdout)
    }
    assert env["plane-api-wl"][names.ENV_OVERRIDE_PREFIX + "GUNICORN_MAX_REQUESTS"] == "5000"
    assert env["plane-worker-wl"][names.ENV_OVERRIDE_PREFIX + "GUNICORN_MAX_REQUESTS"] == "0"
