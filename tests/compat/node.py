"""A RabbitMQ node of the matrix's own, and the loopback black hole, driven the way an operator would.

The memory alarm is broker-wide: raised on the shared broker on 127.0.0.1:5672 it would block
everyone else's tests. So the matrix starts a second node (``plane-guard-compat-<pid>@localhost``, own
port, own data and log directories, own Erlang cookie) from the installed ``rabbitmq-server``, and
stops it again whatever happens; a node, directory or nftables table left by a killed run is
removed by the next one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.proof import broker

#: Each run names its node ``plane-guard-compat-<pid>@localhost``: a stale node never holds the name.
NODENAME_PREFIX = "plane-guard-compat"
HOST = "127.0.0.1"
USER = PASSWORD = "guest"
RABBITMQ_BIN = Path(os.environ.get("RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
NFT = os.environ.get("NFT", "nft")
NFT_TABLE_PREFIX = "plane_guard_compat_"
#: Set to raise the memory alarm (nothing has that little memory); Erlang prints it ``1.0e-6``.
ALARM_WATERMARK = "0.000001"
#: RabbitMQ's default watermark, restored to clear the alarm (the node is ours: nothing else to restore).
NORMAL_WATERMARK = "0.4"


class Unavailable(RuntimeError):
    """A prerequisite of the matrix is missing; the message names it and how to get it."""


def require() -> None:
    """Root, rabbitmq-server, nft and ss: without them the matrix proves nothing, so it does not start."""
    if os.geteuid() != 0:
        raise Unavailable("make compat needs root (a RabbitMQ node of its own, nftables); run it as root")
    for tool in ("rabbitmq-server", "rabbitmqctl"):
        if not (RABBITMQ_BIN / tool).exists():
            raise Unavailable(f"RabbitMQ is missing: {RABBITMQ_BIN / tool} not found (apt-get install rabbitmq-server)")
    if shutil.which(NFT) is None:
        raise Unavailable("nftables is missing: nft not on PATH (apt-get install nftables)")
    if shutil.which("ss") is None:
        raise Unavailable("ss is missing (apt-get install iproute2)")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


#: Everything a run leaves in the temporary directory is under ``RUN_PREFIX<its pid>``.
RUN_PREFIX = "plane-guard-compat."


def run_dir() -> Path:
    """This run's own temporary directory (node data, the installed runtime, stderr files)."""
    path = Path(tempfile.gettempdir()) / f"{RUN_PREFIX}{os.getpid()}"
    path.mkdir(exist_ok=True)
    return path


def record_group(pid: int) -> None:
    """Note a process group this run started (its own session), so a later run can end it if this one is killed."""
    with open(run_dir() / "groups", "a") as groups:
        groups.write(f"{pid}\n")


def remove_stale_runs() -> None:
    """What a killed run left: its node and processes (by the groups it recorded) and its directory.

    A run still alive is left alone: each run has its own node name and ports, so two can coexist.
    """
    for path in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*"):
        owner = path.name[len(RUN_PREFIX) :]
        if not owner.isdigit() or os.path.exists(f"/proc/{owner}"):
            continue
        try:
            groups = [int(line) for line in (path / "groups").read_text().split()]
        except (OSError, ValueError):
            groups = []
        for pgid in groups:
            # Each of them has the run's directory in its environment: never a group that merely reused the id.
            if str(path) in _environ(pgid):
                _kill_group(pgid)
        shutil.rmtree(path, ignore_errors=True)


class Node:
    """The matrix's own RabbitMQ node, named after this run; ``start()``, ``wait_ready()``, and always ``stop()``."""

    def __init__(self, base: Path, port: int = 5673):
        self.dir = base / "node"
        self.name = f"{NODENAME_PREFIX}-{os.getpid()}@localhost"
        self.port = port
        self.process: subprocess.Popen | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the node in the background; ``wait_ready`` waits for it."""
        self.port = next((p for p in range(self.port, self.port + 20) if _free(p) and _free(p + 20000)), 0)
        if not self.port:
            raise Unavailable("no free port pair for the matrix's RabbitMQ node (tried 5673-5692 and +20000)")
        for sub in ("home", "mnesia", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.default = {HOST}:{self.port}\nloopback_users = none\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's: that one names the main node
        (self.dir / "enabled_plugins").write_text("[].\n")  # no management listener to collide with
        env = self._env(
            RABBITMQ_CONF_ENV_FILE=str(self.dir / "rabbitmq-env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
            RABBITMQ_NODE_IP_ADDRESS=HOST,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.port + 20000),
            RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.dir / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.dir / "pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        with open(self.dir / "server.log", "wb") as log:
            self.process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=env,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        record_group(self.process.pid)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise Unavailable(f"the matrix's RabbitMQ node did not start: {self._log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"the matrix's RabbitMQ node did not listen on {self.port} within {timeout}s")
            time.sleep(0.5)
        self.ctl("await_startup", "--timeout", "60", timeout=90)

    def stop(self) -> None:
        """Stop the node (``rabbitmqctl stop``, then SIGKILL to its own process group) and delete its files."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.ctl("stop", timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill_group(self.process.pid)  # its own session: the shell, beam and their children
                self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _env(self, **extra: str) -> dict[str, str]:
        base = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.dir / "home"),  # the Erlang cookie of this node only
            "RABBITMQ_NODENAME": self.name,
            "ERL_EPMD_ADDRESS": HOST,
        }
        return {**base, **extra}

    def _log_tail(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-1500:]
        except (OSError, TypeError):
            return "(no log)"

    # -- rabbitmqctl ---------------------------------------------------------------------------

    def ctl(self, *args: str, timeout: float = 30) -> str:
        argv = [str(RABBITMQ_BIN / "rabbitmqctl"), "-q", "-n", self.name, *args]
        done = subprocess.run(argv, env=self._env(), check=False, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args[:2])} exited {done.returncode}: {done.stderr.strip()[:300]}"
            )
        return done.stdout

    def url(self, vhost: str) -> str:
        return f"amqp://{USER}:{PASSWORD}@{HOST}:{self.port}/{vhost}"

    def add_vhost(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, USER, ".*", ".*", ".*")
        return name

    def delete_vhost(self, name: str) -> None:
        try:
            self.ctl("delete_vhost", name)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass  # the node is deleted at the end anyway

    def channels(self, vhost: str) -> list[tuple[str, bool]]:
        """(name, in confirm mode) of every channel in ``vhost``, as the broker sees them."""
        out = self.ctl("--no-table-headers", "list_channels", "vhost", "name", "confirm")
        found = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[0] == vhost:
                found.append((parts[1], parts[2] == "true"))
        return found

    def alarm_active(self) -> bool:
        return "memory" in self.ctl("eval", "rabbit_alarm:get_alarms().")

    @contextmanager
    def memory_alarm(self, timeout: float = 20) -> Iterator[None]:
        """The broker stays up but blocks every publishing connection; always cleared again."""
        try:
            self.ctl("set_vm_memory_high_watermark", ALARM_WATERMARK)
            self._wait_alarm(True, timeout)
            yield
        finally:
            self.ctl("set_vm_memory_high_watermark", NORMAL_WATERMARK)
            self._wait_alarm(False, timeout)

    def _wait_alarm(self, active: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.alarm_active() != active:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the memory alarm did not turn {'on' if active else 'off'} within {timeout}s")
            time.sleep(0.2)


def _environ(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------
# The loopback network


def broker_ports_of(pid: int, broker_port: int) -> list[int]:
    """Local ports of the established connections that process ``pid`` holds to the broker."""
    done = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( dport = :{broker_port} )"],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    ports = []
    for line in done.stdout.splitlines():
        fields = line.split()
        if re.search(rf"pid={pid},", line) and len(fields) > 2 and fields[2].startswith(f"{HOST}:"):
            ports.append(int(fields[2].rsplit(":", 1)[1]))
    return sorted(ports)


def _nft_tables() -> list[str]:
    done = subprocess.run([NFT, "list", "tables", "inet"], check=False, capture_output=True, text=True, timeout=10)
    return [line.split()[-1] for line in done.stdout.splitlines() if line.startswith("table inet ")]


def remove_stale_black_holes() -> None:
    """Delete the black-hole tables of earlier runs whose process is gone (a killed ``make compat``)."""
    for table in _nft_tables():
        if table.startswith(NFT_TABLE_PREFIX):
            pid = table[len(NFT_TABLE_PREFIX) :].split("_")[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                subprocess.run([NFT, "delete", "table", "inet", table], check=False, capture_output=True, timeout=10)


@contextmanager
def black_hole(ports: list[int], broker_port: int) -> Iterator[str]:
    """Drop every packet between ``ports`` and this node, both ways (``tests/proof/broker.black_hole``
    on the matrix's own port and nftables table names)."""
    with broker.black_hole(ports, broker_port=broker_port, table_prefix=NFT_TABLE_PREFIX) as table:
        yield table
