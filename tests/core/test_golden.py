"""The core and the CLI give exactly the golden patch and pod for every fixture."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.fixtures import golden
from webhook.core.mutation import apply_patch, mutate_pod
from webhook.core.policy import default_policy


@pytest.mark.parametrize("case", golden.CASES)
def test_core_matches_golden(case):
    pod = golden.load_input(case)
    outcome = mutate_pod(pod, default_policy())
    assert outcome.patch == golden.expected_patch(case, outcome.patch)
    mutated = apply_patch(pod, outcome.patch)
    assert mutated == golden.expected_pod(case, mutated)
    assert pod == golden.load_input(case), "mutate_pod must not modify its input"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "webhook.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("case", golden.CASES)
def test_cli_patch_matches_golden(case, tmp_path):
    """Preview patches the pod the API server would hand over; a golden input is that pod already,
    so the ServiceAccount token, which preview would otherwise add first, is turned off."""
    pod = golden.load_input(case)
    pod["spec"]["automountServiceAccountToken"] = False  # mutate_pod does not read it
    path = tmp_path / "input.yaml"
    path.write_text(yaml.safe_dump(pod))
    result = _cli("preview", "-f", str(path), "--patch")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["patch"] == json.loads((golden.PODS / case / "patch.json").read_text())


@pytest.mark.parametrize("case", golden.CASES)
def test_cli_preview_matches_golden(case):
    result = _cli("preview", "-f", str(golden.PODS / case / "input.yaml"))
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == yaml.safe_load((golden.PODS / case / "mutated.yaml").read_text())
