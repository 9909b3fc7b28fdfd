"""Serving certificates: a private CA and a certificate for the webhook Service's DNS names.

``generate`` writes files for development and ``make run``. ``bootstrap`` runs in the cluster
(Job or start-up): it keeps the TLS Secret valid and the webhook configurations' caBundle in
step with it. A rotation first publishes a bundle holding both the new and the previous CA, then
swaps the Secret, so the API server trusts the old and the new serving certificate while
kubelet and the server's file watcher catch up: no admission call fails during a rotation.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.core import conventions

#: Back-date validity so a node with a slightly slow clock accepts a fresh certificate.
CLOCK_SKEW = dt.timedelta(minutes=5)
#: A CA lives longer than the certificates it signs, so a bundle never trusts less than needed.
CA_EXTRA_DAYS = 365
#: The bundle holds the current CA and at most this many previous, unexpired ones.
MAX_PREVIOUS_CAS = 1


@dataclass(frozen=True)
class Bundle:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use to reach the Service (it sends the ``.svc`` one as SNI)."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    # P-256: accepted by every API server and cheaper per handshake than RSA.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def ip_addresses(values: Sequence[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """``--ip`` values as addresses, for a webhook reached by URL (``https://127.0.0.1:8443``)."""
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_address(value.strip()))
        except ValueError:
            raise ValueError(f"--ip {value!r} is not an IPv4 or IPv6 address") from None
    return found


def generate(service: str, namespace: str, days: int, ips: Sequence[str] = ()) -> Bundle:
    """A new CA and a serving certificate signed by it, valid for ``days``, for the Service's
    DNS names and any ``ips``."""
    if days < 1:
        raise ValueError("--days must be at least 1")
    addresses = ip_addresses(ips)
    now = _now()
    ca_key = _key()
    # Unique per CA: during a rotation the bundle holds two CAs, and clients pick by subject.
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"plane-guard CA {now:%Y-%m-%d} {os.urandom(4).hex()}")]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days + CA_EXTRA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = _key()
    names = dns_names(service, namespace)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[2])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([*(x509.DNSName(n) for n in names), *(x509.IPAddress(a) for a in addresses)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Bundle(ca.public_bytes(pem), cert.public_bytes(pem), _key_pem(key))


def ca_bundle_b64(ca_pem: bytes) -> str:
    """The value of ``webhooks[].clientConfig.caBundle``."""
    return base64.b64encode(ca_pem).decode("ascii")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename) so a watching server never reads half a file."""
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_files(bundle: Bundle, out: Path) -> None:
    """``ca.crt`` and ``tls.crt`` (0644), ``tls.key`` (0600); key first, so cert and key pair up."""
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "tls.key", bundle.key_pem, 0o600)
    _write(out / "tls.crt", bundle.cert_pem, 0o644)
    _write(out / "ca.crt", bundle.ca_pem, 0o644)


@dataclass(frozen=True)
class GenerateOptions:
    """What ``plane-guard certs generate`` is asked."""

    out: str = "certs"
    service: str = conventions.SERVICE_NAME
    namespace: str = conventions.SERVICE_NAMESPACE
    days: int = 365
    ip: tuple[str, ...] | None = None
    force: bool = False


@dataclass(frozen=True)
class BootstrapOptions:
    """What ``plane-guard certs bootstrap`` is asked."""

    service: str = conventions.SERVICE_NAME
    namespace: str = conventions.SERVICE_NAMESPACE
    secret: str = conventions.TLS_SECRET
    mutating_webhook: str = conventions.MUTATING_WEBHOOK_CONFIGURATION
    validating_webhook: str = conventions.VALIDATING_WEBHOOK_CONFIGURATION
    days: int = 365
    renew_before_days: int = 30


def generate_command(options: GenerateOptions) -> int:
    """``plane-guard certs generate``: files into ``--out``, the caBundle on stdout."""
    out = Path(options.out)
    existing = [name for name in ("ca.crt", "tls.crt", "tls.key") if (out / name).exists()]
    if existing and not options.force:
        print(
            f"plane-guard certs generate: {', '.join(str(out / n) for n in existing)} already exist(s); "
            "pass --force to replace them (the caBundle in the webhook configurations must then be updated).",
            file=sys.stderr,
        )
        return 1
    try:
        bundle = generate(options.service, options.namespace, options.days, options.ip or ())
    except ValueError as exc:
        print(f"plane-guard certs generate: {exc}", file=sys.stderr)
        return 2
    write_files(bundle, out)
    print(
        f"wrote {out / 'ca.crt'}, {out / 'tls.crt'}, {out / 'tls.key'} for "
        f"{', '.join([*dns_names(options.service, options.namespace), *(options.ip or ())])} (valid {options.days} days). caBundle:",
        file=sys.stderr,
    )
    print(ca_bundle_b64(bundle.ca_pem))
    return 0


# --------------------------------------------------------------------------- bootstrap (in cluster)


def _load_cert(pem: bytes) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None


def secret_problem(data: dict[str, bytes], service: str, namespace: str, renew_before: dt.timedelta) -> str | None:
    """Why the Secret's certificate must be (re)issued, or None when it is good."""
    for key in ("ca.crt", "tls.crt", "tls.key"):
        if not data.get(key):
            return f"{key} missing"
    ca, cert = _load_cert(data["ca.crt"]), _load_cert(data["tls.crt"])
    if ca is None or cert is None:
        return "certificate not readable"
    try:
        key = serialization.load_pem_private_key(data["tls.key"], password=None)  # type: ignore[assignment]
    except (ValueError, TypeError):
        return "key not readable"
    if key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) != (  # type: ignore[attr-defined]
        cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ):
        return "key does not match the certificate"
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # noqa: BLE001 - any verification failure (bad signature, wrong key type) means reissue
        return "certificate not signed by ca.crt"
    try:
        sans = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = set()
    if not set(dns_names(service, namespace)) <= sans:
        return "certificate does not name the service"
    if cert.not_valid_after_utc - renew_before <= _now() or ca.not_valid_after_utc - renew_before <= _now():
        return "certificate expires soon"
    return None


def merged_bundle(current_ca: bytes, previous: bytes) -> bytes:
    """Current CA first, then at most MAX_PREVIOUS_CAS unexpired others from the old bundle."""
    now = _now()
    try:
        older = x509.load_pem_x509_certificates(previous)
    except ValueError:  # no certificate, or one that does not parse: nothing worth keeping
        older = []
    keep = []
    seen = {current_ca.strip()}
    for cert in older:
        pem = cert.public_bytes(serialization.Encoding.PEM).strip()
        if pem in seen or cert.not_valid_after_utc <= now:
            continue
        seen.add(pem)
        keep.append(pem)
    return current_ca.strip() + b"\n" + b"".join(p + b"\n" for p in keep[:MAX_PREVIOUS_CAS])


def _kubernetes_clients() -> tuple[Any, Any]:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CoreV1Api(), client.AdmissionregistrationV1Api()


def _b64d(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _patch_ca_bundle(read: Any, patch: Any, name: str, bundle_for: Any, attempts: int = 5) -> str:
    """Set every webhook's caBundle in one configuration with a JSON patch guarded by ``test`` ops."""
    from kubernetes.client.exceptions import ApiException

    for attempt in range(attempts):
        current = read(name)
        ops: list[dict[str, Any]] = []
        for index, webhook in enumerate(current.webhooks or []):
            existing = _b64d(webhook.client_config.ca_bundle if webhook.client_config else None)
            wanted = bundle_for(existing)
            if existing == wanted:
                continue
            ops.append({"op": "test", "path": f"/webhooks/{index}/name", "value": webhook.name})
            ops.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": ca_bundle_b64(wanted)})
        if not ops:
            return "unchanged"
        try:
            patch(name, ops)
            return "updated"
        except ApiException as exc:
            if exc.status not in (409, 422) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))  # changed under us: read again
    return "unchanged"


def bootstrap(core: Any, admission: Any, *, service: str, namespace: str, secret: str, mutating: str, validating: str,
              days: int, renew_before_days: int) -> dict[str, str]:
    """Make the Secret valid and every webhook caBundle trust it; returns what was done."""
    from kubernetes.client.exceptions import ApiException

    done: dict[str, str] = {}
    try:
        existing = core.read_namespaced_secret(secret, namespace)
        data = {k: _b64d(v) for k, v in (existing.data or {}).items()}
    except ApiException as exc:
        if exc.status != 404:
            raise
        existing, data = None, {}
    problem = secret_problem(data, service, namespace, dt.timedelta(days=renew_before_days))
    if problem:
        fresh = generate(service, namespace, days)
        ca_pem = fresh.ca_pem
    else:
        fresh, ca_pem = None, data["ca.crt"]

    # 1. Trust first: the bundle holds the new CA and the previous one before the Secret changes.
    def bundle_for(previous: bytes) -> bytes:
        # The CA the running server is signed by comes first: it must survive the pruning.
        serving = data["ca.crt"] + b"\n" if data.get("ca.crt") and fresh else b""
        return merged_bundle(ca_pem, serving + previous)

    for kind, name, read, patch in (
        ("mutating", mutating, admission.read_mutating_webhook_configuration, admission.patch_mutating_webhook_configuration),
        ("validating", validating, admission.read_validating_webhook_configuration, admission.patch_validating_webhook_configuration),
    ):
        try:
            done[f"{kind}-webhook"] = _patch_ca_bundle(read, patch, name, bundle_for)
        except ApiException as exc:
            if exc.status == 404:
                raise RuntimeError(
                    f"{kind} webhook configuration {name!r} not found: apply the plane-guard manifests first, then re-run"
                ) from None
            raise

    # 2. Then the serving certificate.
    if fresh is None:
        done["secret"] = "unchanged"
        return done
    encoded = {k: base64.b64encode(v).decode() for k, v in (("ca.crt", fresh.ca_pem), ("tls.crt", fresh.cert_pem), ("tls.key", fresh.key_pem))}
    if existing is None:
        from kubernetes import client

        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=secret, namespace=namespace, labels={"app.kubernetes.io/name": "plane-guard"}),
            type="kubernetes.io/tls",
            data=encoded,
        )
        core.create_namespaced_secret(namespace, body)
        done["secret"] = "created"
    else:
        core.patch_namespaced_secret(secret, namespace, {"data": encoded})
        done["secret"] = f"renewed ({problem})"
    return done


def bootstrap_command(options: BootstrapOptions) -> int:
    """``plane-guard certs bootstrap``: idempotent; exit 1 with the reason when the cluster refuses."""
    from kubernetes.client.exceptions import ApiException

    try:
        core, admission = _kubernetes_clients()
        done = bootstrap(
            core, admission, service=options.service, namespace=options.namespace, secret=options.secret,
            mutating=options.mutating_webhook, validating=options.validating_webhook,
            days=options.days, renew_before_days=options.renew_before_days,
        )
    except ApiException as exc:
        print(
            f"plane-guard certs bootstrap: the API server answered {exc.status} {exc.reason}; check the "
            "ServiceAccount's RBAC (secrets get/create/patch, webhook configurations get/patch).",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # noqa: BLE001 - config errors, connection errors: say what and stop
        print(f"plane-guard certs bootstrap: {exc}", file=sys.stderr)
        return 1
    print(" ".join(f"{k}={v}" for k, v in done.items()))
    return 0
