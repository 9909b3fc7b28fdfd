"""``kubectl plane-guard ...`` runs the same command line as ``plane-guard ...`` (a kubectl plugin)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.prerequisites import find

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "manifests" / "base" / "policy" / "policy.yaml"


def test_kubectl_runs_plane_guard_as_a_plugin():
    kubectl = find("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is missing: install it, or unpack the envtest kit (KUBEBUILDER_ASSETS), to run kubectl plugins")
    scripts = Path(sys.executable).parent
    assert (scripts / "kubectl-plane_guard").is_file(), "the kubectl-plane_guard entry point is not installed: run `make venv`"
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}"}
    plugins = subprocess.run([kubectl, "plugin", "list"], env=env, capture_output=True, text=True, timeout=60)
    assert "kubectl-plane_guard" in plugins.stdout, plugins.stdout + plugins.stderr
    as_plugin = subprocess.run([kubectl, "plane-guard", "policy", "check", str(POLICY)], env=env, capture_output=True, text=True, timeout=60)
    direct = subprocess.run([str(scripts / "plane-guard"), "policy", "check", str(POLICY)], capture_output=True, text=True, timeout=60)
    assert as_plugin.returncode == direct.returncode == 0, as_plugin.stderr
    assert as_plugin.stdout == direct.stdout and direct.stdout.strip()
