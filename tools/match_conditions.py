"""``make manifests``: write the webhook configurations' ``matchConditions`` from the default policy.

The Plane-image rule has one source, the policy's ``match.images``; the CEL expression in
``manifests/base`` and the list the Helm chart reads (``files/match-conditions.yaml``; Helm cannot
read outside the chart) are generated from it (``Policy.match_condition``), and a test fails when
they disagree. Run this after changing the default policy's images.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from webhook.core.policy import MATCH_CONDITION_NAME, default_policy

ROOT = Path(__file__).resolve().parents[1]
FILES = (
    ROOT / "manifests" / "base" / "mutatingwebhookconfiguration.yaml",
    ROOT / "manifests" / "base" / "validatingwebhookconfiguration.yaml",
    ROOT / "manifests" / "helm" / "plane-guard" / "files" / "match-conditions.yaml",
)
#: ``- name: plane-backend-image`` and its folded ``expression: >-`` block, up to the next key.
_BLOCK = re.compile(
    rf"(?P<head>(?P<indent>[ ]*)- name: {re.escape(MATCH_CONDITION_NAME)}\n(?P=indent)  expression: >-\n)"
    r"(?P<body>(?:(?P=indent)    .*\n)+)"
)


def rewrite(text: str, expression: str) -> str:
    def replace(found: re.Match[str]) -> str:
        pad = found.group("indent") + "    "
        return found.group("head") + "".join(f"{pad}{line}\n" for line in expression.split("\n"))

    new, count = _BLOCK.subn(replace, text)
    if count == 0:
        raise SystemExit(f"no matchConditions named {MATCH_CONDITION_NAME} found")
    return new


def main() -> int:
    expression = default_policy().match_condition()
    for path in FILES:
        old = path.read_text()
        new = rewrite(old, expression)
        if new != old:
            path.write_text(new)
            print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
