"""Shared helpers for the install tests: render the kustomizations with the real kustomize.

kustomize comes from a standalone ``kustomize`` binary when one is on PATH, otherwise from
``kubectl kustomize`` (kubectl embeds kustomize), the kubectl on PATH or the envtest kit's in
``KUBEBUILDER_ASSETS``. No stand-in renderer: without either, the
tests that need rendered manifests skip and say what to install.
"""

from __future__ import annotations

import copy
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tools import prerequisites
from webhook import cli
from webhook.core import conventions

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
BASE = MANIFESTS / "base"
OVERLAYS = ("cert-manager", "self-signed", "audit-only")
#: Every kustomization the project ships, by a short name.
TARGETS = {
    "base": BASE,
    **{f"overlays/{name}": MANIFESTS / "overlays" / name for name in OVERLAYS},
    "examples": MANIFESTS / "examples",
    # Optional: the rights of `plane-guard restart` (not part of any overlay).
    "restart": MANIFESTS / "restart",
}
#: Overlays that install a working webhook (the base alone has no certificate).
INSTALLABLE = tuple(f"overlays/{name}" for name in OVERLAYS)
PLANE_GUARD = str(Path(sys.executable).with_name("plane-guard"))


def kustomize_command() -> list[str]:
    if kustomize := prerequisites.find("kustomize"):
        return [kustomize, "build"]
    if kubectl := prerequisites.find("kubectl"):
        return [kubectl, "kustomize"]
    pytest.skip("neither kubectl nor kustomize is on PATH or in KUBEBUILDER_ASSETS: install kubectl 1.27+ (it embeds kustomize)")


@functools.cache
def _render(target: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [*kustomize_command(), str(TARGETS[target])], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kustomize build {target} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc is not None)


def render(target: str) -> list[dict[str, Any]]:
    """The objects ``kustomize build`` makes of a target (fresh copies, safe to modify)."""
    return copy.deepcopy(list(_render(target)))


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for doc in docs
        if doc.get("kind") == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def run_cli(*args: str, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run the installed ``plane-guard`` console script, as the image does."""
    return subprocess.run([PLANE_GUARD, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


def deployment(target: str = "base") -> dict[str, Any]:
    return one(render(target), "Deployment", conventions.SERVICE_NAME)


def webhook_container(target: str = "base") -> dict[str, Any]:
    containers = deployment(target)["spec"]["template"]["spec"]["containers"]
    # Index 0 on purpose: overlays/audit-only patches /containers/0/args.
    assert containers[0]["name"] == "webhook"
    return containers[0]


def serve_args(target: str = "base"):
    container = webhook_container(target)
    assert container["command"][0] == "plane-guard"
    args = cli._parser().parse_args([*container["command"][1:], *container.get("args", [])])
    assert args.command == "serve"
    return args
