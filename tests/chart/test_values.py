"""The chart's values: each documented and typed, bad ones refused with a message that names
them, the policy checked by ``plane-guard policy check`` and rolled out by a checksum."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.support import CHART, CI_VALUES, NAMESPACE, RELEASE, helm, only, policy_text, template
from tests.install.conftest import run_cli
from webhook.core.policy import SECRET_NAME, load_policy

VALUES = CHART / "values.yaml"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
EMBEDDED = CHART / "files" / "policy.yaml"


def _leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted path -> value, descending into mappings the schema describes property by property."""
    found = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        found[path] = value
        if isinstance(value, dict) and value:
            found.update(_leaves(value, path + "."))
    return found


def _schema_at(path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = SCHEMA
    for part in path.split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


def _described(path: str) -> bool:
    """Whether the schema types this value property by property (else it is inside a free-form
    Kubernetes object such as securityContext, which the schema takes whole)."""
    parent = _schema_at(path.rsplit(".", 1)[0]) if "." in path else SCHEMA
    return parent is not None and "properties" in parent


def test_every_value_is_typed_and_described_in_the_schema() -> None:
    values = yaml.safe_load(VALUES.read_text())
    checked = 0
    for path in _leaves(values):
        if not _described(path):
            continue
        node = _schema_at(path)
        assert node is not None, f"values.yaml has {path}, which values.schema.json does not type"
        assert node.get("type") or node.get("enum"), f"{path} has no type in values.schema.json"
        assert node.get("description"), f"{path} has no description in values.schema.json"
        checked += 1
    assert checked > 50


def _value_lines() -> dict[str, int]:
    """Dotted path of each key in values.yaml -> its line index (block style, two-space indents)."""
    stack: list[tuple[int, str]] = []
    paths = {}
    for number, line in enumerate(VALUES.read_text().splitlines()):
        found = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not found or line.lstrip().startswith("#"):
            continue
        indent = len(found.group(1))
        stack = [(i, k) for i, k in stack if i < indent]
        stack.append((indent, found.group(2)))
        paths[".".join(k for _, k in stack)] = number
    return paths


def test_every_value_is_commented_in_values_yaml() -> None:
    """Each value the schema types one by one has a comment right above it; a section (a mapping
    the schema describes key by key) is documented through its keys."""
    lines = VALUES.read_text().splitlines()
    for path, number in _value_lines().items():
        node = _schema_at(path)
        if not _described(path) or (node and "properties" in node):
            continue
        assert lines[number - 1].lstrip().startswith("#"), f"values.yaml: {path} (line {number + 1}) has no comment above it"
    assert set(yaml.safe_load(VALUES.read_text())) == set(SCHEMA["required"]) | {"nameOverride", "fullnameOverride", "nodeSelector",
                                                                                 "tolerations", "affinity", "priorityClassName", "logLevel"}


def test_the_schema_allows_nothing_undeclared() -> None:
    done = helm("template", RELEASE, str(CHART), "--set", "replica=3")
    assert done.returncode != 0 and "replica" in done.stderr and "Additional property replica is not allowed" in done.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("mode=foo", 'mode: mode must be one of the following: "enforce", "audit"'),
        ("webhooks.failurePolicy=Maybe", 'webhooks.failurePolicy: webhooks.failurePolicy must be one of the following: "Ignore", "Fail"'),
        ("webhooks.timeoutSeconds=31", "webhooks.timeoutSeconds: Must be less than or equal to 30"),
        ("replicas=0", "replicas: Must be greater than or equal to 1"),
        ("certificates.source=vault", "certificates.source: certificates.source must be one of the following"),
        ("images.runtime.digest=latest", "images.runtime.digest: Does not match pattern"),
        ("images.runtime.pullSecrets={Mirror}", "images.runtime.pullSecrets.0: Does not match pattern"),
        ("images.runtime.pullSecrets={a,a}", "images.runtime.pullSecrets: array items[0,1] must be unique"),
        ("restart.rbac.create=maybe", "restart.rbac.create: Invalid type. Expected: boolean, given: string"),
        ("restart.rbac.enabled=true", "restart.rbac: Additional property enabled is not allowed"),
    ],
)
def test_the_schema_refuses_a_bad_value_and_names_it(setting: str, message: str) -> None:
    done = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set", setting)
    assert done.returncode != 0
    assert "values don't meet the specifications of the schema" in done.stderr
    assert message in done.stderr, done.stderr


def test_an_existing_secret_needs_its_name_and_ca() -> None:
    done = helm("template", RELEASE, str(CHART), "--set", "certificates.source=existingSecret")
    assert done.returncode != 0
    assert "certificates.existingSecret.name: String length must be greater than or equal to 1" in done.stderr
    assert "certificates.existingSecret.caBundle: String length must be greater than or equal to 1" in done.stderr


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "default")
def test_plane_guard_policy_check_accepts_the_rendered_policy(values: Path | None, tmp_path: Path) -> None:
    """The policy the webhook will read, checked with the configurations it will run under: the
    check also compares the policy's images with their matchConditions."""
    docs = template(*([values] if values else []))
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(docs))
    configurations = tmp_path / "webhooks.yaml"
    configurations.write_text(yaml.safe_dump_all(
        [only(docs, "MutatingWebhookConfiguration"), only(docs, "ValidatingWebhookConfiguration")]))
    done = run_cli("policy", "check", str(policy), "--webhook-configuration", str(configurations))
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


def test_plane_guard_policy_check_refuses_a_bad_inline_policy(tmp_path: Path) -> None:
    """The check can fail: the chart passes on a policy the server would refuse, and the check says so."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(EMBEDDED.read_text().replace("wrapEntrypoint: true", "wrapEntrypoint: maybe", 1))
    docs = _with_policy(bad)
    rendered = tmp_path / "policy.yaml"
    rendered.write_text(policy_text(docs))
    assert rendered.read_text() == bad.read_text()
    done = run_cli("policy", "check", str(rendered))
    assert done.returncode == 2 and "wrapEntrypoint" in done.stderr


def _with_policy(path: Path, *more: str) -> list[dict[str, Any]]:
    done = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--set-file", f"policy={path}", *more)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _checksum(docs: list[dict[str, Any]]) -> str:
    return only(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]


def test_a_policy_change_changes_the_pod_templates_checksum(tmp_path: Path) -> None:
    default = template()
    changed = tmp_path / "policy.yaml"
    changed.write_text(EMBEDDED.read_text().replace("publishTimeoutSeconds: 10", "publishTimeoutSeconds: 20", 1))
    assert changed.read_text() != EMBEDDED.read_text()
    edited = _with_policy(changed)
    assert policy_text(edited) == changed.read_text()
    assert _checksum(edited) != _checksum(default)
    # The same text given inline is the default: nothing rolls.
    assert _checksum(_with_policy(EMBEDDED)) == _checksum(default)
    # Other values leave it alone.
    assert _checksum(template(sets=("replicas=3",))) == _checksum(default)
    # It follows the ConfigMap's content, not the values' spelling.
    assert _checksum(default) == hashlib.sha256(policy_text(default).encode()).hexdigest()


def test_images_runtime_is_written_into_the_policy_without_reordering_it() -> None:
    docs = template(CHART / "ci" / "existing-secret-values.yaml")
    text = policy_text(docs)
    original = EMBEDDED.read_text()
    changed = [(a, b) for a, b in zip(original.splitlines(), text.splitlines()) if a != b]
    assert len(text.splitlines()) == len(original.splitlines())
    assert changed == [("  image: ghcr.io/plane-guard/plane-guard-runtime:0.1.0",
                        "  image: registry.internal.example/plane-guard/plane-guard-runtime@sha256:" + "0123456789abcdef" * 4),
                       ("  imagePullSecrets: []", "  imagePullSecrets: [internal-registry]")]
    # The roles stay in the order they are tried in.
    path = CHART / "files" / "policy.yaml"
    assert list(yaml.safe_load(text)["roles"]) == list(load_policy(path).roles)
    webhook = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert webhook["containers"][0]["image"] == "registry.internal.example/plane-guard/plane-guard:0.1.0"
    assert webhook["imagePullSecrets"] == [{"name": "internal-registry"}]


def test_a_policy_without_a_runtime_section_gets_one(tmp_path: Path) -> None:
    text = EMBEDDED.read_text()
    start = text.index("\nruntime:\n")
    end = text.index("\n# Checks of the final pod")
    short = tmp_path / "policy.yaml"
    short.write_text(text[:start] + text[end:])
    rendered = policy_text(_with_policy(short, "--set", "images.runtime.tag=9.9.9", "--set", "images.runtime.pullPolicy=Always"))
    runtime = yaml.safe_load(rendered)["runtime"]
    assert runtime == {"image": "ghcr.io/plane-guard/plane-guard-runtime:9.9.9", "imagePullPolicy": "Always"}
    (tmp_path / "rendered.yaml").write_text(rendered)
    assert run_cli("policy", "check", str(tmp_path / "rendered.yaml")).returncode == 0


def test_runtime_pull_secrets_are_written_into_the_policy_where_it_has_none(tmp_path: Path) -> None:
    """A policy written before the field existed gets the line after ``image:``; a policy that has
    the line gets it replaced; empty values leave the policy's own list alone."""
    text = EMBEDDED.read_text()
    older = tmp_path / "older.yaml"
    older.write_text(re.sub(r"(?m)^  imagePullSecrets: \[\]\n", "", text, count=1))
    assert "imagePullSecrets" not in yaml.safe_load(older.read_text())["runtime"]
    for path in (older, EMBEDDED):
        rendered = policy_text(_with_policy(path, "--set", "images.runtime.pullSecrets={mirror,mirror-2}"))
        assert yaml.safe_load(rendered)["runtime"]["imagePullSecrets"] == ["mirror", "mirror-2"]
        (tmp_path / "rendered.yaml").write_text(rendered)
        assert load_policy(tmp_path / "rendered.yaml").runtime.image_pull_secrets == ["mirror", "mirror-2"]
    own = tmp_path / "own.yaml"
    own.write_text(text.replace("  imagePullSecrets: []", "  imagePullSecrets: [plane-registry]", 1))
    assert yaml.safe_load(policy_text(_with_policy(own)))["runtime"]["imagePullSecrets"] == ["plane-registry"]
    short = tmp_path / "short.yaml"
    short.write_text(text[:text.index("\nruntime:\n")] + text[text.index("\n# Checks of the final pod"):])
    rendered = policy_text(_with_policy(short, "--set", "images.runtime.pullSecrets={mirror}"))
    assert yaml.safe_load(rendered)["runtime"]["imagePullSecrets"] == ["mirror"]


def test_runtime_pull_secrets_in_a_list_the_chart_cannot_edit_are_refused(tmp_path: Path) -> None:
    block = tmp_path / "policy.yaml"
    block.write_text(EMBEDDED.read_text().replace("  imagePullSecrets: []", "  imagePullSecrets:\n    - plane-registry", 1))
    done = helm("template", RELEASE, str(CHART), "--set-file", f"policy={block}", "--set", "images.runtime.pullSecrets={mirror}")
    assert done.returncode != 0
    assert "could not set the policy's runtime.imagePullSecrets to [mirror]" in done.stderr and "on one line" in done.stderr


def test_the_schema_and_the_policy_agree_on_secret_names() -> None:
    """One rule for a Secret's name: the schema's pattern is the policy's."""
    items = SCHEMA["properties"]["images"]["properties"]["runtime"]["properties"]["pullSecrets"]["items"]
    assert items["pattern"] == SECRET_NAME.pattern


def test_a_runtime_section_the_chart_cannot_edit_is_refused_with_what_to_do(tmp_path: Path) -> None:
    text = EMBEDDED.read_text()
    flow = tmp_path / "policy.yaml"
    start = text.index("\nruntime:\n")
    end = text.index("\n# Checks of the final pod")
    flow.write_text(text[:start] + "\nruntime: {image: ghcr.io/plane-guard/plane-guard-runtime:0.1.0}\n" + text[end:])
    done = helm("template", RELEASE, str(CHART), "--set-file", f"policy={flow}", "--set", "images.runtime.tag=1.0.0")
    assert done.returncode != 0
    assert "could not set the policy's runtime.image to ghcr.io/plane-guard/plane-guard-runtime:1.0.0" in done.stderr
    assert "one per line" in done.stderr


def test_a_policy_that_is_not_yaml_is_refused(tmp_path: Path) -> None:
    broken = tmp_path / "policy.yaml"
    broken.write_text("roles: [unclosed\n")
    done = helm("template", RELEASE, str(CHART), "--set-file", f"policy={broken}")
    assert done.returncode != 0 and "policy is not valid YAML" in done.stderr and "plane-guard policy check" in done.stderr


def test_audit_mode_is_one_argument_of_serve() -> None:
    args = only(template(CHART / "ci" / "audit-values.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "--mode=audit" and "--mode=audit" not in only(template(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_scheduling_values_reach_the_pods() -> None:
    docs = template(CHART / "ci" / "monitoring-values.yaml")
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "podAntiAffinity" in pod["affinity"]
    assert only(docs, "Deployment")["spec"]["replicas"] == 3
    assert only(docs, "NetworkPolicy")["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    jobs = [d for d in docs if d["kind"] == "Job"]
    assert jobs and jobs[0]["spec"]["template"]["spec"]["priorityClassName"] == "system-cluster-critical"
