"""promtool as a prerequisite: `make test` installs it from Debian's prometheus package without
leaving a Prometheus server running, and its tests skip, naming it, where it is missing."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from tests import conftest
from tools import prerequisites

REPO = Path(__file__).resolve().parents[2]


def _promtool() -> prerequisites.Tool:
    (tool,) = [t for t in prerequisites.TOOLS if "promtool" in t.commands]
    return tool


def test_promtool_comes_from_the_prometheus_package_without_its_server() -> None:
    tool = _promtool()
    assert tool.package == "prometheus" and tool.markers == ("promtool",)
    assert tool.services == ("prometheus",) and tool.recommends is False


def test_the_marker_is_declared_and_skips() -> None:
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("promtool:") for m in markers)
    assert "promtool" in conftest.MARKERS


def test_the_skip_reason_names_promtool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prerequisites, "find", lambda command: None)
    reason = prerequisites.skip_reason("promtool")
    assert reason and "promtool" in reason and "make test" in reason
    monkeypatch.setattr(prerequisites, "find", lambda command: f"/usr/bin/{command}")
    assert prerequisites.skip_reason("promtool") is None


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["prometheus", "start"], 101),  # deb-systemd-invoke's style is the unit name, below
        (["--quiet", "prometheus", "start"], 101),  # invoke-rc.d passes its options first
        (["prometheus.service", "start"], 101),
        (["rabbitmq-server", "start"], 0),
        (["--quiet", "rabbitmq-server", "restart"], 0),
        (["prometheus-node-exporter", "start"], 0),
    ],
)
def test_the_policy_script_forbids_only_the_held_services(tmp_path: Path, args: list[str], code: int) -> None:
    script = tmp_path / "policy-rc.d"
    script.write_text(prerequisites.policy_rc_script(["prometheus"]))
    assert subprocess.run(["/bin/sh", str(script), *args], timeout=10).returncode == code


def _install(monkeypatch: pytest.MonkeyPatch, policy: Path, tools: list[prerequisites.Tool]) -> tuple[dict, list]:
    """Run install() with apt-get, dpkg-query and the service commands recorded instead of run:
    ({apt-get install argv: whether policy-rc.d was there meanwhile}, the services kept stopped)."""
    monkeypatch.setattr(prerequisites, "POLICY_RC", policy)
    calls: list[tuple[list[str], bool]] = []
    stopped: list[list[str]] = []

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append((argv, policy.exists()))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(prerequisites.subprocess, "run", run)
    monkeypatch.setattr(prerequisites, "keep_stopped", lambda services: stopped.append(list(services)))
    prerequisites.install(tools)
    assert not policy.exists(), "the policy-rc.d written for the install must be gone afterwards"
    return {tuple(argv): held for argv, held in calls if argv[:2] == ["apt-get", "install"]}, stopped


def test_install_holds_the_server_and_skips_recommends(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    busybox = next(t for t in prerequisites.TOOLS if t.package == "busybox")
    monkeypatch.setattr(prerequisites, "dpkg_installed", lambda package: False)
    installs, stopped = _install(monkeypatch, tmp_path / "policy-rc.d", [busybox, _promtool()])
    assert installs == {
        ("apt-get", "install", "-y", "-qq", "busybox"): True,
        ("apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"): True,
    }
    assert stopped == [["prometheus"]]


def test_a_server_installed_before_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(prerequisites, "dpkg_installed", lambda package: package == "prometheus")
    installs, stopped = _install(monkeypatch, tmp_path / "policy-rc.d", [_promtool()])
    assert installs == {("apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"): False}
    assert stopped == [[]]


def test_an_existing_policy_script_is_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    monkeypatch.setattr(prerequisites, "POLICY_RC", policy)
    with prerequisites.services_held(["prometheus"]):
        assert policy.read_text() == "#!/bin/sh\nexit 101\n"
    assert policy.read_text() == "#!/bin/sh\nexit 101\n"
