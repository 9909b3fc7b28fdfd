"""The real RabbitMQ on 127.0.0.1:5672 and the loopback network, driven the way an operator would.

Every run gets its own vhost (queues and connections of one run never meet another's, and other
people's connections are never closed), and ``close_all_connections`` is limited to it. The
black hole is an nftables table of its own that is always deleted again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
PORT = 5672
USER = os.environ.get("PLANE_GUARD_TEST_AMQP_USER", "guest")
PASSWORD = os.environ.get("PLANE_GUARD_TEST_AMQP_PASSWORD", "guest")
RABBITMQCTL = os.environ.get("RABBITMQCTL", "rabbitmqctl")
NFT = os.environ.get("NFT", "nft")
NFT_TABLE_PREFIX = "plane_guard_proof_"


class Unavailable(RuntimeError):
    """A required real part (broker, rabbitmqctl, nft, root) is missing; the message says how to fix it."""


def _run(argv: list[str], timeout: float = 30.0) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... exited {done.returncode}: {done.stderr.strip()[:500]}")
    return done.stdout


def require_broker() -> None:
    """Fail with instructions unless RabbitMQ answers on 127.0.0.1:5672 and rabbitmqctl works."""
    try:
        with socket.create_connection((HOST, PORT), timeout=3):
            pass
    except OSError as exc:
        raise Unavailable(
            f"RabbitMQ is not reachable on {HOST}:{PORT} ({exc}). Start it (rabbitmq-server -detached; "
            "rabbitmqctl await_startup) and run again."
        ) from None
    if shutil.which(RABBITMQCTL) is None:
        raise Unavailable(f"{RABBITMQCTL} is not on PATH; install rabbitmq-server or set RABBITMQCTL.")
    if os.geteuid() != 0:
        raise Unavailable("rabbitmqctl and nft need root; run the broker tests as root.")


def require_nft() -> None:
    if shutil.which(NFT) is None:
        raise Unavailable(f"{NFT} is not on PATH; install nftables (apt-get install nftables) or set NFT.")
    if os.geteuid() != 0:
        raise Unavailable("nft needs root; run the broker tests as root.")


def url(vhost: str, query: str = "") -> str:
    """An AMQP URL for ``vhost``; the vhost is percent-encoded as kombu expects."""
    encoded = vhost.replace("%", "%25").replace("/", "%2F")
    return f"amqp://{USER}:{PASSWORD}@{HOST}:{PORT}/{encoded}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Connection:
    name: str
    peer_port: int
    timeout: int
    state: str


class VHost:
    """A throw-away vhost for one run; ``delete()`` removes it with its queues and connections."""

    def __init__(self, prefix: str = "plane-guard-proof"):
        self.name = f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        _run([RABBITMQCTL, "-q", "add_vhost", self.name])
        _run([RABBITMQCTL, "-q", "set_permissions", "-p", self.name, USER, ".*", ".*", ".*"])

    def delete(self) -> None:
        _run([RABBITMQCTL, "-q", "delete_vhost", self.name])

    def url(self, query: str = "") -> str:
        return url(self.name, query)

    def connections(self) -> list[Connection]:
        columns = ["vhost", "name", "peer_port", "timeout", "state"]
        out = _run([RABBITMQCTL, "-q", "--no-table-headers", "list_connections", *columns])
        found = []
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 5 and parts[0] == self.name:
                found.append(Connection(parts[1], int(parts[2]), int(parts[3]), parts[4]))
        return found

    def close_all_connections(self, reason: str = "plane-guard proof: broker-side close") -> None:
        _run([RABBITMQCTL, "-q", "close_all_connections", "--vhost", self.name, "--limit", "1000", reason])

    def _channel(self):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(self.url()))
        return connection, connection.channel()

    def bind_queue(self, queue: str, exchange: str, exchange_type: str = "topic", routing_key: str = "#") -> None:
        """A durable queue that receives everything published to ``exchange`` (declared as the app does)."""
        connection, channel = self._channel()
        try:
            channel.exchange_declare(exchange, exchange_type=exchange_type, durable=True)
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, exchange, routing_key)
        finally:
            connection.close()

    def drain(self, queue: str, limit: int = 10000) -> list[str]:
        """The ``message_id`` of every message in ``queue``, taken off it (at most ``limit``)."""
        connection, channel = self._channel()
        ids = []
        try:
            for _ in range(limit):
                method, properties, _ = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                ids.append(properties.message_id or "")
        finally:
            connection.close()
        return ids

    def queue_depth(self, queue: str = "celery") -> int:
        """Messages ready plus unacknowledged; 0 when the queue does not exist."""
        out = _run([RABBITMQCTL, "-q", "--no-table-headers", "list_queues", "-p", self.name, "name", "messages"])
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 2 and parts[0] == queue:
                return int(parts[1])
        return 0


def broker_ports_of(pid: int) -> list[int]:
    """Local ports of the established connections that process ``pid`` holds to the broker."""
    out = _run(["ss", "-Htnp", "state", "established", f"( dport = :{PORT} )"])
    ports = []
    for line in out.splitlines():
        if not re.search(rf"pid={pid},", line):
            continue
        fields = line.split()
        local = fields[2] if len(fields) > 2 else ""
        if local.startswith(f"{HOST}:"):
            ports.append(int(local.rsplit(":", 1)[1]))
    return sorted(ports)


def _nft_tables() -> list[str]:
    out = _run([NFT, "list", "tables", "inet"])
    return [line.split()[-1] for line in out.splitlines() if line.startswith("table inet ")]


def remove_stale_black_holes() -> None:
    """Delete black-hole tables left by earlier runs whose process is gone (a killed proof)."""
    for table in _nft_tables():
        if not table.startswith(NFT_TABLE_PREFIX):
            continue
        pid = table[len(NFT_TABLE_PREFIX) :].split("_")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _run([NFT, "delete", "table", "inet", table])


@contextmanager
def black_hole(
    ports: list[int], direction: str = "both", broker_port: int = PORT, table_prefix: str = NFT_TABLE_PREFIX
) -> Iterator[str]:
    """Drop every packet of the loopback connections from ``ports`` to the broker, both ways.

    ``broker_port`` and ``table_prefix`` let another broker node (``make compat``'s) use it too.

    ``direction="from-broker"`` drops only what the broker sends: the publish arrives, its
    acknowledgement (and TCP's) never does, which is how confirms with retry publish twice.

    No FIN, no RST: this is what a vanished NAT/conntrack entry or a dead peer looks like. Only
    the named connections are affected. On the way out, whatever happens, the black-holed
    connections are destroyed (``ss -K``, both ends) before the table is deleted: such a path never
    comes back, so nothing a closed socket still had buffered may reach the broker later.
    """
    require_nft()
    if not ports:
        raise ValueError("no connection to black-hole")
    if direction not in ("both", "from-broker"):
        raise ValueError(f"direction must be both or from-broker, not {direction!r}")
    table = f"{table_prefix}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    port_set = ", ".join(str(p) for p in ports)
    script = f"""
table inet {table} {{
    chain out {{
        type filter hook output priority -10; policy accept;
        {"" if direction == "both" else "# "}oifname "lo" ip daddr {HOST} tcp sport {{ {port_set} }} tcp dport {broker_port} drop
        oifname "lo" ip daddr {HOST} tcp sport {broker_port} tcp dport {{ {port_set} }} drop
    }}
}}
"""
    done = subprocess.run([NFT, "-f", "-"], input=script, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"nft could not create the black hole: {done.stderr.strip()}")
    try:
        yield table
    finally:
        ends = " or ".join(
            f"( sport = :{port} and dport = :{broker_port} ) or ( sport = :{broker_port} and dport = :{port} )"
            for port in ports
        )
        subprocess.run(["ss", "-K", "-tn", f"( {ends} )"], capture_output=True, timeout=10)
        subprocess.run([NFT, "delete", "table", "inet", table], capture_output=True, timeout=10)


# ---------------------------------------------------------------------------------------------
# Memory alarm: the broker stays up but blocks every publishing connection.

#: Where a running alarm records the watermark to restore, so a killed run can be repaired.
ALARM_STATE = Path(tempfile.gettempdir()) / "plane-guard-memory-alarm.json"
_ALARM_WATERMARK = "0.000001"
#: RabbitMQ's own default, the fallback when nothing says what the watermark was.
_DEFAULT_WATERMARK = "0.4"


def _watermark() -> str:
    """The broker's memory high watermark as ``set_vm_memory_high_watermark`` takes it back."""
    out = _run([RABBITMQCTL, "-q", "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]).strip()
    absolute = re.fullmatch(r"\{absolute,\s*(\d+)\}", out)
    return f"absolute {absolute.group(1)}" if absolute else out


def _set_watermark(value: str) -> None:
    _run([RABBITMQCTL, "-q", "set_vm_memory_high_watermark", *value.split()])


def memory_alarm_active() -> bool:
    out = _run([RABBITMQCTL, "-q", "eval", "rabbit_alarm:get_alarms()."])
    return "memory" in out


def _wait_alarm(active: bool, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while memory_alarm_active() != active:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the broker's memory alarm did not turn {'on' if active else 'off'} within {timeout}s")
        time.sleep(0.2)


def _is_alarm_watermark(value: str) -> bool:
    """Erlang prints the alarm's 0.000001 as ``1.0e-6``; no real relative watermark is that low."""
    try:
        return float(value) < 0.01
    except ValueError:
        return False  # "absolute N"


def restore_stale_memory_alarm() -> None:
    """Put back the watermark a killed run left behind (its process is gone)."""
    try:
        state = json.loads(ALARM_STATE.read_text())
    except (OSError, ValueError):
        return
    if isinstance(state, dict) and not os.path.exists(f"/proc/{state.get('pid')}"):
        _set_watermark(str(state["watermark"]))
        ALARM_STATE.unlink(missing_ok=True)


@contextmanager
def memory_alarm() -> Iterator[None]:
    """Raise the broker's memory alarm (``set_vm_memory_high_watermark``), and always clear it again.

    Broker-wide: every publishing connection on this broker blocks while it lasts, so keep it short.
    """
    require_broker()
    restore_stale_memory_alarm()
    original = _watermark()
    if _is_alarm_watermark(original):
        # Another run's alarm is on right now: what it will restore is what this one must.
        try:
            original = str(json.loads(ALARM_STATE.read_text())["watermark"])
        except (OSError, ValueError, KeyError, TypeError):
            original = _DEFAULT_WATERMARK
    ALARM_STATE.write_text(json.dumps({"pid": os.getpid(), "watermark": original}))
    try:
        _set_watermark(_ALARM_WATERMARK)
        _wait_alarm(True)
        yield
    finally:
        _set_watermark(original)
        ALARM_STATE.unlink(missing_ok=True)
        _wait_alarm(False)
