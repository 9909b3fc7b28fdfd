"""One source for the Plane-image rule: the policy's ``match.images`` and the webhook configurations'
CEL ``matchConditions`` cannot disagree without ``plane-guard policy check`` saying so.

The CEL is evaluated by a real CEL implementation (cel-expr-python), as in test_webhooks.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from cel_expr_python import cel

from tests.install.conftest import REPO, run_cli
from tests.install.test_webhooks import OTHER_IMAGES, PLANE_IMAGES, all_webhooks, pod
from tools import match_conditions
from webhook.core.policy import MATCH_CONDITION_NAME, default_policy

EXTRA = "^registry\\.internal\\.example/plane/api(:|@|$)"
EXTRA_IMAGE = "registry.internal.example/plane/api:v3.1.2"


def _normalised(expression: str) -> str:
    return " ".join(expression.split())


def _evaluate(expression: str, obj: dict) -> bool:
    env = cel.NewEnv(variables={name: cel.Type.DYN for name in ("object", "oldObject", "request", "authorizer")})
    return env.compile(expression).eval(data={"object": obj, "oldObject": None}).plain_value()


def _policy_with_extra_image(tmp_path: Path) -> Path:
    text = (REPO / "webhook" / "core" / "default_policy.yaml").read_text()
    anchor = "images: &backend-images ['(^|/)(plane-backend|backend-commercial|backend-enterprise)([:@]|$)'"
    assert anchor in text
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace(anchor, f"{anchor}, '{EXTRA}'"))
    return path


def test_the_shipped_match_conditions_are_generated_from_the_default_policy() -> None:
    expected = _normalised(default_policy().match_condition())
    found = [c for _, hook in all_webhooks() for c in hook["matchConditions"] if c["name"] == MATCH_CONDITION_NAME]
    assert len(found) == 4
    assert {_normalised(c["expression"]) for c in found} == {expected}


def test_regenerating_the_manifests_changes_nothing() -> None:
    expression = default_policy().match_condition()
    for path in match_conditions.FILES:
        text = path.read_text()
        assert match_conditions.rewrite(text, expression) == text, path


def test_the_generated_expression_selects_what_the_policy_matches() -> None:
    expression = default_policy().match_condition()
    for image in PLANE_IMAGES:
        assert _evaluate(expression, pod(image)), image
    for image in OTHER_IMAGES:
        assert _evaluate(expression, pod(image)) == any(p.search(image) for p in default_policy().plane_images), image


def test_policy_check_refuses_an_image_the_shipped_match_conditions_would_hide(tmp_path: Path) -> None:
    policy = _policy_with_extra_image(tmp_path)
    done = run_cli("policy", "check", str(policy))
    assert done.returncode == 2, done.stdout + done.stderr
    assert repr(EXTRA) in done.stderr and "matchConditions" in done.stderr and "policy match-conditions" in done.stderr
    assert done.stdout == ""


def test_the_printed_match_conditions_let_the_new_image_through_and_satisfy_the_check(tmp_path: Path) -> None:
    policy = _policy_with_extra_image(tmp_path)
    printed = run_cli("policy", "match-conditions", str(policy))
    assert printed.returncode == 0, printed.stderr
    (condition,) = yaml.safe_load(printed.stdout)["matchConditions"]
    assert condition["name"] == MATCH_CONDITION_NAME
    assert _evaluate(condition["expression"], pod(EXTRA_IMAGE))
    assert not _evaluate(default_policy().match_condition(), pod(EXTRA_IMAGE))
    # The operator patches the configurations with it: the check then agrees.
    configuration = {"kind": "MutatingWebhookConfiguration", "webhooks": [{"name": "mutate.plane-guard.io",
                                                                            "matchConditions": [condition]}]}
    patched = tmp_path / "webhooks.yaml"
    patched.write_text(yaml.safe_dump(configuration))
    done = run_cli("policy", "check", str(policy), "--webhook-configuration", str(patched))
    assert done.returncode == 0, done.stderr
    stale = run_cli("policy", "check", str(policy), "--webhook-configuration",
                    str(REPO / "manifests" / "base" / "mutatingwebhookconfiguration.yaml"))
    assert stale.returncode == 2 and repr(EXTRA) in stale.stderr


def test_an_image_pattern_the_api_servers_cel_cannot_run_is_refused(tmp_path: Path) -> None:
    text = (REPO / "webhook" / "core" / "default_policy.yaml").read_text()
    anchor = "images: &backend-images ['(^|/)(plane-backend|backend-commercial|backend-enterprise)([:@]|$)'"
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace(anchor, f"{anchor}, '(?<!mirror/)plane-api'"))
    done = run_cli("policy", "check", str(path))
    assert done.returncode == 2
    assert "RE2" in done.stderr and "lookaround" in done.stderr
