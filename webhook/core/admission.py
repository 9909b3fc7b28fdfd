"""AdmissionReview (admission.k8s.io/v1 and v1beta1): parse the envelope once, decide, answer.

Typed at the edge, plain inside: the envelope is a pydantic model so a malformed request is
rejected with a precise message, while ``request.object`` stays the plain dict the API server
sent, so no field the models do not know is ever dropped. The response is serialised here
without a model because it is small, fixed in shape and on the hot path.

The policy's ``limits`` bound the work done for one pod: a pod above them (too many containers or
env entries, or a patch too large to answer with) is admitted unchanged with a warning and a
``limit-*`` reason, before the core spends time on it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")

#: Audit annotation values stay short enough for audit logs.
AUDIT_VALUE_MAX = 1024
INTERNAL_ERROR_WARNING = "plane-guard internal error: pod admitted unchanged (see the plane-guard logs)"
#: The API server keeps at most this many characters of one warning (longer ones are cut).
WARNING_MAX_CHARS = 120
#: Enough to be read in kubectl output, few enough not to flood it.
WARNING_MAX_COUNT = 8

#: The API server prefixes each auditAnnotations key with ``<webhook name>/`` and rejects the
#: result unless it is a qualified name with exactly one slash: our keys carry no prefix.
_AUDIT_KEY = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


class GroupVersionKind(_Envelope):
    group: str = ""
    version: str = ""
    kind: str = ""


class GroupVersionResource(_Envelope):
    group: str = ""
    version: str = ""
    resource: str = ""


class AdmissionRequest(_Envelope):
    uid: str = Field(min_length=1, max_length=256)
    kind: GroupVersionKind
    resource: GroupVersionResource | None = None
    subResource: str | None = None
    name: str | None = None
    namespace: str | None = None
    operation: str
    # Plain dicts: the pod is never modelled, so nothing the API server sent is lost.
    object: dict[str, Any] | None = None
    oldObject: dict[str, Any] | None = None
    dryRun: bool | None = None


class AdmissionReview(_Envelope):
    apiVersion: Literal["admission.k8s.io/v1", "admission.k8s.io/v1beta1"]
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


class EnvelopeError(ValueError):
    """The body is not an AdmissionReview this server can answer (HTTP 400)."""


def parse_review(body: bytes) -> AdmissionReview:
    """Parse the raw body in one pass; raise EnvelopeError with a message that echoes no values."""
    try:
        return AdmissionReview.model_validate_json(body)
    except ValidationError as exc:
        raise EnvelopeError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """Where and what, never the offending input (it may carry Secret data)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:5]:
        if error["type"] == "json_invalid":
            return "body is not valid JSON; send an AdmissionReview (admission.k8s.io/v1) as application/json"
        where = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"]
        if error["type"] == "literal_error" and error["loc"] == ("apiVersion",):
            message = f"must be one of {', '.join(API_VERSIONS)}"
        problems.append(f"{where}: {message}")
    return "not an AdmissionReview: " + "; ".join(problems)


def short_warning(text: str) -> str:
    """One warning the API server will show whole."""
    text = " ".join(str(text).split())
    return text if len(text) <= WARNING_MAX_CHARS else text[: WARNING_MAX_CHARS - 3] + "..."


def valid_audit_key(key: str) -> bool:
    return bool(_AUDIT_KEY.match(key))


def over_limit(pod: Any, limits: Any) -> tuple[str, str] | None:
    """(reason code, warning) when ``pod`` is above the policy's limits, else None. O(containers)."""
    spec = pod.get("spec") if isinstance(pod, dict) else None
    containers = spec.get("containers") if isinstance(spec, dict) else None
    if not isinstance(containers, list):
        return None
    if len(containers) > limits.containers_per_pod:
        return "limit-containers", _limit_warning(f"{len(containers)} containers", "containersPerPod", limits.containers_per_pod)
    for container in containers:
        env = container.get("env") if isinstance(container, dict) else None
        if isinstance(env, list) and len(env) > limits.env_per_container:
            return "limit-env", _limit_warning(f"{len(env)} env entries in a container", "envPerContainer", limits.env_per_container)
    return None


def _limit_warning(what: str, limit: str, value: int) -> str:
    return f"plane-guard left this pod unchanged: {what}, above limits.{limit} ({value})"


def build_response(
    api_version: str,
    uid: str,
    *,
    allowed: bool = True,
    patch: list[dict[str, Any]] | bytes | None = None,
    warnings: list[str] | tuple[str, ...] = (),
    audit_annotations: dict[str, str] | None = None,
    status_code: int | None = None,
    status_message: str | None = None,
) -> bytes:
    """The AdmissionReview answer as JSON bytes, in the apiVersion the request used.

    ``patch`` is the list of operations, or already its JSON.
    """
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if patch:
        raw = patch if isinstance(patch, bytes) else pydantic_core.to_json(patch)
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(raw).decode("ascii")
    if warnings:
        response["warnings"] = [short_warning(w) for w in list(dict.fromkeys(warnings))[:WARNING_MAX_COUNT]]
    if audit_annotations:
        for key, value in audit_annotations.items():
            if not valid_audit_key(key) or not isinstance(value, str):
                raise ValueError(f"audit annotation {key!r} is not a valid key/string value")
        response["auditAnnotations"] = audit_annotations
    if status_message is not None or status_code is not None:
        status: dict[str, Any] = {}
        if status_code is not None:
            status["code"] = status_code
        if status_message is not None:
            status["message"] = status_message
        if not allowed:
            status["status"] = "Failure"
            status["reason"] = "Forbidden" if status_code == 403 else "InternalError"
        response["status"] = status
    return pydantic_core.to_json({"apiVersion": api_version, "kind": "AdmissionReview", "response": response})


def pod_display_name(pod: dict[str, Any] | None) -> str:
    """Name for logs: the pod name, else its generateName, else its owner's name."""
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    if not isinstance(metadata, dict):
        return ""
    for key in ("name", "generateName"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            return value
    owners = metadata.get("ownerReferences")
    if isinstance(owners, list) and owners and isinstance(owners[0], dict):
        owner = owners[0]
        return f"{owner.get('kind', '')}/{owner.get('name', '')}"
    return ""


class Admission:
    """Turns one parsed AdmissionReview into response bytes plus the fields to log."""

    def __init__(
        self, policy: Any, *, mode: str, on_error: str, mutate: Callable[..., Any] | None = None, validate: Callable[..., Any] | None = None
    ):
        from webhook.core.mutation import mutate_pod
        from webhook.core.validation import validate_pod

        self.policy = policy
        self.global_audit = mode == "audit"
        self.on_error = on_error
        self.mutate = mutate or mutate_pod
        self.validate = validate or validate_pod

    def decide(self, webhook: str, audit: bool, review: AdmissionReview) -> tuple[bytes, dict[str, Any]]:
        request = review.request
        audit = audit or self.global_audit
        pod = request.object
        fields: dict[str, Any] = {
            "uid": request.uid,
            "webhook": webhook,
            "mode": "audit" if audit else "enforce",
            "namespace": request.namespace or _namespace_of(pod),
            "pod": pod_display_name(pod) or request.name or "",
            "operation": request.operation,
            "dry_run": bool(request.dryRun),
        }
        skip = _skip_reason(review)
        if skip:
            fields.update(decision="skipped", reasons=[skip], roles={})
            return build_response(review.apiVersion, request.uid), fields
        if pod is None:
            raise EnvelopeError("request.object is required for a Pod CREATE")
        limit = over_limit(pod, self.policy.limits)
        if limit:
            return self._over_limit(review, fields, *limit)
        if webhook == "mutate":
            return self._mutate(review, audit, fields)
        return self._validate(review, audit, fields)

    def _mutate(self, review: AdmissionReview, audit: bool, fields: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        request = review.request
        outcome = self.mutate(request.object, self.policy)
        fields.update(roles=outcome.roles, reasons=list(outcome.reasons), changes=list(outcome.changes))
        warnings = list(outcome.warnings)
        if not outcome.patch:
            fields["decision"] = "unchanged" if outcome.roles else "skipped"
            return build_response(review.apiVersion, request.uid, warnings=warnings), fields
        patch = pydantic_core.to_json(outcome.patch)
        if len(patch) > self.policy.limits.patch_bytes:
            warning = _limit_warning(f"a {len(patch)}-byte patch", "patchBytes", self.policy.limits.patch_bytes)
            return self._over_limit(review, fields, "limit-patch-bytes", warning)
        changed = _join(outcome.changes)
        if audit:
            fields["decision"] = "would-patch"
            containers = sorted({c.split(":", 1)[0] for c in outcome.changes if ":" in c} - {"pod"}) or ["pod"]
            summary = (
                f"plane-guard audit: would change {len(outcome.changes)} setting(s) in {', '.join(containers)}; "
                "nothing was changed"
            )
            body = build_response(
                review.apiVersion, request.uid, warnings=[summary, *warnings], audit_annotations={"would-change": changed}
            )
            return body, fields
        fields["decision"] = "patched"
        body = build_response(review.apiVersion, request.uid, patch=patch, warnings=warnings, audit_annotations={"changed": changed})
        return body, fields

    def _over_limit(self, review: AdmissionReview, fields: dict[str, Any], reason: str, warning: str) -> tuple[bytes, dict[str, Any]]:
        fields.update(decision="over-limit", reasons=[reason], roles=fields.get("roles") or {})
        fields.pop("changes", None)
        return build_response(review.apiVersion, review.request.uid, warnings=[warning]), fields

    def _validate(self, review: AdmissionReview, audit: bool, fields: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        request = review.request
        verdict = self.validate(request.object, self.policy, audit=audit)
        fields.update(roles=verdict.roles, reasons=list(verdict.reasons), decision=verdict.decision)
        would_change = getattr(verdict, "would_change", ())
        if would_change:
            fields["would_change"] = list(would_change)  # audit mode: names the mutating webhook would change
        annotations = {k: v[:AUDIT_VALUE_MAX] for k, v in verdict.audit_annotations().items()}
        if verdict.allowed:
            body = build_response(review.apiVersion, request.uid, warnings=verdict.warnings(), audit_annotations=annotations)
        else:
            body = build_response(
                review.apiVersion,
                request.uid,
                allowed=False,
                warnings=verdict.warnings(),
                audit_annotations=annotations,
                status_code=403,
                status_message=verdict.deny_message(),
            )
        return body, fields

    def error_answer(self, review: AdmissionReview, webhook: str, audit: bool) -> tuple[bytes, dict[str, Any]]:
        """The ``--on-error`` answer when deciding failed (a plane-guard bug must not block the pod);
        the caller logs and counts it."""
        request = review.request
        fields = {
            "uid": request.uid,
            "webhook": webhook,
            "mode": "audit" if audit or self.global_audit else "enforce",
            "namespace": request.namespace or "",
            "pod": request.name or "",
            "operation": request.operation,
            "dry_run": bool(request.dryRun),
        }
        return self._internal_error(review, webhook, fields)

    def _internal_error(self, review: AdmissionReview, webhook: str, fields: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        fields.setdefault("roles", {})
        fields["reasons"] = ["internal-error"]
        if self.on_error == "deny":
            fields["decision"] = "error-denied"
            body = build_response(
                review.apiVersion,
                review.request.uid,
                allowed=False,
                status_code=500,
                status_message="plane-guard internal error; the pod was not admitted (--on-error deny). Check the plane-guard logs.",
            )
            return body, fields
        fields["decision"] = "error-allowed"
        return build_response(review.apiVersion, review.request.uid, warnings=[INTERNAL_ERROR_WARNING]), fields


def _namespace_of(pod: dict[str, Any] | None) -> str:
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    value = metadata.get("namespace") if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else ""


def _join(changes: tuple[str, ...] | list[str]) -> str:
    text = ",".join(changes)
    return text if len(text) <= AUDIT_VALUE_MAX else text[: AUDIT_VALUE_MAX - 3] + "..."


def _skip_reason(review: AdmissionReview) -> str | None:
    request = review.request
    if request.kind.kind != "Pod" or request.kind.group != "":
        return "not-a-pod"
    if request.resource is not None and request.resource.resource not in ("", "pods"):
        return "not-a-pod"
    if request.subResource:
        return "subresource"
    if request.operation != "CREATE":
        return "not-create"
    return None
