"""AdmissionReview envelope (admission.k8s.io/v1 and v1beta1): parse once, answer by hand.

Typed at the edge, plain inside: the envelope is a pydantic model so a malformed request is
rejected with a precise message, while ``request.object`` stays the plain dict the API server
sent, so no field the models do not know is ever dropped. The response is serialised here
without a model because it is small, fixed in shape and on the hot path.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError

API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")

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


def build_response(
    api_version: str,
    uid: str,
    *,
    allowed: bool = True,
    patch: list[dict[str, Any]] | None = None,
    warnings: list[str] | tuple[str, ...] = (),
    audit_annotations: dict[str, str] | None = None,
    status_code: int | None = None,
    status_message: str | None = None,
) -> bytes:
    """The AdmissionReview answer as JSON bytes, in the apiVersion the request used."""
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(pydantic_core.to_json(patch)).decode("ascii")
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
