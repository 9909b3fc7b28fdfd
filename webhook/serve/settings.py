"""What ``plane-guard serve`` is told: every setting and its default, written once.

The command line takes its defaults from here, the server and its worker processes read the
same object, and the connection bounds are a part of it. Standard library only, so the command
line can read the defaults without loading the web stack.
"""

from __future__ import annotations

from dataclasses import dataclass

from webhook.core import conventions


@dataclass(frozen=True)
class ConnectionLimits:
    """What one server process allows a connection (the ``serve`` options of the same names)."""

    max_connections: int = 512
    #: No one client address holds more than this share of ``max_connections``.
    source_share: float = 0.25
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    idle_timeout: float = 10.0
    drain_seconds: float = 5.0

    @property
    def per_source(self) -> int:
        """The most connections one client address may hold."""
        return max(1, int(self.max_connections * self.source_share))


@dataclass
class Settings:
    """Everything ``serve`` needs; worker processes receive it on their uvicorn config (``config``)."""

    host: str = "0.0.0.0"
    port: int = conventions.CONTAINER_PORT
    cert_file: str = "certs/tls.crt"
    key_file: str = "certs/tls.key"
    policy: str | None = None
    mode: str = "enforce"
    workers: int = 1
    on_error: str = "allow"
    max_body_bytes: int = 3 * 1024 * 1024
    log_level: str = "info"
    keep_alive_timeout: int = 120
    graceful_timeout: int = 10
    cert_check_interval: float = 2.0
    client_ca_file: str | None = None
    max_connections: int = ConnectionLimits.max_connections
    source_share: float = ConnectionLimits.source_share
    max_header_bytes: int = ConnectionLimits.max_header_bytes
    max_headers: int = ConnectionLimits.max_headers
    header_timeout: float = ConnectionLimits.header_timeout
    body_timeout: float = ConnectionLimits.body_timeout
    idle_timeout: float = ConnectionLimits.idle_timeout
    drain_seconds: float = ConnectionLimits.drain_seconds

    def connection_limits(self) -> ConnectionLimits:
        names = ConnectionLimits.__dataclass_fields__
        return ConnectionLimits(**{name: getattr(self, name) for name in names})
