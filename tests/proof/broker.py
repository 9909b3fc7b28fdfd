"""The real RabbitMQ on 127.0.0.1:5672 and the loopback network, driven the way an operator would.

Every run gets its own vhost (queues and connections of one run never meet another's, and other
people's connections are never closed), and ``close_all_connections`` is limited to it. The
black hole is an nftables table of its own that is always deleted again.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

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
def black_hole(ports: list[int]) -> Iterator[str]:
    """Drop every packet of the loopback connections from ``ports`` to the broker, both ways.

    No FIN, no RST: this is what a vanished NAT/conntrack entry or a dead peer looks like. Only
    the named connections are affected; the table is deleted on the way out whatever happens.
    """
    require_nft()
    if not ports:
        raise ValueError("no connection to black-hole")
    table = f"{NFT_TABLE_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:6]}"
    port_set = ", ".join(str(p) for p in ports)
    script = f"""
table inet {table} {{
    chain out {{
        type filter hook output priority -10; policy accept;
        oifname "lo" ip daddr {HOST} tcp sport {{ {port_set} }} tcp dport {PORT} drop
        oifname "lo" ip daddr {HOST} tcp sport {PORT} tcp dport {{ {port_set} }} drop
    }}
}}
"""
    done = subprocess.run([NFT, "-f", "-"], input=script, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"nft could not create the black hole: {done.stderr.strip()}")
    try:
        yield table
    finally:
        subprocess.run([NFT, "delete", "table", "inet", table], capture_output=True, timeout=10)
