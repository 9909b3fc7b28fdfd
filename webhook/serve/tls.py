"""The serving certificate over TLS, reloaded from its files without a restart.

cert-manager and Secret volume updates replace the files under a running server; every new
handshake must get the newest pair and no request may fail during the swap. A new pair is only
used when it is whole and good: the key matches, and the certificate is valid now. Anything
else keeps the previous pair in use and is logged once, at warning level.

TLS 1.2 is offered with forward-secret AEAD suites only (ECDHE with AES-GCM or ChaCha20-Poly1305),
and TLS 1.3 (all of whose suites are AEAD). Go's TLS client, which kube-apiserver and the kubelet
use, offers these suites by default. With ``--client-ca-file`` the server asks every client for a
certificate and verifies any it gets; the admission paths then refuse a client without one,
while probes and metrics stay open to the kubelet (which has none).
"""

from __future__ import annotations

import hashlib
import ssl
import threading
import time
from typing import Any

from webhook.serve import decision_log

#: TLS 1.2 suites: forward secrecy and authenticated encryption only (no CBC, no RSA key exchange).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class CertificateRejected(ValueError):
    """The files hold a pair that must not be served (the message says why; it quotes nothing)."""


class ServingCertificate:
    """The serving certificate, re-read when the files change; new handshakes use the newest.

    uvicorn listens with one base context whose SNI callback hands every new connection the
    latest context, so a swap is one reference assignment: connections already open keep theirs,
    and a half-written pair (new cert, old key) is never used because a new context is only
    published after it loaded completely. Content is compared, not paths: a Secret volume update
    swaps a ``..data`` symlink, and cert-manager may rewrite in place.
    """

    def __init__(self, cert_file: str, key_file: str, interval: float = 2.0, client_ca_file: str | None = None):
        self.cert_file, self.key_file, self.interval = cert_file, key_file, interval
        self.client_ca_file = client_ca_file
        self.error: str | None = None
        self.reloads = 0
        # The first pair is served even when it is not valid yet or any more: the server starts,
        # reports itself not ready, and switches as soon as good files arrive.
        self.current, self._fingerprint, self.not_after = self._load(self._read(), require_valid=False)
        _set_expiry(self.not_after)
        self._logged: bytes | None = None  # the rejected files already reported in the log
        self.base = self.current
        self.base.sni_callback = self._sni
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[bytes, ...]:
        paths = [self.cert_file, self.key_file, *([self.client_ca_file] if self.client_ca_file else [])]
        contents = []
        for path in paths:
            with open(path, "rb") as file:
                contents.append(file.read())
        return tuple(contents)

    def _load(self, files: tuple[bytes, ...], require_valid: bool) -> tuple[ssl.SSLContext, bytes, float]:
        """A context for the pair in ``files`` (read a moment ago), its fingerprint and notAfter."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
        context.set_alpn_protocols(["http/1.1"])
        context.load_cert_chain(self.cert_file, self.key_file)  # raises when the key does not match
        if self.client_ca_file:
            context.load_verify_locations(cadata=files[2].decode("ascii", "replace"))
            context.verify_mode = ssl.CERT_OPTIONAL
        if self._read() != files:
            # Changed while loading: what was loaded may not be what was hashed. Next check.
            raise CertificateRejected("the certificate files changed while they were read")
        not_before, not_after = _validity(files[0])
        now = time.time()
        if require_valid and now >= not_after:
            raise CertificateRejected(f"the new certificate expired at {_iso(not_after)}")
        if require_valid and now < not_before:
            raise CertificateRejected(f"the new certificate is not valid before {_iso(not_before)}")
        return context, hashlib.sha256(b"\0".join(files)).digest(), not_after

    def _sni(self, ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        latest = self.current
        if latest is not context:
            ssl_object.context = latest

    def check(self) -> bool:
        """Reload if the files changed; True when a new certificate is in use."""
        from webhook.serve import metrics

        try:
            files = self._read()
        except OSError as exc:
            self._reject(f"cannot read the certificate files ({exc.strerror})", repr(exc).encode())
            return False
        fingerprint = hashlib.sha256(b"\0".join(files)).digest()
        if fingerprint == self._fingerprint:
            return False
        try:
            context, fingerprint, not_after = self._load(files, require_valid=True)
        except CertificateRejected as exc:
            self._reject(str(exc), fingerprint)
            metrics.CERT_RELOADS.labels("error").inc()
            return False
        except (ssl.SSLError, OSError, ValueError) as exc:
            # Typical mid-rotation: the new certificate is there, its key not yet. Retried.
            if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
                reason = "the key does not match the certificate"
            else:
                reason = f"the files are not a usable PEM certificate and key ({type(exc).__name__})"
            self._reject(reason, fingerprint)
            metrics.CERT_RELOADS.labels("error").inc()
            return False
        self.current, self._fingerprint, self.not_after = context, fingerprint, not_after
        _set_expiry(not_after)
        self.error = None
        self._logged = None
        self.reloads += 1
        metrics.CERT_RELOADS.labels("ok").inc()
        decision_log.LOG.info("serving certificate reloaded", extra={"fields": {"not_after": not_after}})
        return True

    def _reject(self, reason: str, files: bytes) -> None:
        """Keep the previous pair; report these files once (the next check retries them)."""
        self.error = f"{reason}; still serving the previous certificate"
        if self._logged != files:
            self._logged = files
            decision_log.LOG.warning(
                "certificate reload failed; still serving the previous certificate (retried on every check)",
                extra={"fields": {"reason": reason, "cert_file": self.cert_file}},
            )

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


def _validity(cert_pem: bytes) -> tuple[float, float]:
    from cryptography import x509

    certificate = x509.load_pem_x509_certificate(cert_pem)
    return certificate.not_valid_before_utc.timestamp(), certificate.not_valid_after_utc.timestamp()


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _set_expiry(not_after: float) -> None:
    from webhook.serve import metrics

    metrics.CERT_EXPIRY.set(not_after)
