"""The files plane-guard delivers into Plane containers, and the init-container command that copies them.

The init container runs ``plane-guard runtime install DIR`` with DIR on an emptyDir shared with
the Plane container. The Plane container then starts through ``DIR/entrypoint.sh``, which
decides the settings left to the start (``DIR/environment.py``: policy defaults against the
container's own values, and the AMQP heartbeat merged by ``DIR/amqp_url.py``, the same code the
webhook uses), puts ``DIR/python`` (the ``sitecustomize`` start-up hook and its
``plane_guard_hooks`` package) first on ``PYTHONPATH`` and runs the original command under
``DIR/supervisor.py``, which forwards the container's signals to it and reaps zombies.

Only the standard library is imported here: this runs in every Plane pod start.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: Destination (relative to DIR) -> source file in this package.
RUNTIME_FILES: dict[str, Path] = {
    "entrypoint.sh": _HERE / "entrypoint.sh",
    "amqp_url.py": _HERE.parent / "core" / "amqp_url.py",
    "environment.py": _HERE / "environment.py",
    "supervisor.py": _HERE / "supervisor.py",
    "python/sitecustomize.py": _HERE / "python" / "sitecustomize.py",
    **{
        f"python/plane_guard_hooks/{source.name}": source
        for source in sorted((_HERE / "python" / "plane_guard_hooks").glob("*.py"))
    },
}

#: The Plane container may run as any UID: everything is world-readable, the wrapper executable.
_FILE_MODES = {"entrypoint.sh": 0o755}
_DEFAULT_FILE_MODE = 0o644
_DIR_MODE = 0o755


def install(dest: str | os.PathLike[str]) -> list[Path]:
    """Copy the runtime files into ``dest`` and return their paths.

    Each file is written to a temporary name and renamed over the old one, so a re-run (the init
    container restarts) replaces files atomically and a reader never sees half a file.
    """
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for relative, source in RUNTIME_FILES.items():
        target = root / relative
        if target.parent != root:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(target.parent, _DIR_MODE)
        data = source.read_bytes()
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, _FILE_MODES.get(relative, _DEFAULT_FILE_MODE))
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        written.append(target)
    return written


def install_command(directory: str) -> int:
    """``plane-guard runtime install DIR``: 0 on success, 1 with a message when DIR cannot be written."""
    try:
        written = install(directory)
    except OSError as exc:
        print(
            f"plane-guard: cannot install the runtime into {directory}: {exc.strerror or exc}. "
            "Mount a writable volume there (an emptyDir, not readOnly) or pass another directory.",
            file=sys.stderr,
        )
        return 1
    for path in written:
        print(f"plane-guard: installed {path}")
    return 0
