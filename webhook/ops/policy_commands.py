"""``plane-guard policy check``, ``policy default`` and ``policy match-conditions``.

The policy's ``match.images`` and the webhook configurations' CEL ``matchConditions`` describe
the same thing, which images are Plane's; the API server applies the CEL first, so an image the
policy matches but the CEL rejects is never even sent to plane-guard. ``check`` says so, and
``match-conditions`` prints the expression for a policy, to patch into both configurations.
"""

from __future__ import annotations

import re
import sys

import yaml

from webhook.core.policy import MATCH_CONDITION_NAME, Policy, default_policy, default_policy_text, load_or_report

#: The regular expressions inside a generated expression's ``c.image.matches('...')`` calls.
_MATCHES = re.compile(r"\.matches\('((?:[^'\\]|\\.)*)'\)")


def default_command() -> int:
    """Print the embedded default policy (documented inline)."""
    sys.stdout.write(default_policy_text())
    return 0


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def expression_patterns(expression: str) -> list[str]:
    return [_unescape(found) for found in _MATCHES.findall(expression)]


def _deployed_expressions(path: str) -> list[str] | str:
    """The ``plane-backend-image`` expressions of the webhook configurations in ``path``, or why none."""
    try:
        with open(path, encoding="utf-8") as handle:
            documents = [d for d in yaml.safe_load_all(handle) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as error:
        return f"cannot read {path}: {getattr(error, 'strerror', None) or type(error).__name__}"
    found = []
    for document in documents:
        for hook in document.get("webhooks") or []:
            for condition in (hook or {}).get("matchConditions") or []:
                if isinstance(condition, dict) and condition.get("name") == MATCH_CONDITION_NAME:
                    found.append(str(condition.get("expression", "")))
    return found or f"{path} holds no matchConditions named {MATCH_CONDITION_NAME}"


def agreement(policy: Policy, expressions: list[str]) -> list[str]:
    """One problem per image pattern of the policy that an expression does not let through."""
    problems = []
    for expression in expressions:
        allowed = set(expression_patterns(expression))
        for pattern in policy.image_patterns:
            if pattern not in allowed:
                roles = [name for name, role in policy.roles.items() if pattern in role.match.images]
                problems.append(
                    f"images: {pattern!r} (roles: {', '.join(roles)}) is not in the webhook configurations' "
                    f"matchConditions ({MATCH_CONDITION_NAME}): the API server never sends pods with such images to "
                    "plane-guard. Patch both webhook configurations with what `plane-guard policy match-conditions "
                    "FILE` prints."
                )
    return list(dict.fromkeys(problems))


def check_command(file: str, webhook_configuration: str | None = None) -> int:
    """Exit 2 with one line per problem when the policy is invalid or the matchConditions would hide
    its images; 0 with its roles and digest.

    Without ``webhook_configuration`` the policy is compared with the matchConditions this version
    ships (``manifests/base``, generated from the default policy).
    """
    policy = load_or_report(file)
    if policy is None:
        return 2
    if webhook_configuration is None:
        expressions: list[str] | str = [default_policy().match_condition()]
        against = "the matchConditions this version ships (manifests/base)"
    else:
        expressions = _deployed_expressions(webhook_configuration)
        against = webhook_configuration
    if isinstance(expressions, str):
        print(f"{file}: {expressions}", file=sys.stderr)
        return 2
    problems = agreement(policy, expressions)
    if problems:
        print(f"{file}: the policy and {against} disagree:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(f"{file}: valid (roles: {', '.join(policy.roles)}; digest {policy.digest})")
    return 0


def match_conditions_command(file: str | None) -> int:
    """Print the ``matchConditions`` for a policy (default: the embedded one), as YAML to paste."""
    policy = default_policy() if file is None else load_or_report(file)
    if policy is None:
        return 2
    lines = policy.match_condition().split("\n")
    sys.stdout.write(
        f"matchConditions:\n  - name: {MATCH_CONDITION_NAME}\n    expression: >-\n"
        + "".join(f"      {line}\n" for line in lines)
    )
    return 0
