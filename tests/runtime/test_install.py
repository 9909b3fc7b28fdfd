"""``plane-guard runtime install DIR``: what the init container leaves in the shared volume."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from tests.runtime.conftest import PLANE_GUARD
from webhook import runtime
from webhook.core import conventions

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {
    conventions.RUNTIME_ENTRYPOINT: 0o755,
    "amqp_url.py": 0o644,
    "environment.py": 0o644,
    "supervisor.py": 0o644,
    f"{conventions.RUNTIME_PYTHON_DIR}/sitecustomize.py": 0o644,
    **{
        f"{conventions.RUNTIME_PYTHON_DIR}/plane_guard_hooks/{name}.py": 0o644
        for name in ("__init__", "accounting", "amqp_heartbeat", "celery_config", "gunicorn_config", "publish_deadline", "pika_confirms")
    },
}


def _install(target: Path, umask: str = "022") -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/sh", "-c", f'umask {umask}; exec "$0" runtime install "$1"', PLANE_GUARD, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (stat.S_IMODE(p.stat().st_mode), p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_runtime_files_are_the_contract():
    assert set(runtime.RUNTIME_FILES) == set(EXPECTED)
    assert runtime.RUNTIME_FILES["amqp_url.py"].resolve() == (REPO / "webhook" / "core" / "amqp_url.py").resolve()
    for source in runtime.RUNTIME_FILES.values():
        assert source.is_file(), source


def test_install_writes_world_readable_copies_even_under_a_strict_umask(tmp_path):
    target = tmp_path / "volume"
    done = _install(target, umask="077")
    assert done.returncode == 0, done.stderr
    tree = _tree(target)
    assert set(tree) == set(EXPECTED)
    for relative, mode in EXPECTED.items():
        assert tree[relative][0] == mode, relative
        assert tree[relative][1] == runtime.RUNTIME_FILES[relative].read_bytes(), relative
    for directory in (conventions.RUNTIME_PYTHON_DIR, f"{conventions.RUNTIME_PYTHON_DIR}/plane_guard_hooks"):
        assert stat.S_IMODE((target / directory).stat().st_mode) == 0o755, directory
    for relative in EXPECTED:
        assert f"installed {target / relative}" in done.stdout


def test_install_is_idempotent_and_replaces_stale_files(tmp_path):
    target = tmp_path / "volume"
    assert _install(target).returncode == 0
    first = _tree(target)
    (target / "entrypoint.sh").write_text("#!/bin/sh\necho stale\n")
    (target / "entrypoint.sh").chmod(0o600)
    assert _install(target).returncode == 0
    assert _tree(target) == first
    assert not [p.name for p in target.rglob(".*")], "temporary files left behind"


def test_install_into_an_existing_empty_dir_keeps_its_mode(tmp_path):
    target = tmp_path / "emptydir"
    target.mkdir()
    target.chmod(0o777)
    assert _install(target).returncode == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o777


def test_unwritable_destination_is_exit_1_with_a_hint(tmp_path):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("not a directory")
    for target in (in_the_way / "runtime", Path("/proc/self/plane-guard-runtime")):
        done = _install(target)
        assert done.returncode == 1, done
        assert f"cannot install the runtime into {target}" in done.stderr
        assert "writable volume" in done.stderr
        assert "Traceback" not in done.stderr


def test_install_imports_only_what_it_needs(tmp_path):
    """The init container runs in every Plane pod start: no web stack, no pydantic, no YAML."""
    code = (
        "import sys\n"
        "from webhook.cli import main\n"
        f"rc = main(['runtime', 'install', {str(tmp_path / 'v')!r}])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'fastapi', 'pydantic', 'yaml', 'kubernetes',"
        " 'cryptography', 'jsonpatch', 'uvicorn', 'prometheus_client', 'starlette'})\n"
        "heavy += sorted(m for m in ('webhook.core.policy', 'webhook.core.mutation', 'webhook.serve.app') if m in sys.modules)\n"
        "print(rc, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stdout + done.stderr
