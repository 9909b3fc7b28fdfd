"""``plane-guard policy check FILE`` and ``plane-guard policy default``."""

from __future__ import annotations

import sys

from webhook.core.policy import default_policy_text, load_or_report


def default_command() -> int:
    """Print the embedded default policy (documented inline)."""
    sys.stdout.write(default_policy_text())
    return 0


def check_command(file: str) -> int:
    """Exit 2 with one line per problem when the policy is invalid; 0 with its roles and digest."""
    policy = load_or_report(file)
    if policy is None:
        return 2
    print(f"{file}: valid (roles: {', '.join(policy.roles)}; digest {policy.digest})")
    return 0
