"""uvicorn's config, carrying the ``serve`` settings into every worker process.

With ``--workers`` > 1 uvicorn starts each worker with ``spawn`` and hands it the config object
(pickled), then the worker builds its loop, TLS context, protocols and app from that object. So
the settings ride on the config, and what belongs to one process (its connection table, its
serving certificate) is made from them inside that process, on first use, and never pickled.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.importer import import_from_string

from webhook.serve.connections import ConnectionGuard, GuardedHttpProtocol, GuardedLoop
from webhook.serve.settings import Settings
from webhook.serve.tls import ServingCertificate

#: The app factory, called in each process with its ``ServeConfig``.
APP_FACTORY = "webhook.serve.app:process_app"
#: Made in each process from the settings; never pickled into a worker.
_PER_PROCESS = ("_guard", "certificate", "webhook_app")


def _serving_context(config: uvicorn.Config, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: the reloading certificate of this process."""
    assert isinstance(config, ServeConfig)
    settings = config.settings
    config.certificate = ServingCertificate(
        settings.cert_file, settings.key_file, settings.cert_check_interval, settings.client_ca_file
    )
    config.certificate.start()
    return config.certificate.base


class ServeConfig(uvicorn.Config):
    """``uvicorn.Config`` made from ``Settings``; the guarded loop, protocol and TLS set up once here."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._guard: ConnectionGuard | None = None
        self.certificate: ServingCertificate | None = None
        self.webhook_app: Any = None  # the app of this process, once loaded (SIGHUP reloads its policy)
        super().__init__(
            APP_FACTORY,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            ssl_certfile=settings.cert_file,
            ssl_keyfile=settings.key_file,
            ssl_context_factory=_serving_context,
            http=GuardedHttpProtocol,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=settings.keep_alive_timeout,
            timeout_graceful_shutdown=settings.graceful_timeout,
        )

    @property
    def guard(self) -> ConnectionGuard:
        """This process's connection table, bounded by the settings."""
        if self._guard is None:
            self._guard = ConnectionGuard(self.settings.connection_limits())
        return self._guard

    def get_loop_factory(self) -> Callable[[], Any]:
        return functools.partial(GuardedLoop, self.guard)

    def load_app(self) -> Any:
        return functools.partial(import_from_string(self.app), self)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in _PER_PROCESS:
            state[name] = None
        return state
