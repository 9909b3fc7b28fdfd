"""plane-guard's init for Plane containers: the kubelet's signals reach the process that does the work.

Plane's worker and beat entrypoints are bash scripts that start Celery without ``exec``, so bash
stays the container's PID 1. A PID 1 without a handler ignores SIGTERM: Celery never hears it and
is SIGKILLed at the end of the grace period, in the middle of a task it already acknowledged.

``entrypoint.sh`` ends with ``exec python3 -I -S supervisor.py <original command...>``, and this
process then:

* runs the command as its child, in the same session and process group (``tty: true`` keeps
  working), with default signal dispositions and nothing blocked;
* reaps every child it gets, its own and the orphans reparented to it (it is PID 1, or a child
  subreaper when it is not), so zombies never pile up;
* forwards SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN and SIGTTOU to the topmost
  processes of the command's tree that are not shells (celery under a bash entrypoint, gunicorn
  when the entrypoint exec'd it), or to the command itself when the tree holds only shells. A
  shell would die of the signal (143) instead of reporting the worker's status, and Celery's pool
  children must not get it. Signals a terminal sent (Ctrl-C with ``tty: true``: si_code
  SI_KERNEL) already reached the foreground process group and are not sent twice;
* exits as soon as the command does, with its status (128+N when signal N killed it).

Escape hatch: ``PLANE_GUARD_SUPERVISE=0`` (or ``false``, ``no``) on the container makes the
wrapper ``exec`` the command as before, which is then the container's process again.

It stays resident for the container's life, so it imports as little as possible: the C module
``_signal`` (``signal`` would pull in enum, functools and collections), ctypes only when prctl is
needed. Standard library only (Python 3.11-3.13, glibc or musl); stderr never shows more than
signal names, process ids and process names.
"""

from __future__ import annotations  # the annotations must not break an older python3 in some image

import os
import sys

try:
    import _signal as signal
except ImportError:  # pragma: no cover - every CPython 3.11-3.13 has it
    import signal

#: si_code of a signal the kernel generated itself (the tty driver: Ctrl-C, Ctrl-\, hang-up).
SI_KERNEL = 0x80
PR_SET_CHILD_SUBREAPER = 36
#: The signals an operator or the kubelet sends that the application must get (gunicorn uses TTIN/TTOU).
FORWARDED = {
    getattr(signal, name): name
    for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTTIN", "SIGTTOU")
}
WATCHED = frozenset({*FORWARDED, signal.SIGCHLD})
SHELLS = frozenset({b"sh", b"bash", b"dash", b"ash", b"zsh", b"ksh", b"mksh"})


def say(message: str) -> None:
    """One line on stderr, unbuffered (nothing is lost when the process exits right after)."""
    os.write(2, f"plane-guard: {message}\n".encode(errors="replace"))


def _read(path: str, size: int = 8192) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, size)
    except OSError:
        return b""
    finally:
        os.close(fd)


def parse_stat(data: bytes) -> tuple[str, str, int] | None:
    """``(comm, state, ppid)`` from /proc/PID/stat; comm may hold spaces and ')', so split at the last ')'."""
    end = data.rfind(b")")
    fields = data[end + 2 :].split() if end >= 0 else []
    if len(fields) < 2 or not fields[1].isdigit():
        return None
    comm = data[data.find(b"(") + 1 : end].decode(errors="replace")
    return "".join(c if c.isprintable() else "?" for c in comm), fields[0].decode(), int(fields[1])


def is_shell(cmdline: bytes) -> bool:
    """Whether argv[0] (from /proc/PID/cmdline) is a shell; a shebang script's argv[0] is its interpreter."""
    argv = cmdline.split(b"\0")
    name = os.path.basename(argv[0]).lstrip(b"-")
    if name == b"busybox" and len(argv) > 1:
        name = os.path.basename(argv[1]).lstrip(b"-")
    return name in SHELLS


def targets(root: int) -> list[tuple[int, str]]:
    """The topmost live processes under ``root`` (itself included) that are not shells, else live ``root``."""
    table: dict[int, tuple[str, str, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: the command itself is the best guess
        return [(root, "?")]
    for entry in entries:
        if entry.isdigit():
            parsed = parse_stat(_read(f"/proc/{entry}/stat"))
            if parsed is not None:
                table[int(entry)] = parsed
    children: dict[int, list[int]] = {}
    for pid, (_, _, ppid) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        comm, state, _ = table.get(pid, ("?", "X", 0))
        if state in ("Z", "X"):
            continue
        if is_shell(_read(f"/proc/{pid}/cmdline")):
            queue.extend(sorted(children.get(pid, ())))
        else:
            found.append((pid, comm))
    if found or root not in table:
        return found or [(root, "?")]
    comm, state, _ = table[root]
    return [] if state in ("Z", "X") else [(root, comm)]


def _kill(pid: int, signo: int) -> bool:
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        return False
    return True


def forward(signo: int, root: int) -> None:
    """Send ``signo`` to the targets under ``root`` and say so in one line."""
    sent = [f"{pid} ({comm})" for pid, comm in targets(root) if _kill(pid, signo)]
    name = FORWARDED.get(signo, str(signo))
    say(f"{name} forwarded to {', '.join(sent)}" if sent else f"{name}: the command has already exited")


def should_forward(info) -> bool:
    """Not SIGCHLD, and not generated by a terminal: those reached the foreground process group already."""
    return info.si_signo in FORWARDED and info.si_code != SI_KERNEL


def exit_code(status: int) -> int:
    """A shell's ``$?``: the exit code, or 128+N when signal N killed the process."""
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def become_subreaper() -> None:
    """Orphans of the command's tree get reparented here (not to a PID 1 that may not reap them)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(
            PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)
        )
    except (ImportError, OSError, AttributeError):
        return


def _exec(argv: list[str]) -> None:
    """Replace this process with the command; on failure exit 127 (not found) or 126, as a shell does."""
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        say(f"cannot run {argv[0]}: {exc.strerror or exc}")
        os._exit(127 if isinstance(exc, (FileNotFoundError, NotADirectoryError)) else 126)


def spawn(argv: list[str]) -> int:
    """Fork and exec the command, which starts with default dispositions and an empty signal mask."""
    pid = os.fork()
    if pid:
        return pid
    try:  # the child must never return into the supervisor's code
        for signo in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
            try:
                signal.signal(signo, signal.SIG_DFL)
            except (OSError, ValueError):
                continue
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        _exec(argv)
    finally:
        os._exit(126)


def reap(child: int) -> int | None:
    """Reap every child that has exited; the main child's exit code when it is among them."""
    code = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == child:
            code = exit_code(status)


def prepare() -> None:
    """Block the watched signals and become the parent that reaps everything; before the fork."""
    # Blocked signals are queued even for a PID 1 (which discards default-disposition ones) and
    # are taken one at a time by sigwaitinfo: no handler, no race with fork or waitpid.
    signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)
    # An inherited SIG_IGN would make the kernel reap children itself and lose the exit status.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if os.getpid() != 1:
        become_subreaper()


def wait(child: int) -> int:
    """Forward and reap until the main child exits; its exit code."""
    while True:
        info = signal.sigwaitinfo(WATCHED)
        if info.si_signo == signal.SIGCHLD:
            code = reap(child)
            if code is not None:
                return code
        elif should_forward(info):
            try:
                forward(info.si_signo, child)
            except Exception:  # noqa: BLE001 - whatever /proc holds, the signal must not be lost
                _kill(child, info.si_signo)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        say("supervisor.py got no command to run")
        return 64
    try:
        prepare()
    except Exception as exc:  # noqa: BLE001 - never keep Plane from starting: the plain exec instead
        say(f"cannot supervise the command ({type(exc).__name__}); running it without the supervisor")
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        _exec(args)
    return wait(spawn(args))


if __name__ == "__main__":
    sys.exit(main())
