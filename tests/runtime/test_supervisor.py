"""``supervisor.py``, the wrapper's init: signals reach the worker behind a bash entrypoint that did not exec.

Plane's worker and beat entrypoints start Celery without ``exec``; bash stays PID 1 and ignores
the kubelet's SIGTERM. These tests run real processes, most of them as PID 1 of a PID namespace
of their own (``unshare --pid --fork --mount-proc``), as in a container, and signal that PID 1
from outside as the kubelet does. The worker entrypoint, the app and the Celery app are in
``tests/runtime/entrypoints/``.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import termios
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.pods import wait_for
from tests.runtime.conftest import base_env
from webhook.runtime import supervisor

ENTRYPOINTS = Path(__file__).resolve().parent / "entrypoints"
APP = str(ENTRYPOINTS / "app.py")
UNSHARE = shutil.which("unshare")
#: The kubelet's default terminationGracePeriodSeconds is 30; the worker must be gone well before.
PROMPT = 5.0


@pytest.fixture(scope="session")
def pid_namespace() -> list[str]:
    """The prefix that makes a command PID 1 of a new PID namespace, with its own /proc."""
    if UNSHARE is None:
        pytest.skip("unshare (util-linux) is not installed: apt-get install util-linux")
    probe = [UNSHARE, "--pid", "--fork", "--mount-proc", "/bin/sh", "-c", "echo $$"]
    done = subprocess.run(probe, check=False, capture_output=True, text=True, timeout=30)
    if done.returncode != 0 or done.stdout.strip() != "1":
        pytest.skip(f"unshare --pid --fork --mount-proc does not work here (needs root): {done.stderr.strip()[:200]}")
    return [UNSHARE, "--pid", "--fork", "--mount-proc"]


@pytest.fixture
def worker_script(tmp_path: Path) -> str:
    """Plane-shaped worker entrypoint (bash, set -e, no exec), executable wherever the checkout came from."""
    target = tmp_path / "docker-entrypoint-worker.sh"
    shutil.copyfile(ENTRYPOINTS / "worker-no-exec.sh", target)
    target.chmod(0o755)
    return str(target)


def _stat(pid: int) -> tuple[str, str, int] | None:
    try:
        return supervisor.parse_stat(Path(f"/proc/{pid}/stat").read_bytes())
    except OSError:
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def descendants(root: int) -> dict[int, tuple[str, str, int]]:
    """Every process under ``root`` (host pids) with its (comm, state, ppid)."""
    table = {int(e): s for e in os.listdir("/proc") if e.isdigit() and (s := _stat(int(e))) is not None}
    found, queue = {}, [root]
    while queue:
        parent = queue.pop()
        for pid, info in table.items():
            if info[2] == parent and pid not in found:
                found[pid] = info
                queue.append(pid)
    return found


class Container:
    """A command run as a container's process: PID 1 of its own PID namespace when ``namespace`` is given."""

    def __init__(self, argv: list[str], tmp_path: Path, namespace: list[str] | None = None, **env: str):
        self.markers = tmp_path / "markers.txt"
        self.markers.touch()
        self.stdout_path = tmp_path / "stdout.txt"
        self.stderr_path = tmp_path / "stderr.txt"
        full_env = base_env(PLANE_FAKE_MARKERS=str(self.markers), **env)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [*(namespace or []), *argv],
                env=full_env,
                cwd=ENTRYPOINTS,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.namespaced = namespace is not None

    def init_pid(self) -> int:
        """The host pid of the container's PID 1 (unshare's only child), as the kubelet signals it."""
        if not self.namespaced:
            return self.process.pid

        def child() -> int | None:
            kids = [pid for pid, info in descendants(self.process.pid).items() if info[2] == self.process.pid]
            return kids[0] if kids else None

        return wait_for(child, timeout=10, what="the namespace's PID 1")

    def lines(self) -> list[str]:
        return self.markers.read_text().splitlines()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_line(self, prefix: str, timeout: float = 30) -> str:
        def found() -> str | None:
            if self.process.poll() is not None and not any(line.startswith(prefix) for line in self.lines()):
                raise AssertionError(f"exited {self.process.returncode} before {prefix!r}:\n{self.stderr()[-3000:]}")
            return next((line for line in self.lines() if line.startswith(prefix)), None)

        return wait_for(found, timeout=timeout, interval=0.05, what=repr(prefix))

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """Everything it started: the namespace dies with its PID 1, the rest shares the process group."""
        if self.namespaced and self.process.poll() is None:
            for pid in descendants(self.process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _wrapped(runtime_dir: Path, *command: str) -> list[str]:
    """The container command plane-guard writes: ``/bin/sh DIR/entrypoint.sh <original command>``."""
    return ["/bin/sh", str(runtime_dir / "entrypoint.sh"), *command]


def _forward_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " forwarded to " in line]


# ---------------------------------------------------------------------------------------------
# The problem, and the fix on real process trees.


def test_baseline_bash_as_pid_1_ignores_sigterm(pid_namespace, worker_script, tmp_path):
    """Without plane-guard: the kubelet's SIGTERM to a bash PID 1 goes nowhere, the worker runs on."""
    container = Container([worker_script, "python3", APP], tmp_path, pid_namespace)
    try:
        container.wait_line("app pid=")
        init = container.init_pid()
        assert _cmdline(init)[:2] == ["/bin/bash", worker_script]
        os.kill(init, signal.SIGTERM)
        time.sleep(2)
        assert "app got SIGTERM" not in container.lines()
        assert container.process.poll() is None, "bash as PID 1 must have ignored SIGTERM"
    finally:
        container.kill()


def test_guarded_sigterm_reaches_the_worker_behind_bash_and_no_zombie_stays(
    pid_namespace, runtime_dir, worker_script, tmp_path, shell
):
    command = [*shell, str(runtime_dir / "entrypoint.sh"), worker_script, "python3", APP, "--orphan"]
    container = Container(command, tmp_path, pid_namespace, APP_EXIT="3")
    try:
        app_pid = int(container.wait_line("app pid=").split()[1].split("=")[1])
        init = container.init_pid()
        assert _cmdline(init)[-5:-3] == [str(runtime_dir / "supervisor.py"), worker_script], _cmdline(init)
        # The orphan was reparented to the supervisor (PID 1), exited, and was reaped.
        assert container.wait_line("orphan ppid=", timeout=10) == "orphan ppid=1 exiting"
        wait_for(
            lambda: not [p for p, info in descendants(init).items() if info[1] == "Z"],
            timeout=3,
            what="no zombie under the supervisor",
        )
        assert container.process.poll() is None
        sent = time.monotonic()
        os.kill(init, signal.SIGTERM)
        code = container.wait(timeout=20)
        elapsed = time.monotonic() - sent
    finally:
        container.kill()
    assert code == 3, container.stderr()
    assert elapsed < PROMPT, f"took {elapsed:.1f} s to exit"
    assert container.lines().count("app got SIGTERM") == 1
    assert "worker exited 0" not in container.lines()  # set -e: bash ended with the worker's 3, not 143
    assert _forward_lines(container.stderr()) == [f"plane-guard: SIGTERM forwarded to {app_pid} (python3)"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [(["/bin/sh", "-c", "exit 3"], 3), (["python3", APP], 137), (["/bin/sh", "-c", "kill -TERM $$"], 143)],
    ids=["exit-3", "sigkill-137", "sigterm-143"],
)
def test_exit_status_is_the_commands(pid_namespace, runtime_dir, tmp_path, command, expected):
    container = Container(_wrapped(runtime_dir, *command), tmp_path, pid_namespace)
    try:
        if expected == 137:
            container.wait_line("app pid=")
            (app,) = [p for p in descendants(container.process.pid) if _cmdline(p) == ["python3", APP]]
            os.kill(app, signal.SIGKILL)
        code = container.wait(timeout=20)
    finally:
        container.kill()
    assert code == expected, container.stderr()


def test_every_forwarded_signal_reaches_the_worker_and_spares_bash(pid_namespace, runtime_dir, worker_script, tmp_path):
    container = Container(_wrapped(runtime_dir, worker_script, "python3", APP), tmp_path, pid_namespace)
    names = ["SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGINT", "SIGTTIN", "SIGTTOU"]
    try:
        container.wait_line("app pid=")
        init = container.init_pid()
        for name in names:
            os.kill(init, getattr(signal, name))
            container.wait_line(f"app got {name}", timeout=10)
        os.kill(init, signal.SIGTERM)
        code = container.wait(timeout=20)
    finally:
        container.kill()
    assert code == 0, container.stderr()
    got = [line for line in container.lines() if line.startswith("app got")]
    assert got == [f"app got {name}" for name in [*names, "SIGTERM"]]
    assert container.lines()[-1] == "worker exited 0", "bash was killed by a signal meant for the worker"
    assert [line.split()[1] for line in _forward_lines(container.stderr())] == [*names, "SIGTERM"]


def test_supervise_off_keeps_the_plain_exec(pid_namespace, runtime_dir, tmp_path):
    show = "import os; print(os.getpid(), open('/proc/1/cmdline').read().replace(chr(0), ' '))"
    seen = {}
    for value in ("0", "false", "no", "1", ""):
        env = {"PLANE_GUARD_SUPERVISE": value} if value else {}
        container = Container(_wrapped(runtime_dir, "python3", "-c", show), tmp_path, pid_namespace, **env)
        try:
            assert container.wait(timeout=20) == 0, container.stderr()
        finally:
            container.kill()
        pid, init = container.stdout_path.read_text().split(" ", 1)
        seen[value] = (pid == "1", "supervisor.py" in init)
    assert seen == {
        "0": (True, False),
        "false": (True, False),
        "no": (True, False),
        "1": (False, True),
        "": (False, True),
    }


def test_without_python_on_path_the_wrapper_plain_execs(pid_namespace, runtime_dir, tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    container = Container(
        _wrapped(runtime_dir, sys.executable, "-I", "-c", "import os; print(os.getpid())"),
        tmp_path,
        pid_namespace,
        PATH=str(empty),
    )
    try:
        assert container.wait(timeout=20) == 0, container.stderr()
    finally:
        container.kill()
    assert container.stdout_path.read_text().strip() == "1"
    assert "no python3 or python on PATH" in container.stderr()


def test_not_pid_1_it_is_the_subreaper_of_orphans(runtime_dir, tmp_path):
    """With a shared process namespace the supervisor is not PID 1: orphans still come to it and are reaped."""
    container = Container(_wrapped(runtime_dir, "python3", APP, "--orphan"), tmp_path)
    try:
        orphan_line = container.wait_line("orphan ppid=", timeout=15)
        container.wait_line("app pid=")
        assert orphan_line == f"orphan ppid={container.process.pid} exiting"
        wait_for(
            lambda: not [p for p, info in descendants(container.process.pid).items() if info[1] == "Z"],
            timeout=3,
            what="no zombie under the supervisor",
        )
        container.process.send_signal(signal.SIGTERM)
        assert container.wait(timeout=20) == 0
    finally:
        container.kill()


@pytest.mark.parametrize(
    ("command", "code", "message"), [("./no-such-entrypoint.sh", 127, "No such file"), ("/etc/hostname", 126, "")]
)
def test_a_command_that_cannot_run_is_127_or_126_with_a_line(runtime_dir, tmp_path, command, code, message):
    done = subprocess.run(
        _wrapped(runtime_dir, command), check=False, env=base_env(), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == code
    assert f"plane-guard: cannot run {command}: {message}" in done.stderr


def test_a_terminal_sigint_is_not_forwarded_twice(runtime_dir, worker_script, tmp_path):
    """``tty: true``: Ctrl-C reaches the whole foreground group from the kernel (SI_KERNEL), the worker once."""
    master, slave = os.openpty()
    markers = tmp_path / "markers.txt"
    markers.touch()
    stderr_path = tmp_path / "stderr.txt"

    def lines() -> list[str]:
        return markers.read_text().splitlines()

    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            _wrapped(runtime_dir, worker_script, "python3", APP),
            env=base_env(PLANE_FAKE_MARKERS=str(markers)),
            stdin=slave,
            stdout=slave,
            stderr=err,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
    try:
        wait_for(lambda: any(line.startswith("app pid=") for line in lines()), timeout=30, what="the app")
        os.write(master, b"\x03")  # Ctrl-C
        wait_for(lambda: "app got SIGINT" in lines(), timeout=10, what="the terminal's SIGINT")
        time.sleep(1)
        assert lines().count("app got SIGINT") == 1
        assert "SIGINT forwarded" not in stderr_path.read_text()
        process.send_signal(signal.SIGINT)  # the same signal from kill(2) is forwarded
        wait_for(lambda: lines().count("app got SIGINT") == 2, timeout=10, what="the forwarded SIGINT")
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
        os.close(master)
        os.close(slave)
    assert code == 0, stderr_path.read_text()
    assert lines()[-1] == "worker exited 0", "bash was stopped by the terminal's SIGINT"
    assert [line.split()[1] for line in _forward_lines(stderr_path.read_text())] == ["SIGINT", "SIGTERM"]


# ---------------------------------------------------------------------------------------------
# A real Celery worker: warm shutdown behind Plane's bash entrypoint.


@pytest.mark.broker
def test_celery_warm_shutdown_finishes_the_task_and_leaves_the_rest_queued(
    pid_namespace, runtime_dir, worker_script, tmp_path
):
    from celery import Celery

    from tests.proof import broker

    broker.require_broker()
    vhost = broker.VHost("plane-guard-supervisor")
    queue = f"pg-supervisor-{uuid.uuid4().hex[:8]}"
    publisher = Celery("pg_supervisor_publisher", broker=vhost.url())
    container = None
    try:
        for number in range(3):
            publisher.send_task("pg_supervisor.slow", args=[number, 4.0], queue=queue)
        publisher.close()
        worker = [worker_script, "celery", "-A", "pg_celery_app", "worker", "-l", "info", "-P", "prefork", "-c", "1"]
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-n", f"{queue}@%h"]
        container = Container(
            _wrapped(runtime_dir, *worker), tmp_path, pid_namespace, PG_BROKER_URL=vhost.url(), PG_QUEUE=queue
        )
        container.wait_line("task 0 start", timeout=90)
        time.sleep(1.5)
        init = container.init_pid()
        sent = time.monotonic()
        os.kill(init, signal.SIGTERM)
        code = container.wait(timeout=30)
        elapsed = time.monotonic() - sent
        depth = wait_for(
            lambda: (d := vhost.queue_depth(queue)) == 2 and d, timeout=15, what="two tasks back in the queue"
        )
    finally:
        if container is not None:
            container.kill()
        publisher.close()
        vhost.delete()
    stderr = container.stderr()
    assert code == 0, stderr[-3000:]
    assert elapsed < 15, f"warm shutdown took {elapsed:.1f} s"
    tasks = [line.rsplit(" pid=", 1)[0] for line in container.lines() if line.startswith("task ")]
    assert tasks == ["task 0 start", "task 0 done"], container.lines()
    assert depth == 2
    assert "worker: Warm shutdown (MainProcess)" in container.stdout_path.read_text()  # Celery says it on stdout
    forwarded = _forward_lines(stderr)
    assert len(forwarded) == 1 and re.fullmatch(r"plane-guard: SIGTERM forwarded to \d+ \(celery\)", forwarded[0]), (
        forwarded
    )
    assert container.lines()[-1] == "worker exited 0"


# ---------------------------------------------------------------------------------------------
# Who gets the signal, on real trees; the pieces that decide it.


def _tree(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen(argv, start_new_session=True, stdin=subprocess.PIPE, **kwargs)


def _settled(process: subprocess.Popen, count: int) -> dict[int, tuple[str, str, int]]:
    return wait_for(lambda: len(d := descendants(process.pid)) >= count and d, timeout=10, what=f"{count} descendants")


def _end(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


WORKER = """
import os, time
for _ in range(2):
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
time.sleep(30)
"""
#: bash (no exec) -> sh -> a program whose name has a space and parentheses; bash -> a python master -> 2 children.
TREE = """
sh -c '"$0" 30; true' "$ODD" &
"$PY" -c "$WORKER" &
wait
"""


def test_targets_skip_shells_and_stop_at_the_first_worker(tmp_path):
    odd = tmp_path / "sl) (ee p"
    shutil.copyfile("/bin/sleep", odd)
    odd.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "ODD": str(odd), "PY": sys.executable, "WORKER": WORKER}
    process = _tree(["/bin/bash", "-c", TREE], env=env)
    try:
        tree = _settled(process, 5)
        (sleeper,) = [pid for pid, info in tree.items() if info[0] == "sl) (ee p"]
        (master,) = [
            pid for pid, info in tree.items() if info[2] == process.pid and _cmdline(pid)[:1] == [sys.executable]
        ]
        expected = [(sleeper, "sl) (ee p"), (master, tree[master][0])]
        assert sorted(supervisor.targets(process.pid)) == sorted(expected)
    finally:
        _end(process)


def test_a_tree_of_shells_only_gets_the_signal_at_its_top():
    process = _tree(["/bin/bash", "-c", "sh -c 'read line; true'; true"])
    try:
        _settled(process, 1)
        assert supervisor.targets(process.pid) == [(process.pid, "bash")]
    finally:
        _end(process)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed (apt-get install busybox)")
def test_busybox_sh_is_a_shell():
    process = _tree(["busybox", "sh", "-c", "/bin/sleep 30; true"])
    try:
        tree = _settled(process, 1)
        assert supervisor.targets(process.pid) == [(next(iter(tree)), "sleep")]
    finally:
        _end(process)


@pytest.mark.parametrize(
    ("cmdline", "shell"),
    [
        (b"/bin/bash\0/docker-entrypoint-worker.sh\0", True),
        (b"-bash\0", True),
        (b"sh\0-c\0celery worker\0", True),
        (b"/bin/dash\0", True),
        (b"/bin/busybox\0sh\0/entrypoint.sh\0", True),
        (b"busybox\0-ash\0", True),
        (b"/usr/local/bin/python\0/usr/local/bin/celery\0-A\0plane\0worker\0", False),
        (b"/bin/busybox\0sleep\0100\0", False),
        (b"busybox\0", False),
        (b"[celeryd: celery@plane-worker:MainProcess] -active- (worker -A plane)", False),
        (b"/usr/bin/shellcheck\0", False),
        (b"", False),
    ],
)
def test_is_shell(cmdline, shell):
    assert supervisor.is_shell(cmdline) is shell


def test_parse_stat_reads_after_the_last_parenthesis():
    assert supervisor.parse_stat(b"17 (a) (b c)) S 1 17 17 0 -1 4194304 0 0\n") == ("a) (b c)", "S", 1)
    assert supervisor.parse_stat(b"") is None


@pytest.mark.parametrize(
    ("signo", "code", "forwarded"),
    [
        (signal.SIGTERM, 0, True),  # SI_USER: kill(2), as runc sends the kubelet's SIGTERM
        (signal.SIGINT, -6, True),  # SI_TKILL
        (signal.SIGINT, 0x80, False),  # SI_KERNEL: the tty driver's Ctrl-C, already delivered
        (signal.SIGHUP, 0x80, False),
        (signal.SIGCHLD, 1, False),
    ],
)
def test_should_forward(signo, code, forwarded):
    assert supervisor.should_forward(SimpleNamespace(si_signo=signo, si_code=code)) is forwarded


# ---------------------------------------------------------------------------------------------
# What it costs: resident memory for the container's life, and start-up time.


def _rss_kb(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in status) if k in ("VmRSS", "RssAnon")}


def _added_ms(
    with_: tuple[list[str], dict[str, str]], without: tuple[list[str], dict[str, str]], runs: int = 21
) -> float:
    """Median of ``with_`` minus median of ``without``, run alternately so that load on the machine hits both."""
    times: dict[int, list[float]] = {0: [], 1: []}
    for _ in range(runs):
        for index, (argv, env) in enumerate((with_, without)):
            started = time.perf_counter()
            subprocess.run(
                argv, env=base_env(**env), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30
            )
            times[index].append(time.perf_counter() - started)
    return (statistics.median(times[0]) - statistics.median(times[1])) * 1000


def test_resident_memory_and_start_up_cost(pid_namespace, runtime_dir, tmp_path, capsys):
    rss = {}
    for label, namespace in (("PID 1", pid_namespace), ("not PID 1 (ctypes, subreaper)", None)):
        directory = tmp_path / label.split()[0]
        directory.mkdir()
        container = Container(_wrapped(runtime_dir, "python3", APP), directory, namespace)
        try:
            container.wait_line("app pid=")
            init = container.init_pid()
            os.kill(init, signal.SIGUSR1)  # a forward walks /proc: measure after one
            container.wait_line("app got SIGUSR1")
            rss[label] = _rss_kb(init)
        finally:
            container.kill()
    start = [sys.executable, "-I", "-S", str(runtime_dir / "supervisor.py"), "/bin/true"]
    added = _added_ms((start, {}), (["/bin/true"], {}))
    with capsys.disabled():
        for label, values in rss.items():
            print(f"\nsupervisor resident, {label}: VmRSS {values['VmRSS']} kB, RssAnon {values['RssAnon']} kB", end="")
        print(f"\nsupervisor start-up: {added:.1f} ms (python -I -S supervisor.py /bin/true, over /bin/true alone)")
    for values in rss.values():
        assert values["VmRSS"] < 20_000, rss
    assert added < 500
