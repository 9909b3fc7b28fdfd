"""Whether the API server can call plane-guard: caBundle, serving certificate, Service endpoints,
and for a webhook called by ``url:``, what answers at that URL.

Pure: the webhook configurations, the serving certificate, the Service's EndpointSlices and the
outcome of each URL probe (made by the caller) in, one ``Check`` per thing that can be wrong out. With
``failurePolicy: Ignore`` none of these failures blocks a pod: each one silently lets Plane pods
start unguarded, which is why ``plane-guard status`` looks for them.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError


@dataclass(frozen=True)
class Check:
    subject: str
    ok: bool
    detail: str
    #: False when the check could not be made (no read access, say): shown, never counted as a failure.
    done: bool = True
    #: What the check is about: ``certificate`` (the serving certificate's dates), ``webhook``,
    #: ``service``, ``install`` (the webhook Deployment and its policy).
    kind: str = "webhook"


@dataclass(frozen=True)
class Probe:
    """What a TLS handshake with a ``url:`` webhook found: ``problem`` None when it succeeded;
    ``done`` False when it could not be tried from here (the host does not resolve here)."""

    problem: str | None
    done: bool = True


#: The tail of the verifier's messages that names Python objects, not certificates.
_OBJECT_TEXT = re.compile(r"\s*\(encountered processing <.*$|<[A-Za-z_][\w.]*\(.*?\)>|<[^<>]* object at 0x[0-9a-f]+>", re.DOTALL)


def plain(error: BaseException | str) -> str:
    """An error's message in words: without Python object text, on one line, bounded."""
    text = _OBJECT_TEXT.sub("", str(error)).removeprefix("validation failed: ")
    return " ".join(text.split())[:200] or type(error).__name__


def certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle; ValueError when there is none or one does not parse."""
    return x509.load_pem_x509_certificates(pem)


def target(client_config: dict[str, Any]) -> tuple[str, x509.GeneralName] | None:
    """How the API server reaches a webhook, and the name it checks the certificate against:
    ``<service>.<namespace>.svc`` for a Service, the host of a URL."""
    service = client_config.get("service")
    if isinstance(service, dict):
        host = f"{service.get('name')}.{service.get('namespace')}.svc"
        return f"Service {service.get('namespace')}/{service.get('name')}", x509.DNSName(host)
    url = client_config.get("url")
    if isinstance(url, str) and urlsplit(url).hostname:
        host = urlsplit(url).hostname or ""
        try:
            return f"URL {url}", x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            return f"URL {url}", x509.DNSName(host)
    return None


def _name(general: x509.GeneralName) -> str:
    return str(general.value)


def _verify(chain: list[x509.Certificate], cas: list[x509.Certificate], name: x509.GeneralName, now: dt.datetime) -> str | None:
    """Why the API server would refuse the serving certificate with this caBundle, or None."""
    try:
        verifier = PolicyBuilder().store(Store(cas)).time(now).build_server_verifier(name)  # type: ignore[arg-type]
        verifier.verify(chain[0], chain[1:])
        return None
    except VerificationError as error:
        issuers = {c.issuer for c in chain}
        if not any(ca.subject in issuers for ca in cas):
            return f"the caBundle holds no CA that signed the serving certificate (issuer {chain[0].issuer.rfc4514_string()})"
        # cryptography 51 and later name the host again at the end of the reason; say it once.
        reason = plain(error).removesuffix(f" for {_name(name)}")
        return f"the serving certificate does not verify against the caBundle for {_name(name)}: {reason}"


def configuration_checks(kind: str, name: str, configuration: dict[str, Any] | None,
                         chain: list[x509.Certificate] | None, now: dt.datetime,
                         probes: dict[str, Probe] | None = None, no_chain: str | None = None) -> list[Check]:
    """One check per webhook: its caBundle is there and verifies the serving certificate.

    A webhook reached by Service is checked against ``chain``, the certificate the webhook
    Deployment serves (``no_chain``: why there is none to check, when it could not be read). A
    webhook reached by ``url:`` is whatever answers at that URL, so it is checked by ``probes``:
    URL -> the outcome of a TLS handshake trusting only the caBundle, for the URL's host; a URL
    missing from ``probes`` was not probed.
    """
    if configuration is None:
        return [Check(f"{kind} {name}", False, "not found: apply the plane-guard manifests (kubectl apply -k manifests/overlays/...)")]
    webhooks = configuration.get("webhooks") or []
    if not webhooks:
        return [Check(f"{kind} {name}", False, "has no webhooks")]
    checks = []
    for hook in webhooks:
        subject = f"{hook.get('name')} ({kind} {name})"
        client_config = hook.get("clientConfig") or {}
        reached = target(client_config)
        if reached is None:
            checks.append(Check(subject, False, "clientConfig names neither a Service nor a URL"))
            continue
        where, server_name = reached
        encoded = client_config.get("caBundle")
        if not encoded:
            checks.append(Check(subject, False, "no caBundle: the API server cannot call the webhook, so Plane pods start "
                                                "unguarded; run the bootstrap Job again or check cert-manager's cainjector"))
            continue
        try:
            cas = certificates(base64.b64decode(encoded, validate=True))
        except (ValueError, binascii.Error):
            checks.append(Check(subject, False, "the caBundle is not base64 PEM certificates"))
            continue
        url = client_config.get("url")
        if isinstance(url, str) and "service" not in client_config:
            if probes is None or url not in probes:
                checks.append(Check(subject, False, f"{where}: caBundle present; reachability not checked", done=False))
            elif probes[url].problem is None:
                checks.append(Check(subject, True, f"{where}: answers here, and the caBundle verifies its certificate for {_name(server_name)}"))
            elif not probes[url].done:
                checks.append(Check(subject, False, f"{where}: caBundle present; reachability not checked: {probes[url].problem}", done=False))
            else:
                checks.append(Check(subject, False, f"{where}: {probes[url].problem}; if the API server fails the same way, "
                                                    "Plane pods start unguarded"))
            continue
        if not chain:
            if no_chain:
                checks.append(Check(subject, False, f"{where}: caBundle present; not checked against the serving certificate: {no_chain}",
                                    done=False))
            else:
                checks.append(Check(subject, False, f"{where}: caBundle present, but there is no serving certificate to check it against"))
            continue
        problem = _verify(chain, cas, server_name, now)
        if problem:
            checks.append(Check(subject, False, f"{where}: {problem}"))
        else:
            checks.append(Check(subject, True, f"{where}: the caBundle verifies the serving certificate for {_name(server_name)}"))
    return checks


def urls(*configurations: dict[str, Any] | None) -> list[tuple[str, bytes]]:
    """(URL, caBundle PEM) of every webhook called by ``url:``, once each; the caller probes them."""
    found: list[tuple[str, bytes]] = []
    for configuration in configurations:
        for hook in (configuration or {}).get("webhooks") or []:
            client_config = hook.get("clientConfig") or {}
            url, encoded = client_config.get("url"), client_config.get("caBundle")
            if not isinstance(url, str) or "service" in client_config or not isinstance(encoded, str):
                continue
            try:
                pem = base64.b64decode(encoded, validate=True)
            except (ValueError, binascii.Error):
                continue
            if (url, pem) not in found:
                found.append((url, pem))
    return found


def services(*configurations: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(namespace, name) of every Service the webhooks are called through, once each."""
    found = []
    for configuration in configurations:
        for hook in (configuration or {}).get("webhooks") or []:
            service = (hook.get("clientConfig") or {}).get("service")
            if isinstance(service, dict):
                key = (str(service.get("namespace")), str(service.get("name")))
                if key not in found:
                    found.append(key)
    return found


def certificate_check(subject: str, chain: list[x509.Certificate], now: dt.datetime, min_days: int) -> Check:
    """The serving certificate's remaining life against the threshold."""
    not_after, not_before = chain[0].not_valid_after_utc, chain[0].not_valid_before_utc
    if now < not_before:
        return Check(subject, False, f"not valid before {not_before:%Y-%m-%d %H:%M} UTC: the API server refuses it until then "
                                     "(a clock ahead on the machine that made it?); renew it", kind="certificate")
    left = not_after - now
    if left <= dt.timedelta(0):
        return Check(subject, False, f"expired on {not_after:%Y-%m-%d %H:%M} UTC: renew it (certs bootstrap, or check cert-manager)",
                     kind="certificate")
    detail = f"expires {not_after:%Y-%m-%d}, in {left.days} days"
    if left.days < min_days:
        return Check(subject, False, f"{detail}, under the {min_days}-day threshold: renew it (certs bootstrap, or check cert-manager)",
                     kind="certificate")
    return Check(subject, True, detail, kind="certificate")


def endpoints_check(namespace: str, name: str, service: dict[str, Any] | None, slices: list[dict[str, Any]]) -> Check:
    """The Service has at least one ready endpoint (an unknown ``ready`` counts as ready, as the API defines it)."""
    subject = f"Service {namespace}/{name}"
    if service is None:
        return Check(subject, False, "not found: the API server cannot call the webhook", kind="service")
    ready = sum(
        1
        for endpoint_slice in slices
        for endpoint in endpoint_slice.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready") is not False
    )
    if ready == 0:
        return Check(subject, False, f"no ready endpoints: Plane pods start unguarded; see kubectl -n {namespace} get pods", kind="service")
    return Check(subject, True, f"{ready} ready endpoint{'s' if ready != 1 else ''}", kind="service")
