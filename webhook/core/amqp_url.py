"""Merge an AMQP heartbeat into a broker URL the way kombu will read it.

One implementation serves both the webhook (literal ``AMQP_URL`` values in the pod spec) and
the runtime wrapper inside Plane containers (URLs that arrive from a Secret at start-up). That is
why this module uses the standard library only: it is copied into the container as a script.

Why so careful: kombu turns every query key into a keyword argument of ``Connection``, so an
unknown key makes every ``delay()`` raise ``TypeError``, and a second ``?`` makes every ``delay()``
raise ``ValueError``. The URL is therefore edited as text: only the query gains or changes one
``heartbeat`` pair, and userinfo, vhost and percent-encoding are left exactly as written.

Run as a script, it reads the URL from the environment and prints the merged URL on stdout
(see ``main``); it never prints the URL anywhere else.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from urllib.parse import unquote

#: Schemes served by py-amqp, the transport Plane uses.
AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})

#: Query keys kombu's ``Connection`` accepts (``kombu.Connection._init_params`` plus the
#: ``ssl_*`` keys that ``kombu.utils.url.parse_url`` folds into ``ssl``).
KOMBU_QUERY_KEYS = frozenset(
    {
        "hostname",
        "userid",
        "password",
        "virtual_host",
        "port",
        "insist",
        "ssl",
        "transport",
        "connect_timeout",
        "login_method",
        "heartbeat",
        "credential_provider",
    }
)

EXISTING_MODES = ("keep", "replace")


@dataclass(frozen=True)
class Merge:
    """The outcome of a merge: the URL to use and why it is what it is."""

    url: str
    changed: bool
    reason: str
    warnings: tuple[str, ...] = field(default=())


def format_heartbeat(seconds: float) -> str:
    """``60.0`` -> ``"60"``, ``7.5`` -> ``"7.5"``: the spelling kombu parses back to the value."""
    seconds = float(seconds)
    return str(int(seconds)) if seconds.is_integer() else repr(seconds)


def parse_heartbeat(raw: str) -> float | None:
    """The heartbeat kombu would use for this query value, or None if kombu would raise."""
    try:
        value = float(raw)
    except ValueError:
        return None
    if math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return value


def is_kombu_key(key: str) -> bool:
    """Whether kombu accepts this query key (anything else makes every ``delay()`` raise)."""
    return key in KOMBU_QUERY_KEYS or key.startswith("ssl_")


def query_pairs(url: str) -> list[tuple[str, str]] | None:
    """The decoded query pairs of one AMQP URL, in order; None when it is not an AMQP URL."""
    scheme, sep, _ = url.strip().partition("://")
    if not sep or scheme.lower() not in AMQP_SCHEMES:
        return None
    query = url.partition("#")[0].partition("?")[2]
    return [(unquote(k), unquote(v)) for k, _, v in (pair.partition("=") for pair in query.split("&") if pair)]


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, safe for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>"
    authority, slash, tail = _split_authority(rest)
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        authority = f"{user}:***@{hostport}"
    return f"{scheme}://{authority}{slash}{tail}"


def _split_authority(rest: str) -> tuple[str, str, str]:
    """Split ``user:pw@host:port/vhost?q`` after the ``://`` into authority, separator, tail."""
    for index, char in enumerate(rest):
        if char in "/?#":
            return rest[:index], char, rest[index + 1 :]
    return rest, "", ""


def merge_heartbeat(url: str, heartbeat: float, existing: str = "keep") -> Merge:
    """Add ``heartbeat=<seconds>`` to every AMQP URL in ``url`` (kombu failover lists use ``;``).

    ``existing`` says what happens to a valid heartbeat already in the URL: ``keep`` leaves it,
    ``replace`` sets the policy's value. A heartbeat kombu cannot parse is always replaced,
    because kept it would make every publish raise.
    """
    if existing not in EXISTING_MODES:
        raise ValueError(f"existing must be one of {EXISTING_MODES}, not {existing!r}")
    if parse_heartbeat(format_heartbeat(heartbeat)) is None:
        raise ValueError(f"heartbeat must be a finite number >= 0, not {heartbeat!r}")
    parts = [_merge_one(part, heartbeat, existing) for part in url.split(";")]
    changed = any(part.changed for part in parts)
    reasons = sorted({part.reason for part in parts})
    warnings = tuple(w for part in parts for w in part.warnings)
    return Merge(";".join(p.url for p in parts), changed, ",".join(reasons), warnings)


def _merge_one(url: str, heartbeat: float, existing: str) -> Merge:
    scheme, sep, rest = url.strip().partition("://")
    if not sep or scheme.lower() not in AMQP_SCHEMES:
        return Merge(url, False, "not-amqp")
    if url != url.strip():
        return Merge(url, False, "surrounding-whitespace", ("the AMQP URL has surrounding whitespace; left as is",))

    before_fragment, hash_sign, fragment = url.partition("#")
    base, question, query = before_fragment.partition("?")
    pairs = [pair for pair in query.split("&") if pair] if question else []
    keys = [unquote(pair.partition("=")[0]) for pair in pairs]
    warnings = tuple(
        f"query key {key!r} is not accepted by kombu: every delay() will raise TypeError"
        for key in dict.fromkeys(keys)
        if not is_kombu_key(key)
    )
    wanted = f"heartbeat={format_heartbeat(heartbeat)}"
    current = [pair for pair, key in zip(pairs, keys) if key == "heartbeat"]

    if current:
        effective = parse_heartbeat(unquote(current[-1].partition("=")[2]))
        if effective is not None and (existing == "keep" or effective == float(heartbeat)) and len(current) == 1:
            return Merge(url, False, "kept-existing", warnings)
        if effective is None:
            warnings += ("the existing heartbeat is not a number kombu accepts; replaced",)
        reason = "replaced"
        pairs = [pair for pair, key in zip(pairs, keys) if key != "heartbeat"]
        if existing == "keep" and effective is not None:
            wanted = f"heartbeat={format_heartbeat(effective)}"
            reason = "deduplicated"
    else:
        reason = "added"

    merged = base + "?" + "&".join([*pairs, wanted]) + (hash_sign + fragment)
    return Merge(merged, True, reason, warnings)


def from_environment(environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """Runtime entry: ``(variable, merged URL)``, or None when the URL must stay as it is.

    Reads ``PLANE_GUARD_AMQP_URL_VAR`` (default ``AMQP_URL``), ``PLANE_GUARD_AMQP_HEARTBEAT`` and
    ``PLANE_GUARD_AMQP_HEARTBEAT_EXISTING``. Diagnostics go to stderr and never show the URL.
    """
    env = os.environ if environ is None else environ
    name = env.get("PLANE_GUARD_AMQP_URL_VAR") or "AMQP_URL"
    url = env.get(name)
    if not url:
        print(f"plane-guard: {name} is not set; heartbeat not added", file=sys.stderr)
        return None
    raw = env.get("PLANE_GUARD_AMQP_HEARTBEAT", "")
    heartbeat = parse_heartbeat(raw)
    existing = env.get("PLANE_GUARD_AMQP_HEARTBEAT_EXISTING") or "keep"
    if heartbeat is None or existing not in EXISTING_MODES:
        print(
            f"plane-guard: ignoring PLANE_GUARD_AMQP_HEARTBEAT={raw!r} / _EXISTING={existing!r}: "
            "use a number of seconds >= 0 and keep|replace",
            file=sys.stderr,
        )
        return None
    result = merge_heartbeat(url, heartbeat, existing)
    for warning in result.warnings:
        print(f"plane-guard: {name}: {warning}", file=sys.stderr)
    print(f"plane-guard: {name}: heartbeat {result.reason}", file=sys.stderr)
    return name, result.url


def main(environ: dict[str, str] | None = None) -> int:
    """Print the merged URL on stdout: exit 0, or 1 when the caller must keep the original."""
    merged = from_environment(environ)
    if merged is None:
        return 1
    sys.stdout.write(merged[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
