"""``python -m tests.compat`` (``make compat``): every combination of ``matrix.COMBOS``, a table, ``combos=N failed=M``.

Exit 0 when every combination that ran passed, 1 when one failed, 2 when a prerequisite is
missing (root, RabbitMQ, nftables, the package index, every interpreter), with a message naming
it. A Python that is not installed, and a combination pip cannot resolve, are rows that say so:
neither counts as failed, and a combination that declares a fallback runs that one instead.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from tests.compat import checks, envs, matrix
from tests.compat import node as nodes
from tests.compat.matrix import FAIL, NOT_INSTALLABLE, RAN, SKIPPED, Combo, Row

REPO = Path(__file__).resolve().parents[2]
PLANE_GUARD = Path(sys.executable).parent / "plane-guard"


def say(message: str) -> None:
    print(f"compat: {message}", file=sys.stderr, flush=True)


@dataclass
class Prepared:
    """One combination after its install: ready to check (``venv``), or a row that says why not."""

    combo: Combo
    python: envs.Interpreter | None = None
    venv: Path | None = None
    installed: dict[str, str] | None = None
    row: Row | None = None
    built: bool = False


def _prepare(cache: Path, combo: Combo, python: envs.Interpreter | None) -> list[Prepared]:
    """Install ``combo`` (or, when pip cannot, its fallback); one entry per row it yields."""
    if python is None:
        reason = f"Python {combo.python} is not installed (pyenv or python{combo.python} on PATH)"
        return [Prepared(combo, row=Row(combo, SKIPPED, matrix.requested(combo), reason=reason))]
    try:
        started = time.monotonic()
        venv, installed, built = envs.ensure_venv(cache, combo, python)
        if built:
            say(f"{combo.name}: installed in {time.monotonic() - started:.0f}s")
        return [Prepared(combo, python, venv, installed, built=built)]
    except envs.NotInstallable as exc:
        instead = f"; instead: {combo.fallback.name}" if combo.fallback else ""
        row = Row(combo, NOT_INSTALLABLE, matrix.requested(combo, python.version), reason=f"{exc}{instead}")
        say(f"{combo.name}: not installable ({exc})")
        return [Prepared(combo, python, row=row), *(_prepare(cache, combo.fallback, python) if combo.fallback else [])]
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        row = Row(combo, RAN, matrix.requested(combo, python.version), results=dict.fromkeys(matrix.CHECKS, FAIL))
        row.details = dict.fromkeys(matrix.CHECKS, f"install failed: {exc}")
        return [Prepared(combo, python, row=row)]


def _versions(prepared: Prepared) -> tuple[dict[str, str], list[str]]:
    """What ``pip freeze`` found (the table shows it), and every pin it does not match."""
    versions = {"python": prepared.python.version}
    wrong = []
    for library, pinned in prepared.combo.pins.items():
        versions[library] = prepared.installed.get(library, "missing")
        if versions[library] != pinned:
            wrong.append(f"pip installed {library} {versions[library]}, not the pinned {pinned}")
    return versions, wrong


def _check(node: nodes.Node, runtime: Path, prepared: Prepared, base: Path) -> Row:
    versions, wrong = _versions(prepared)
    if wrong:
        row = Row(prepared.combo, RAN, versions, results=dict.fromkeys(matrix.CHECKS, FAIL))
        row.details = dict.fromkeys(matrix.CHECKS, "; ".join(wrong))
        return row
    with tempfile.TemporaryDirectory(prefix=f"{prepared.combo.name}.", dir=base) as workdir:
        setup = checks.Setup(node, runtime, prepared.venv, Path(workdir))
        results, details = checks.run(setup)
    return Row(
        prepared.combo, RAN, versions, results=results, details=details, notes=checks.trouble(setup), said=[*setup.said]
    )


def _install_runtime(base: Path) -> Path:
    """The runtime as the init container leaves it, installed by the real CLI from this checkout."""
    runtime = base / "runtime" / "plane-guard"
    argv = [str(PLANE_GUARD), "runtime", "install", str(runtime)]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise nodes.Unavailable(f"plane-guard runtime install failed (make venv first?): {done.stderr.strip()[-300:]}")
    return runtime


def _interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make compat", description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only these combinations (by name)")
    parser.add_argument("--cache", type=Path, default=REPO / ".compat", help="where the venvs are kept")
    parser.add_argument("--jobs", type=int, default=2, help="installs at once (first run only)")
    parser.add_argument(
        "--runtime",
        type=Path,
        help="an installed runtime to check instead of `plane-guard runtime install` (a hook draft)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="what each check saw, not only failures")
    args = parser.parse_args(argv)
    combos = [c for c in matrix.COMBOS if not args.only or c.name in args.only]
    if not combos:
        parser.error(f"no combination named {args.only}; known: {', '.join(c.name for c in matrix.COMBOS)}")
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        nodes.require()
        return _run(args, combos, started)
    except nodes.Unavailable as exc:
        say(str(exc))
        return 2
    except envs.IndexUnreachable as exc:
        say(f"{exc} (the first run installs every combination from PyPI)")
        return 2
    except KeyboardInterrupt:
        say("interrupted; the node, processes and nftables tables are cleaned up")
        return 130


def _run(args: argparse.Namespace, combos: list[Combo], started: float) -> int:
    cache = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".gitignore").write_text("# make compat's cache (virtual environments): never committed\n*\n")
    with ExitStack() as stack:
        stack.callback(envs.kill_running)
        nodes.remove_stale_black_holes()
        nodes.remove_stale_runs()
        base = nodes.run_dir()
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        node = nodes.Node(base)
        stack.callback(node.stop)
        node.start()
        runtime = args.runtime or _install_runtime(base)
        if not (runtime / "python" / "sitecustomize.py").is_file():
            raise nodes.Unavailable(f"{runtime} holds no start-up hook (python/sitecustomize.py)")

        pythons = {minor: envs.find_python(minor) for minor in sorted({c.python for c in combos})}
        for minor, found in pythons.items():
            say(
                f"Python {minor}: {found.path} ({found.version})"
                if found
                else f"Python {minor}: not installed, skipped"
            )
        say(f"preparing {len(combos)} combinations: venvs in {cache / 'venvs'}, a missing one installed from PyPI")
        pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
        try:
            futures = [pool.submit(_prepare, cache, combo, pythons[combo.python]) for combo in combos]
            prepared = [entry for future in futures for entry in future.result()]
        finally:  # on Ctrl-C, do not wait for pip: kill_running ends it
            pool.shutdown(wait=False, cancel_futures=True)
        installed_in = time.monotonic() - started
        built = sum(p.built for p in prepared)

        node.wait_ready()
        say(f"RabbitMQ node {node.name} on {nodes.HOST}:{node.port}; checking")
        rows = []
        for index, entry in enumerate(prepared, 1):
            if entry.row is None:
                say(f"[{index}/{len(prepared)}] {entry.combo.name}")
                entry.row = _check(node, runtime, entry, base)
            rows.append(entry.row)
    print(matrix.table(rows))
    shown = [(row, check) for row in rows for check in matrix.CHECKS if check in row.details]
    for row, check in shown:
        if args.verbose or row.results.get(check) == FAIL:
            print(f"  {row.combo.name} {check}: {row.results.get(check)}: {row.details[check]}")
    for row in rows:
        for line in row.said if args.verbose else row.notes:
            print(f"  {row.combo.name} hook: {line}")
    print(
        f"time: {time.monotonic() - started:.0f}s ({installed_in:.0f}s preparing, {built} venvs built, "
        f"{sum(p.venv is not None for p in prepared) - built} cached; cache {args.cache})"
    )
    print(matrix.last_line(rows), flush=True)
    if not any(row.status == RAN for row in rows):
        say("no combination ran (no interpreter, or none installable): nothing was checked")
        return 2
    return matrix.exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
