"""Checks of the final pod (after every mutating webhook) against the policy. Pure: no I/O.

Each rule has an action in the policy: ``deny`` rejects the pod, ``warn`` admits it with a
warning kubectl shows, ``audit`` admits it and records an audit annotation. In audit mode a deny
becomes a warn, so turning plane-guard on never blocks a rollout by surprise.

Messages name containers, variables and query keys, never an env value or a URL: a literal
AMQP_URL carries the broker password.

In audit mode (an ``audit`` namespace, or ``serve --mode audit``) the mutating webhook leaves every
pod unchanged on purpose, so an unmutated pod is not news: the ``notMutated`` finding then names
what the mutating webhook would have changed instead of guessing that it was skipped or failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from webhook.core import conventions
from webhook.core.admission import WARNING_MAX_CHARS
from webhook.core.amqp_url import is_kombu_key, parse_heartbeat, query_pairs
from webhook.core.mutation import is_opted_out, mutate_pod, opted_out_by_policy, pod_roles
from webhook.core.policy import Policy

#: What the stock API image runs with when nothing overrides it (``--max-requests 1200``).
IMAGE_MAX_REQUESTS = 1200
MAX_REQUESTS_VARIABLE = "GUNICORN_MAX_REQUESTS"
NOT_MUTATED = "Plane pod not hardened by plane-guard (mutating webhook skipped or failed?)"
#: Audit mode: the pod was left unchanged on purpose; the names of what would change follow.
AUDIT_UNCHANGED = "audit mode, pod left unchanged; would change"


@dataclass(frozen=True)
class Finding:
    rule: str
    action: str  # deny | warn | audit, after audit mode is applied
    subject: str  # container name, or "pod"
    message: str
    #: Names (never values) listed after the message: what the mutating webhook would change.
    names: tuple[str, ...] = ()

    def warning(self) -> str:
        """The warning kubectl shows: whole names only, as many as the API server keeps, then a count."""
        if not self.names:
            return f"plane-guard: {self.subject}: {self.message}"
        return _fit(f"plane-guard: {self.message} {len(self.names)}: ", _compact(self.names), WARNING_MAX_CHARS)

    def full_text(self) -> str:
        """The message with every name, for audit annotations (not cut at 120 characters)."""
        return f"{self.message} {len(self.names)}: {', '.join(self.names)}" if self.names else self.message


@dataclass(frozen=True)
class Verdict:
    findings: tuple[Finding, ...] = ()
    roles: dict[str, str] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return not any(f.action == "deny" for f in self.findings)

    @property
    def decision(self) -> str:
        actions = {f.action for f in self.findings}
        for action, word in (("deny", "denied"), ("warn", "warned"), ("audit", "audited")):
            if action in actions:
                return word
        return "allowed"

    def deny_message(self) -> str:
        denied = [f for f in self.findings if f.action == "deny"]
        text = "; ".join(f"{f.subject}: {f.message} ({f.rule})" for f in denied)
        return f"plane-guard denied this pod: {text}. Fix the pod, or set the rule to warn in the plane-guard policy."

    def warnings(self) -> list[str]:
        return [f.warning() for f in self.findings if f.action == "warn"]

    @property
    def would_change(self) -> tuple[str, ...]:
        """Audit mode: what the mutating webhook would have changed in this unmutated pod (names)."""
        return next((f.names for f in self.findings if f.rule == "notMutated" and f.names), ())

    def audit_annotations(self) -> dict[str, str]:
        """One key per rule (the API server prefixes it with the webhook name), and ``would-change``
        in audit mode: every name, whatever the rule's action, as the mutating webhook records it."""
        grouped: dict[str, list[str]] = {}
        for finding in self.findings:
            if finding.action == "audit":
                grouped.setdefault(finding.rule, []).append(f"{finding.subject}: {finding.full_text()}")
        annotations = {rule: "; ".join(messages) for rule, messages in grouped.items()}
        if self.would_change:
            annotations["would-change"] = ",".join(self.would_change)
        return annotations


def _compact(changes: tuple[str, ...]) -> list[str]:
    """Change names with each container named once: ``plane-api: entrypoint``, ``env/X``, ``pod: ...``."""
    out: list[str] = []
    current = None
    for change in changes:
        owner, colon, what = change.partition(":")
        if not colon:
            out.append(change)
            continue
        out.append(what if owner == current else f"{owner}: {what}")
        current = owner
    return out


def _fit(head: str, names: list[str], limit: int) -> str:
    """``head`` and as many whole names as fit in ``limit`` characters, then ``+N more``."""
    for shown in range(len(names), -1, -1):
        rest = len(names) - shown
        text = head + ", ".join(names[:shown] + ([f"+{rest} more"] if rest else []))
        if len(text) <= limit:
            return text
    return head.rstrip(": ")


def rule_action(policy: Policy, rule: str) -> str:
    """The configured action for ``rule`` (camelCase name as written in the policy)."""
    rules = policy.validation.rules
    if isinstance(rules, dict):
        return rules.get(rule, "warn")
    return _actions(rules).get(rule, "warn")


@lru_cache(maxsize=8)
def _actions(rules: Any) -> dict[str, str]:
    """Rule name -> action of a (frozen, hashable) policy rules model, computed once."""
    dumped: dict[str, str] = rules.model_dump(by_alias=True)
    return dumped


def _env(container: dict[str, Any]) -> dict[str, Any]:
    """Variable name -> env entry; a later duplicate wins, as in the kubelet."""
    found: dict[str, Any] = {}
    env = container.get("env")
    if isinstance(env, list):
        for entry in env:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                found[entry["name"]] = entry
    return found


def _literal(entry: Any) -> str | None:
    if isinstance(entry, dict) and "valueFrom" not in entry and isinstance(entry.get("value"), str):
        return str(entry["value"])
    return None


def _wrapped(container: dict[str, Any]) -> bool:
    command = container.get("command")
    return isinstance(command, list) and any(
        isinstance(part, str) and part.endswith("/" + conventions.RUNTIME_ENTRYPOINT) for part in command[:3]
    )


def _check_amqp(name: str, container: dict[str, Any], env: dict[str, Any], policy: Policy) -> list[tuple[str, str]]:
    """(rule, message) pairs for a literal broker URL; a URL from a Secret cannot be seen here."""
    variable = policy.amqp_url_variable
    url = _literal(env.get(variable))
    if url is None or "$(" in url:
        return []
    problems: list[tuple[str, str]] = []
    runtime_heartbeat = parse_heartbeat(_literal(env.get(conventions.ENV_AMQP_HEARTBEAT)) or "")
    runtime_replaces = _literal(env.get(conventions.ENV_AMQP_HEARTBEAT_EXISTING)) == "replace"
    runtime_adds = _wrapped(container) and bool(runtime_heartbeat)
    unknown: list[str] = []
    disabled = unparsable = False
    for part in url.split(";"):
        pairs = query_pairs(part)
        if pairs is None:
            continue
        unknown += [k for k, _ in pairs if not is_kombu_key(k)]
        beats = [v for k, v in pairs if k == "heartbeat"]
        if not beats:
            disabled = disabled or not runtime_adds
            continue
        value = parse_heartbeat(beats[-1])
        if value is None:
            unparsable = unparsable or not (runtime_adds and runtime_replaces)
        elif value == 0:
            disabled = disabled or not (runtime_adds and runtime_replaces)
    if disabled:
        problems.append(
            ("amqpHeartbeatDisabled", f"{variable} has AMQP heartbeat off (kombu default 0): add heartbeat=60")
        )
    if unparsable:
        problems.append(("amqpHeartbeatDisabled", f"{variable} heartbeat is not a number kombu accepts: every delay() raises"))
    if unknown:
        keys = ", ".join(repr(k[:40]) for k in dict.fromkeys(unknown))
        problems.append(("unknownAmqpQueryKey", f"{variable} query key {keys} unknown to kombu: every delay() raises TypeError"))
    return problems


def _may_come_from_env_from(container: dict[str, Any], variable: str) -> bool:
    """Whether an ``envFrom`` source could set ``variable`` (its values are not visible here)."""
    sources = container.get("envFrom")
    return isinstance(sources, list) and any(
        isinstance(source, dict)
        and ("configMapRef" in source or "secretRef" in source)
        and variable.startswith(source.get("prefix") or "")
        for source in sources
    )


def _check_max_requests(container: dict[str, Any], env: dict[str, Any], policy: Policy) -> list[tuple[str, str]]:
    """The rotation limit the api container will run with, as far as admission can tell.

    With the wrapper the policy's value is decided at container start: an override always wins,
    a default only where the container has no value of its own. A value that ``envFrom`` may
    bring is never called "unset": it is decided at start and not checked here.
    """
    bounds = policy.validation.gunicorn_max_requests
    allowed = f"[{bounds.min}, {'unbounded' if bounds.max is None else bounds.max}]"
    wrapped = _wrapped(container)
    override = _literal(env.get(conventions.ENV_OVERRIDE_PREFIX + MAX_REQUESTS_VARIABLE)) if wrapped else None
    default = _literal(env.get(conventions.ENV_DEFAULT_PREFIX + MAX_REQUESTS_VARIABLE)) if wrapped else None
    entry = env.get(MAX_REQUESTS_VARIABLE)
    if override is not None:
        raw, origin = override, f"{MAX_REQUESTS_VARIABLE}={override.strip()} (policy)"
    elif entry is not None:
        literal = _literal(entry)
        if literal is None:
            return []  # from a ConfigMap or Secret key: not visible at admission
        raw, origin = literal, f"{MAX_REQUESTS_VARIABLE}={literal.strip()}"
    elif _may_come_from_env_from(container, MAX_REQUESTS_VARIABLE):
        if default is not None:
            return []  # the wrapper keeps envFrom's value or applies the policy's, and logs which
        return [
            (
                "gunicornMaxRequestsOutOfBounds",
                f"{MAX_REQUESTS_VARIABLE} is not in env: decided at container start by envFrom or the image default "
                f"({IMAGE_MAX_REQUESTS}); not checked (allowed {allowed})",
            )
        ]
    elif default is not None:
        raw, origin = default, f"{MAX_REQUESTS_VARIABLE}={default.strip()} (policy default)"
    else:
        raw, origin = str(IMAGE_MAX_REQUESTS), f"{MAX_REQUESTS_VARIABLE} unset: image default {IMAGE_MAX_REQUESTS}"
    try:
        value = int(raw.strip())
    except ValueError:
        return [("gunicornMaxRequestsOutOfBounds", f"{MAX_REQUESTS_VARIABLE} is not an integer (allowed {allowed})")]
    if value < bounds.min or (bounds.max is not None and value > bounds.max):
        return [("gunicornMaxRequestsOutOfBounds", f"{origin} outside allowed {allowed}: gunicorn rotation drops AMQP connections")]
    return []


def _runs_gunicorn(policy: Policy, role: str) -> bool:
    """Roles whose policy sets the rotation limit are the gunicorn ones (api, external-api)."""
    return MAX_REQUESTS_VARIABLE in policy.roles[role].settings


def validate_pod(pod: Any, policy: Policy, *, audit: bool = False) -> Verdict:
    """Every finding for the final pod; ``audit`` turns deny into warn."""
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        return Verdict(reasons=("not-a-pod",))
    roles = pod_roles(pod, policy)
    if not roles:
        return Verdict(reasons=("no-role-matched",))
    if is_opted_out(pod) or opted_out_by_policy(pod, policy) is not None:
        return Verdict(roles=roles, reasons=("opted-out",))

    raw: list[tuple[str, str, str]] = []
    metadata: dict[str, Any] = pod["metadata"] if isinstance(pod.get("metadata"), dict) else {}
    annotations: dict[str, Any] = metadata["annotations"] if isinstance(metadata.get("annotations"), dict) else {}
    names: dict[str, tuple[str, ...]] = {}
    if conventions.STATUS_ANNOTATION not in annotations:
        if not audit:
            raw.append(("notMutated", "pod", NOT_MUTATED))
        else:
            # Left unchanged on purpose: say what the mutating webhook would have done instead.
            names["notMutated"] = mutate_pod(pod, policy).changes
            if names["notMutated"]:
                raw.append(("notMutated", "pod", AUDIT_UNCHANGED))
    containers = pod["spec"].get("containers")
    for container in containers if isinstance(containers, list) else []:
        if not isinstance(container, dict) or container.get("name") not in roles:
            continue
        name = container["name"]
        env = _env(container)
        checks = _check_amqp(name, container, env, policy)
        if _runs_gunicorn(policy, roles[name]):
            checks += _check_max_requests(container, env, policy)
        raw += [(rule, name, message) for rule, message in checks]

    findings = []
    for rule, subject, message in raw:
        action = rule_action(policy, rule)
        if audit and action == "deny":
            action = "warn"
        findings.append(Finding(rule, action, subject, message, names.get(rule, ()) if subject == "pod" else ()))
    return Verdict(tuple(findings), roles, tuple(sorted({f.rule for f in findings})))
