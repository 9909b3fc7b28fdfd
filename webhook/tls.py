"""The serving certificate over TLS, reloaded from its files without a restart.

cert-manager and Secret volume updates replace the files under a running server; every new
handshake must get the newest pair and no request may fail during the swap.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
import time
from typing import Any, Callable

from webhook import decision_log

#: How often (seconds) each server process compares the files with what it serves.
CHECK_INTERVAL_ENV = "PLANE_GUARD_CERT_CHECK_INTERVAL"


class ServingCertificate:
    """The serving certificate, re-read when the files change; new handshakes use the newest.

    uvicorn listens with one base context whose SNI callback hands every new connection the
    latest context, so a swap is one reference assignment: connections already open keep theirs,
    and a half-written pair (new cert, old key) is never used because a new context is only
    published after it loaded completely. Content is compared, not paths: a Secret volume update
    swaps a ``..data`` symlink, and cert-manager may rewrite in place.
    """

    def __init__(self, cert_file: str, key_file: str, interval: float = 2.0):
        self.cert_file, self.key_file, self.interval = cert_file, key_file, interval
        self._fingerprint = b""
        self.error: str | None = None
        self.reloads = 0
        self.not_after = 0.0
        self.current = self._load()  # raises: the server must not start without a certificate
        self.base = self.current
        self.base.sni_callback = self._sni
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[bytes, bytes]:
        with open(self.cert_file, "rb") as cert, open(self.key_file, "rb") as key:
            return cert.read(), key.read()

    def _load(self) -> ssl.SSLContext:
        cert, key = self._read()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(self.cert_file, self.key_file)
        if self._read() != (cert, key):
            # Changed while loading: what was loaded may not be what was hashed. Next check.
            raise ValueError("certificate files changed while loading")
        self._fingerprint = hashlib.sha256(cert + b"\0" + key).digest()
        self.not_after = _not_after(cert)
        _set_expiry(self.not_after)
        return context

    def _sni(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        latest = self.current
        if latest is not context:
            ssl_object.context = latest

    def check(self) -> bool:
        """Reload if the files changed; True when a new certificate is in use."""
        from webhook import metrics

        try:
            cert, key = self._read()
        except OSError as exc:
            self.error = f"cannot read the certificate files: {exc.strerror}"
            return False
        if hashlib.sha256(cert + b"\0" + key).digest() == self._fingerprint:
            return False
        try:
            context = self._load()
        except (ssl.SSLError, OSError, ValueError) as exc:
            # Typical mid-rotation: the new certificate is there, its key not yet. Retry later.
            self.error = f"new certificate not loaded yet ({type(exc).__name__}); still serving the previous one"
            metrics.CERT_RELOADS.labels("error").inc()
            return False
        self.current = context
        self.error = None
        self.reloads += 1
        metrics.CERT_RELOADS.labels("ok").inc()
        decision_log.LOG.info("serving certificate reloaded", extra={"fields": {"not_after": self.not_after}})
        return True

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="plane-guard-cert-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watcher must outlive any surprise
                decision_log.error("certificate watcher failed; will retry")

    @property
    def healthy(self) -> bool:
        return self.not_after > time.time()


def _not_after(cert_pem: bytes) -> float:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(cert_pem)
    return certificate.not_valid_after_utc.timestamp()


def _set_expiry(not_after: float) -> None:
    from webhook import metrics

    metrics.CERT_EXPIRY.set(not_after)


_CERTIFICATE: ServingCertificate | None = None


def current_certificate() -> ServingCertificate | None:
    return _CERTIFICATE


def ssl_context_factory(config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn hook (runs in every worker process): our reloading context instead of a fixed one."""
    global _CERTIFICATE
    interval = float(os.environ.get(CHECK_INTERVAL_ENV) or 2.0)
    _CERTIFICATE = ServingCertificate(config.ssl_certfile, config.ssl_keyfile, interval)
    _CERTIFICATE.start()
    return _CERTIFICATE.base
