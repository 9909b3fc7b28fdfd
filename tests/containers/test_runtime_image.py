"""``plane-guard runtime install DIR`` from both images, as the init container runs it.

Read-only root filesystem, the image's own non-root user, no network: both images leave in DIR
exactly what the package's own ``runtime install`` writes (names, bytes, modes). The runtime
image holds nothing but a static busybox, its ``plane-guard`` command and the runtime files.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.pods import podman
from webhook.runtime import RUNTIME_FILES

pytestmark = pytest.mark.containers

PLANE_GUARD = str(Path(sys.executable).with_name("plane-guard"))
MOUNT = "/plane-guard"


def _tree(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        path.relative_to(root).as_posix(): (path.read_bytes() if path.is_file() else b"", stat.S_IMODE(path.stat().st_mode))
        for path in sorted(root.rglob("*"))
    }


def _install(image: str, directory: Path, *args: str, mode: str = "rw") -> subprocess.CompletedProcess[str]:
    return podman("run", "--rm", "--read-only", "--network", "none", "--cap-drop", "ALL",
                  "--volume", f"{directory}:{MOUNT}:{mode}", "--entrypoint", "plane-guard", image, *args,
                  timeout=120, check=False)


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    directory = tmp_path / "volume"
    directory.mkdir()
    os.chmod(directory, 0o777)  # an emptyDir is writable by any user
    return directory


@pytest.fixture(params=["full", "runtime"])
def image(request, images) -> str:
    return getattr(images, request.param)


def test_installs_what_the_package_installs(image, destination, tmp_path):
    expected = tmp_path / "expected"
    done = subprocess.run([PLANE_GUARD, "runtime", "install", str(expected)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    first = _install(image, destination, "runtime", "install", MOUNT)
    assert first.returncode == 0, first.stderr
    again = _install(image, destination, "runtime", "install", MOUNT)  # a restarted init container
    assert again.returncode == 0, again.stderr
    assert _tree(destination) == _tree(expected)
    assert sorted(line.split()[-1] for line in first.stdout.splitlines()) == sorted(f"{MOUNT}/{f}" for f in RUNTIME_FILES)
    owners = {path.stat().st_uid for path in destination.rglob("*")}
    assert owners == {10001}, owners  # the image's non-root user wrote them


def test_a_read_only_destination_is_refused_with_advice(image, destination):
    done = _install(image, destination, "runtime", "install", MOUNT, mode="ro")
    assert done.returncode == 1
    assert f"cannot install the runtime into {MOUNT}" in done.stderr and "emptyDir" in done.stderr
    assert list(destination.iterdir()) == []


def test_the_runtime_image_only_installs(images):
    done = podman("run", "--rm", "--read-only", "--network", "none", images.runtime, "serve", timeout=120, check=False)
    assert done.returncode == 2 and "usage: plane-guard runtime install DIR" in done.stderr


def test_the_runtime_image_holds_busybox_the_command_and_the_files(images, tmp_path):
    user = podman("image", "inspect", "--format", "{{.Config.User}}", images.runtime).stdout.strip()
    assert user == "10001:10001"
    container = podman("create", images.runtime).stdout.strip()
    try:
        archive = tmp_path / "runtime.tar"
        podman("export", "--output", str(archive), container, timeout=120)
    finally:
        podman("rm", "--force", container, check=False)
    with tarfile.open(archive) as tar:
        files = sorted(m.name.lstrip("./") for m in tar.getmembers() if m.isfile())
    staged = sorted(f"usr/share/plane-guard/runtime/{f}" for f in RUNTIME_FILES)
    assert files == sorted(["bin/busybox", "bin/plane-guard", *staged]), files
