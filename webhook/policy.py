"""The policy: which pods are Plane's, and what plane-guard does to each role.

A pydantic model loaded from YAML (camelCase keys, unknown keys are errors) with an embedded
default for stock Plane charts. A bad policy never reaches the admission path: loading raises
``PolicyError`` with one line per problem, naming the field and what is allowed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from webhook import conventions

API_VERSION = "plane-guard.io/v1"
ROLE_NAMES = ("api", "worker", "beat")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
BOOLEAN_WORDS = {"true", "false", "1", "0", "yes", "no"}


class PolicyError(ValueError):
    """The policy is invalid; the message says where and what is allowed."""


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as error:
        raise ValueError(f"not a valid regular expression ({error})") from None
    return value


Regex = Annotated[str, AfterValidator(_regex)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class Match(_Model):
    """How a container is recognised (regular expressions, searched anywhere in the text)."""

    images: list[Regex] = Field(min_length=1)
    commands: list[Regex] = Field(min_length=1)
    container_names: list[Regex] = Field(default_factory=list)
    pod_labels: dict[str, Regex] = Field(default_factory=dict)

    @cached_property
    def compiled(self) -> tuple:
        return (
            [re.compile(p) for p in self.images],
            [re.compile(p) for p in self.commands],
            [re.compile(p) for p in self.container_names],
            {k: re.compile(v) for k, v in self.pod_labels.items()},
        )


class DefaultCommand(_Model):
    """The command to assume for a matching image when the pod spec sets none."""

    image: Regex
    command: list[str] = Field(min_length=1)


def _check_env_value(name: str, value: str) -> None:
    """Values of variables the runtime reads must parse, or the runtime would ignore them."""
    if name in ("GUNICORN_MAX_REQUESTS", "GUNICORN_MAX_REQUESTS_JITTER", "CELERY_BROKER_POOL_LIMIT"):
        if not value.isdigit():
            raise ValueError(f"env.{name} must be a whole number >= 0, not {value!r}")
    elif name in ("CELERY_TASK_PUBLISH_RETRY", "CELERY_CONFIRM_PUBLISH"):
        if value.lower() not in BOOLEAN_WORDS:
            raise ValueError(f"env.{name} must be true or false, not {value!r}")
    elif name == "CELERY_BROKER_HEARTBEAT":
        try:
            if float(value) < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"env.{name} must be a number of seconds >= 0, not {value!r}") from None
    elif name in ("CELERY_BROKER_TRANSPORT_OPTIONS", "CELERY_TASK_PUBLISH_RETRY_POLICY"):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError(f"env.{name} must be a JSON object, not {value!r}")


def _env_text(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, (int, float)) else value


class Role(_Model):
    """What plane-guard does to the containers of one Plane role."""

    match: Match
    env: dict[str, str] = Field(default_factory=dict)
    existing_env: Literal["replace", "keep"] = "replace"
    wrap_entrypoint: bool = True
    default_commands: list[DefaultCommand] = Field(default_factory=list)
    amqp_heartbeat: float | None = Field(default=60, ge=0, le=86400)
    existing_heartbeat: Literal["keep", "replace"] = "keep"

    @field_validator("env", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        """YAML ``0`` and ``true`` mean the strings a Kubernetes env value must be."""
        if isinstance(value, dict):
            return {name: _env_text(v) for name, v in value.items()}
        return value

    @field_validator("env")
    @classmethod
    def _check_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not ENV_NAME.match(name):
                raise ValueError(f"env name {name!r} is not a valid variable name (letters, digits, '-', '.', '_')")
            if name.startswith(conventions.RESERVED_ENV_PREFIX):
                raise ValueError(f"env name {name!r} is reserved for plane-guard itself")
            _check_env_value(name, value)
        return env

    def default_command(self, image: str) -> list[str] | None:
        for candidate in self.default_commands:
            if re.search(candidate.image, image):
                return list(candidate.command)
        return None


def _quantity(value: str) -> str:
    from kubernetes.utils import parse_quantity

    try:
        amount = parse_quantity(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (for example 100m, 0.5, 64Mi)") from None
    if amount <= 0:
        raise ValueError(f"{value!r} must be greater than zero")
    return value


Quantity = Annotated[str, AfterValidator(_quantity)]


class ResourceAmounts(_Model):
    cpu: Quantity
    memory: Quantity


class RuntimeResources(_Model):
    """Requests and limits of the init container.

    Both CPU and memory limits are set: in a namespace whose ResourceQuota covers
    ``limits.cpu`` and has no LimitRange default, the API server refuses a pod with a
    container that has no CPU limit.
    """

    requests: ResourceAmounts = Field(default_factory=lambda: ResourceAmounts(cpu="10m", memory="32Mi"))
    limits: ResourceAmounts = Field(default_factory=lambda: ResourceAmounts(cpu="100m", memory="64Mi"))

    @model_validator(mode="after")
    def _requests_within_limits(self) -> "RuntimeResources":
        from kubernetes.utils import parse_quantity

        for kind in ("cpu", "memory"):
            if parse_quantity(getattr(self.requests, kind)) > parse_quantity(getattr(self.limits, kind)):
                raise ValueError(f"requests.{kind} must not exceed limits.{kind}")
        return self


class Runtime(_Model):
    """The init container that delivers the wrapper and start-up hook into Plane pods."""

    image: str = Field(default="ghcr.io/plane-guard/plane-guard:0.1.0", min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    mount_path: str = "/plane-guard"
    resources: RuntimeResources = Field(default_factory=RuntimeResources)

    @field_validator("mount_path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.rstrip("/") == "" or ":" in value or "'" in value:
            raise ValueError("mountPath must be an absolute path other than /, without ':' or quotes")
        return value.rstrip("/")

    @property
    def entrypoint(self) -> str:
        return f"{self.mount_path}/{conventions.RUNTIME_ENTRYPOINT}"


Action = Literal["deny", "warn", "audit"]


class Bounds(_Model):
    min: int = Field(default=0, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Bounds":
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self

    def contains(self, value: int) -> bool:
        return value >= self.min and (self.max is None or value <= self.max)


class Rules(_Model):
    amqp_heartbeat_disabled: Action = "warn"
    unknown_amqp_query_key: Action = "warn"
    gunicorn_max_requests_out_of_bounds: Action = "warn"
    not_mutated: Action = "warn"


class Validation(_Model):
    """Checks of the final pod by the validating webhook, each with its action."""

    rules: Rules = Field(default_factory=Rules)
    gunicorn_max_requests: Bounds = Field(default_factory=lambda: Bounds(min=0, max=0))


class Limits(_Model):
    """The most work plane-guard does for one pod; a pod above a limit is admitted unchanged.

    Far above any Plane pod (a handful of containers, a few dozen env entries, a patch of a few
    kilobytes), and low enough that one request cannot hold the server up for the others.
    """

    containers_per_pod: int = Field(default=64, ge=1)
    env_per_container: int = Field(default=1024, ge=1)
    patch_bytes: int = Field(default=128 * 1024, ge=4096)


class Policy(_Model):
    """The whole policy; ``roles`` are tried in the order written."""

    api_version: Literal["plane-guard.io/v1"] = Field(alias="apiVersion")
    kind: Literal["Policy"]
    amqp_url_variable: str = Field(default="AMQP_URL", pattern=ENV_NAME.pattern)
    roles: dict[Literal["api", "worker", "beat"], Role] = Field(min_length=1)
    runtime: Runtime = Field(default_factory=Runtime)
    validation: Validation = Field(default_factory=Validation)
    limits: Limits = Field(default_factory=Limits)

    @cached_property
    def digest(self) -> str:
        """Short content hash: the status annotation records which policy mutated a pod.

        ``limits`` is left out: it decides whether a pod is worked on, not what is done to it.
        """
        dumped = self.model_dump(mode="json", by_alias=True, exclude={"limits"})
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _unwrap_optional(kind: Any) -> Any:
    if get_origin(kind) is Union or isinstance(kind, UnionType):
        return next(a for a in get_args(kind) if a is not type(None))
    return kind


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys allowed beside the unknown key at ``loc``, found by walking the model types."""
    current: Any = Policy
    for part in loc[:-1]:
        current = _unwrap_optional(current)
        if get_origin(current) in (dict, list):
            current = get_args(current)[-1]
        elif isinstance(current, type) and issubclass(current, BaseModel):
            fields = {f.alias or name: f for name, f in current.model_fields.items()}
            if part not in fields:
                return []
            current = fields[part].annotation
    current = _unwrap_optional(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _describe(error: dict[str, Any], source: str) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(error["loc"])) or "see the default policy"
        return f"{source}: {where}: unknown key; allowed here: {allowed}"
    if kind == "missing":
        return f"{source}: {where}: required key is missing"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{source}: {where}: {error['input']!r} is not allowed; use one of {expected}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {where}: {message}"


def parse_policy(data: Any, source: str = "<policy>") -> Policy:
    """Validate a policy already parsed from YAML; raise PolicyError with every problem."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: a policy is a YAML mapping with apiVersion: {API_VERSION} and kind: Policy")
    try:
        return Policy.model_validate(data)
    except ValidationError as error:
        lines = [_describe(e, source) for e in error.errors(include_url=False)]
        raise PolicyError("\n".join(lines)) from None


def load_policy_text(text: str, source: str = "<policy>") -> Policy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{source}: not valid YAML: {error}") from None
    return parse_policy(data, source)


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in ``path``, or the embedded default when ``path`` is None."""
    if path is None:
        return default_policy()
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"{path}: cannot read the policy file ({error.strerror})") from None
    return load_policy_text(text, str(path))


def default_policy_text() -> str:
    return resources.files("webhook").joinpath("default_policy.yaml").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def default_policy() -> Policy:
    return load_policy_text(default_policy_text(), "embedded default policy")


def load_or_report(path: str | Path | None) -> Policy | None:
    """For commands: the policy, or None after printing why it is invalid on stderr."""
    try:
        return load_policy(path)
    except PolicyError as error:
        print(f"invalid policy:\n{error}", file=sys.stderr)
        return None


def policy_command(args: argparse.Namespace) -> int:
    """``plane-guard policy check FILE`` (exit 2 when invalid) and ``policy default``."""
    if args.policy_command == "default":
        sys.stdout.write(default_policy_text())
        return 0
    policy = load_or_report(args.file)
    if policy is None:
        return 2
    print(f"{args.file}: valid (roles: {', '.join(policy.roles)}; digest {policy.digest})")
    return 0
