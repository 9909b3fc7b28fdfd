"""Build plane-guard's images offline, with podman (or docker where a docker engine answers).

No registry is needed. The base is a Debian minbase made by mmdebstrap (python3, and Debian's
static busybox for the runtime image) and imported as an image; the Python wheels are downloaded
on the host, for the base's interpreter and platform, and handed to the build as the
``wheelhouse`` build context, so the build itself runs without a network.

Every image is tagged with a hash of its inputs (the Dockerfile, the files of the build context,
the base, the wheel requirements); when that tag exists, nothing is built again.

The container tests also build a musl image shaped like Plane's (tests/containers/images.py):
``debian_sources`` fetches the upstream tarballs of Debian source packages with apt-get, and
``interpreter`` tells a musl python3 from a glibc one, for musllinux wheels.

    python -m tools.images     # `make image`: plane-guard and plane-guard-runtime
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from webhook import __version__

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
CONTAINERS_CONF = ROOT / "tools" / "containers.conf"
STATE = ROOT / "build" / "images"
RELEASE = "ghcr.io/plane-guard"
LOCAL = "localhost"

DEBIAN_SUITE = os.environ.get("PLANE_GUARD_DEBIAN_SUITE", "bookworm")
DEBIAN_MIRROR = os.environ.get("PLANE_GUARD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
#: python3-venv brings ensurepip; busybox-static is the runtime image's copier.
BASE_PACKAGES = ("python3", "python3-venv", "busybox-static")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Documentation is left out of the base (copyright files stay).
_MMDEBSTRAP_OPTIONS = (
    "--variant=minbase",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
)
BUILD_TIMEOUT = 1800


class Unavailable(RuntimeError):
    """No container engine or no mmdebstrap here; the message says what to install."""


class BuildError(RuntimeError):
    """A build step failed; the message carries the end of its output."""


# ---------------------------------------------------------------------------------------------
# Engine


def engine_env() -> dict[str, str]:
    """The environment for podman: the project's containers.conf unless CONTAINERS_CONF is set."""
    return {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))}


def _docker_answers() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def engine() -> str:
    """``podman``, or ``docker`` when podman is missing and a docker engine answers."""
    if shutil.which("podman"):
        return "podman"
    if _docker_answers():
        return "docker"
    raise Unavailable("no container engine: install podman (apt-get install podman runc) or start docker")


def run(argv: list[str], timeout: float = BUILD_TIMEOUT, **kwargs) -> str:
    """Run a command (the engine's with engine_env()); BuildError with the end of its output on failure."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=engine_env(), **kwargs)
    except subprocess.TimeoutExpired:
        raise BuildError(f"`{' '.join(argv[:3])} ...` did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise BuildError(f"`{' '.join(argv[:3])} ...` exited {done.returncode}:\n{output[-4000:]}")
    return done.stdout


def image_exists(tool: str, reference: str) -> bool:
    argv = [tool, "image", "exists", reference] if tool == "podman" else [tool, "image", "inspect", reference]
    return subprocess.run(argv, capture_output=True, env=engine_env(), timeout=60).returncode == 0


def image_id(tool: str, reference: str) -> str:
    return run([tool, "image", "inspect", "--format", "{{.Id}}", reference], timeout=60).strip()


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _say(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Base


def debian_base(tool: str, packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    """A Debian minbase with ``packages`` as a local image (mmdebstrap, then import)."""
    inputs = (DEBIAN_SUITE, DEBIAN_MIRROR, sorted(packages), _MMDEBSTRAP_OPTIONS, BASE_PATH)
    tag = f"{LOCAL}/plane-guard-base:{_digest(*inputs)}"
    if image_exists(tool, tag):
        return tag
    if not shutil.which("mmdebstrap"):
        raise Unavailable("mmdebstrap is missing (apt-get install mmdebstrap): it makes the offline base image")
    _say(f"building {tag} with mmdebstrap ({DEBIAN_SUITE}: {', '.join(packages)})")
    with tempfile.TemporaryDirectory(prefix="plane-guard-base-") as scratch:
        tarball = Path(scratch) / "base.tar"
        mode = [] if os.geteuid() == 0 else ["--mode=unshare"]
        run(["mmdebstrap", *mode, *_MMDEBSTRAP_OPTIONS, f"--include={','.join(packages)}",
             DEBIAN_SUITE, str(tarball), DEBIAN_MIRROR])
        run([tool, "import", "--change", f"ENV PATH={BASE_PATH}", str(tarball), tag])
    return tag


def debian_sources(packages: tuple[str, ...]) -> Path:
    """The upstream tarballs (``*.orig.tar.*``) of Debian source packages, downloaded here.

    ``apt-get source --download-only`` with an apt configuration of its own (a deb-src line for
    DEBIAN_SUITE at DEBIAN_MIRROR, lists and cache in a scratch folder): the host's apt state is
    not touched. Kept under build/images like the wheelhouses.
    """
    directory = STATE / f"sources-{_digest(DEBIAN_SUITE, DEBIAN_MIRROR, sorted(packages))}"
    if (directory / ".complete").exists():
        return directory
    if not shutil.which("apt-get"):
        raise Unavailable("apt-get is missing: it downloads the Debian sources of the musl image")
    _say(f"downloading Debian sources ({DEBIAN_SUITE}: {', '.join(packages)}) into {directory.relative_to(ROOT)}")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="plane-guard-sources-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "lists" / "partial").mkdir(parents=True)
        (scratch / "cache" / "archives" / "partial").mkdir(parents=True)
        (scratch / "download").mkdir()
        (scratch / "sources.list").write_text(f"deb-src {DEBIAN_MIRROR} {DEBIAN_SUITE} main\n")
        options = [f"-oDir::Etc::SourceList={scratch / 'sources.list'}", "-oDir::Etc::SourceParts=/nonexistent",
                   f"-oDir::State::Lists={scratch / 'lists'}", f"-oDir::Cache={scratch / 'cache'}",
                   "-oAPT::Sandbox::User=root"]
        run(["apt-get", *options, "update"], timeout=600)
        run(["apt-get", *options, "source", "--download-only", *packages], timeout=600, cwd=scratch / "download")
        for tarball in (scratch / "download").glob("*.orig.tar.*"):
            if not tarball.name.endswith(".asc"):
                shutil.move(str(tarball), directory / tarball.name)
    (directory / ".complete").touch()
    return directory


# ---------------------------------------------------------------------------------------------
# Wheels


@dataclass(frozen=True)
class Interpreter:
    """What wheels a base image's python3 accepts."""

    version: str  # "3.11"
    glibc: tuple[int, int]
    machine: str  # "x86_64", "aarch64"

    def pip_flags(self) -> list[str]:
        major, minor = self.glibc
        platforms = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 16, -1)]
        platforms += [f"manylinux{legacy}_{self.machine}" for legacy in ("2014", "2010", "1")]
        abi = "cp" + self.version.replace(".", "")
        flags = ["--only-binary=:all:", "--python-version", self.version, "--implementation", "cp"]
        for value in (abi, "abi3", "none"):
            flags += ["--abi", value]
        for platform in platforms:
            flags += ["--platform", platform]
        return flags


@dataclass(frozen=True)
class MuslInterpreter:
    """What wheels a musl-linked python3 accepts (musllinux tags)."""

    version: str  # "3.11"
    musl: tuple[int, int]
    machine: str

    def pip_flags(self) -> list[str]:
        major, minor = self.musl
        abi = "cp" + self.version.replace(".", "")
        flags = ["--only-binary=:all:", "--python-version", self.version, "--implementation", "cp"]
        for value in (abi, "abi3", "none"):
            flags += ["--abi", value]
        for m in range(minor, -1, -1):
            flags += ["--platform", f"musllinux_{major}_{m}_{self.machine}"]
        return flags


#: Prints [python version, glibc version, machine, musl loader's banner]; the last only without glibc.
_INTERPRETER_PROBE = (
    "import glob, json, platform, subprocess, sys; "
    "glibc = platform.libc_ver()[1] if platform.libc_ver()[0] == 'glibc' else ''; "
    "loaders = [] if glibc else glob.glob('/lib/ld-musl-*.so.1'); "
    "musl = subprocess.run(loaders[:1], capture_output=True, text=True).stderr if loaders else ''; "
    "print(json.dumps([f'{sys.version_info[0]}.{sys.version_info[1]}', glibc, platform.machine(), musl]))"
)


def interpreter(tool: str, base: str) -> Interpreter | MuslInterpreter:
    out = run([tool, "run", "--rm", "--network", "none", base, "python3", "-c", _INTERPRETER_PROBE], timeout=120)
    version, glibc, machine, musl = json.loads(out)
    if glibc:
        major, minor = (int(x) for x in glibc.split(".")[:2])
        return Interpreter(version, (major, minor), machine)
    found = re.search(r"Version (\d+)\.(\d+)", musl)
    if not found:
        raise BuildError(f"{base}: python3 is linked against neither glibc nor musl")
    return MuslInterpreter(version, (int(found.group(1)), int(found.group(2))), machine)


def wheelhouse(tool: str, base: str, requirements: list[str]) -> Path:
    """Wheels for ``requirements`` and their dependencies, for the base's python3, downloaded here."""
    target = interpreter(tool, base)
    directory = STATE / f"wheelhouse-{_digest(sorted(requirements), target)}"
    done_marker = directory / ".complete"
    if done_marker.exists():
        return directory
    _say(f"downloading wheels for python {target.version} {target.machine} into {directory.relative_to(ROOT)}")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    run([sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(directory), *target.pip_flags(), *requirements])
    (directory / "requirements.txt").write_text("\n".join(requirements) + "\n")
    done_marker.touch()
    return directory


def project_requirements(extra: str | None = None, names: tuple[str, ...] | None = None) -> list[str]:
    """The project's dependencies (or those of an optional extra) from pyproject.toml, by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = project["optional-dependencies"][extra] if extra else project["dependencies"]
    if names is None:
        return list(listed)

    def name_of(requirement: str) -> str:
        for stop in "[<>=!~; ":
            requirement = requirement.split(stop, 1)[0]
        return requirement.lower()

    return [r for r in listed if name_of(r) in {n.lower() for n in names}]


def dockerfile_pins(path: Path) -> list[str]:
    """The ``name==version`` pins of the pip installs in a Dockerfile (they must be in the wheelhouse)."""
    pins = []
    for word in path.read_text().split():
        if "==" in word and not word.startswith("-"):
            name, _, version = word.partition("==")
            if name.replace("-", "").replace("_", "").replace(".", "").isalnum() and version[:1].isdigit():
                pins.append(word)
    return sorted(set(pins))


# ---------------------------------------------------------------------------------------------
# Builds


def context_files(context: Path, include: list[str] | None = None) -> list[Path]:
    """The files a build sends from ``context``: the ``include`` paths, or everything; no bytecode."""
    roots = [context / p for p in include] if include else [context]
    files = []
    for root in roots:
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        files += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return sorted(files)


def dockerignore_allowed(context: Path) -> list[str]:
    """The allow-list (``!path`` lines) of a .dockerignore that starts by excluding everything."""
    lines = [line.strip() for line in (context / ".dockerignore").read_text().splitlines()]
    return [line[1:].rstrip("/") for line in lines if line.startswith("!")]


@dataclass
class Build:
    """One image build: a Dockerfile (and target) over a context, with build args and a wheelhouse."""

    name: str
    dockerfile: Path
    context: Path
    target: str | None = None
    include: list[str] | None = None
    build_args: dict[str, str] = field(default_factory=dict)
    requirements: list[str] = field(default_factory=list)
    #: Further named build contexts (``--build-context NAME=DIR``); their file names and sizes count.
    contexts: dict[str, Path] = field(default_factory=dict)

    def inputs(self, tool: str) -> str:
        files = {
            str(p.relative_to(self.context)): (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
            for p in context_files(self.context, self.include)
        }
        images = {k: image_id(tool, v) for k, v in self.build_args.items() if k.endswith("_IMAGE")}
        parts = [self.dockerfile.read_text(), self.target, files, self.build_args, images, sorted(self.requirements)]
        if self.contexts:
            parts.append({name: sorted((p.name, p.stat().st_size) for p in Path(path).iterdir() if p.is_file())
                          for name, path in self.contexts.items()})
        return _digest(*parts)

    def tag(self, tool: str) -> str:
        return f"{LOCAL}/{self.name}:{self.inputs(tool)}"

    def ensure(self, tool: str) -> str:
        """The image's content tag, built first when it does not exist yet."""
        tag = self.tag(tool)
        if image_exists(tool, tag):
            return tag
        argv = [tool, "build", "--network", "none", "--file", str(self.dockerfile), "--tag", tag]
        if self.target:
            argv += ["--target", self.target]
        for key, value in {**self.build_args, "PIP_NO_INDEX": "1"}.items():
            argv += ["--build-arg", f"{key}={value}"]
        if self.requirements:  # a build without requirements (no pip install) gets no wheelhouse
            wheels = wheelhouse(tool, self.build_args["BASE_IMAGE"], self.requirements)
            argv += ["--build-context", f"wheelhouse={wheels}"]
        for name, path in self.contexts.items():
            argv += ["--build-context", f"{name}={path}"]
        argv.append(str(self.context))
        _say(f"building {tag}")
        run(argv)
        return tag


def plane_guard_builds(base: str) -> dict[str, Build]:
    """The two product images: ``full`` (the default stage) and ``runtime`` (the init container's)."""
    common = dict(
        dockerfile=DOCKERFILE,
        context=ROOT,
        include=dockerignore_allowed(ROOT),
        build_args={"BASE_IMAGE": base, "BUSYBOX_IMAGE": base},
        requirements=[*dockerfile_pins(DOCKERFILE), *project_requirements()],
    )
    return {
        "full": Build("plane-guard", **common),
        "runtime": Build("plane-guard-runtime", target="runtime", **common),
    }


def plane_guard_images(tool: str | None = None) -> dict[str, str]:
    """Build (or find) both product images; their content tags by kind."""
    tool = tool or engine()
    builds = plane_guard_builds(debian_base(tool))
    return {kind: build.ensure(tool) for kind, build in builds.items()}


def release_name(kind: str) -> str:
    """The published name of an image kind, e.g. ghcr.io/plane-guard/plane-guard-runtime:0.1.0."""
    return f"{RELEASE}/{'plane-guard' if kind == 'full' else 'plane-guard-' + kind}:{__version__}"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-release-tag", action="store_true",
                        help=f"do not also tag the images with their published names ({RELEASE}/...)")
    args = parser.parse_args()
    try:
        tool = engine()
        images = plane_guard_images(tool)
        for kind, tag in images.items():
            if not args.no_release_tag:
                run([tool, "tag", tag, release_name(kind)], timeout=60)
            print(f"{kind}: {tag}" + ("" if args.no_release_tag else f" = {release_name(kind)}"))
    except (Unavailable, BuildError) as exc:
        print(f"make image: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, Unavailable) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
