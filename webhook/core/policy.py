"""The policy: which pods are Plane's, and what plane-guard does to each role.

A pydantic model loaded from YAML (camelCase keys, unknown keys are errors) with an embedded
default for stock Plane charts. A bad policy never reaches the admission path: loading raises
``PolicyError`` with one line per problem, naming the field and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from decimal import Decimal
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

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

from webhook.core import conventions

API_VERSION = "plane-guard.io/v1"
ROLE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
#: Policy variables are exported by the wrapper's shell at container start, so they must be
#: names a POSIX shell can export (Kubernetes itself also allows '-' and '.').
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A Secret's name: a DNS subdomain (RFC 1123), at most 253 characters.
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
BOOLEAN_WORDS = {"true", "false", "1", "0", "yes", "no"}
ExistingEnv = Literal["replace", "keep"]


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


class CompiledMatch(NamedTuple):
    """A role's match, compiled once: read by name, never by position."""

    images: list[re.Pattern[str]]
    commands: list[re.Pattern[str]]
    container_names: list[re.Pattern[str]]
    pod_labels: dict[str, re.Pattern[str]]


class Match(_Model):
    """How a container is recognised (regular expressions, searched anywhere in the text)."""

    images: list[Regex] = Field(min_length=1)

    @field_validator("images")
    @classmethod
    def _re2(cls, images: list[str]) -> list[str]:
        """The API server runs these in CEL (RE2): no lookaround, no back-references."""
        for pattern in images:
            if _NOT_RE2.search(pattern):
                raise ValueError(
                    f"{pattern!r} uses lookaround or a back-reference, which the API server's CEL (RE2) cannot run "
                    "in the webhook configurations' matchConditions; write it without"
                )
        return images
    commands: list[Regex] = Field(min_length=1)
    container_names: list[Regex] = Field(default_factory=list)
    pod_labels: dict[str, Regex] = Field(default_factory=dict)

    @cached_property
    def compiled(self) -> CompiledMatch:
        return CompiledMatch(
            images=[re.compile(p) for p in self.images],
            commands=[re.compile(p) for p in self.commands],
            container_names=[re.compile(p) for p in self.container_names],
            pod_labels={k: re.compile(v) for k, v in self.pod_labels.items()},
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
        if value.strip().lower() not in BOOLEAN_WORDS:
            raise ValueError(f"env.{name} must be a boolean (1/0, true/false, yes/no), not {value!r}")
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


class EnvSetting(_Model):
    """One variable with its own answer to "what if the container already has a value"."""

    value: str
    existing: ExistingEnv | None = None

    @field_validator("value", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        return _env_text(value)


def _stringify_env(value: Any) -> Any:
    """YAML ``0`` and ``true`` mean the strings a Kubernetes env value must be."""
    if isinstance(value, dict):
        return {name: v if isinstance(v, dict) else _env_text(v) for name, v in value.items()}
    return value


def _check_env(env: dict[str, str | EnvSetting]) -> dict[str, str | EnvSetting]:
    for name, setting in env.items():
        if not ENV_NAME.match(name):
            raise ValueError(f"env name {name!r} is not a variable name a shell can export (letters, digits, '_')")
        if name.startswith(conventions.RESERVED_ENV_PREFIX):
            raise ValueError(f"env name {name!r} is reserved for plane-guard itself")
        _check_env_value(name, setting.value if isinstance(setting, EnvSetting) else setting)
    return env


class RoleSettings(_Model):
    """What plane-guard does to a role's containers: a role sets these, and a ``workloads`` rule may
    change any of them for one workload (written once, here, for both)."""

    env: dict[str, str | EnvSetting] = Field(default_factory=dict)
    existing_env: ExistingEnv = "replace"
    wrap_entrypoint: bool = True
    amqp_heartbeat: float | None = Field(default=60, ge=0, le=86400)
    existing_heartbeat: Literal["keep", "replace"] = "keep"
    publish_timeout_seconds: float | None = Field(default=10, gt=0, le=3600)
    pika_confirm_delivery: bool = True
    #: Processes (regular expressions on their command line) that are start-up steps of the
    #: entrypoint, not the server or worker: a publish there goes on past the bound, reported.
    startup_steps: list[Regex] = Field(default_factory=list)

    _stringify = field_validator("env", mode="before")(_stringify_env)
    _check = field_validator("env")(_check_env)


class Role(RoleSettings):
    """What plane-guard does to the containers of one Plane role.

    ``skip`` marks containers that are recognised as Plane's but must stay untouched (the
    migrator Job); its text is the reason the preview and the logs give.
    """

    match: Match
    skip: str | None = Field(default=None, min_length=1, max_length=200)
    default_commands: list[DefaultCommand] = Field(default_factory=list)

    @cached_property
    def settings(self) -> dict[str, tuple[str, str]]:
        """Variable -> (value, keep|replace), with the role's ``existingEnv`` filled in."""
        found: dict[str, tuple[str, str]] = {}
        for name, setting in self.env.items():
            if isinstance(setting, EnvSetting):
                found[name] = (setting.value, setting.existing or self.existing_env)
            else:
                found[name] = (setting, self.existing_env)
        return found

    def default_command(self, image: str) -> list[str] | None:
        for candidate in self.default_commands:
            if re.search(candidate.image, image):
                return list(candidate.command)
        return None


#: A Kubernetes resource quantity: a decimal number and an optional binary, decimal or exponent suffix.
_QUANTITY = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))([KMGTPE]i|[numkMGTPE]|[eE][+-]?\d+)?$")
_SUFFIXES = {
    **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")},
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    **{p: Decimal(1000) ** (i + 1) for i, p in enumerate("kMGTPE")},
}


def parse_quantity(value: str) -> Decimal:
    """The amount a Kubernetes quantity stands for (``100m`` -> 0.1, ``64Mi`` -> 67108864).

    The core may not import the kubernetes client; this is the quantity grammar of
    ``k8s.io/apimachinery/pkg/api/resource``, which is all the policy needs to compare amounts.
    """
    found = _QUANTITY.match(value.strip()) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"{value!r} is not a quantity")
    number, suffix = Decimal(found.group(1)), found.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def _quantity(value: str) -> str:
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
    def _requests_within_limits(self) -> RuntimeResources:
        for kind in ("cpu", "memory"):
            if parse_quantity(getattr(self.requests, kind)) > parse_quantity(getattr(self.limits, kind)):
                raise ValueError(f"requests.{kind} must not exceed limits.{kind}")
        return self


class Runtime(_Model):
    """The init container that delivers the wrapper and start-up hook into Plane pods."""

    image: str = Field(default="ghcr.io/plane-guard/plane-guard-runtime:0.1.0", min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    #: Secrets (in each Plane namespace) that the kubelet may use to pull ``image``: added to
    #: the pod's imagePullSecrets when missing, for a runtime image on a private mirror.
    image_pull_secrets: list[str] = Field(default_factory=list, max_length=16)
    mount_path: str = "/plane-guard"
    resources: RuntimeResources = Field(default_factory=RuntimeResources)

    @field_validator("image_pull_secrets", mode="before")
    @classmethod
    def _references(cls, value: Any) -> Any:
        """Kubernetes' own shape (``- name: x``) is accepted too: it is what people copy."""
        if isinstance(value, list):
            return [v["name"] if isinstance(v, dict) and set(v) == {"name"} else v for v in value]
        return value

    @field_validator("image_pull_secrets")
    @classmethod
    def _secret_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if len(name) > 253 or not SECRET_NAME.match(name):
                raise ValueError(f"{name[:64]!r} is not a Secret name (lower-case letters, digits, '-' and '.')")
        if len(set(names)) != len(names):
            raise ValueError("each Secret may be named once")
        return names

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
    def _ordered(self) -> Bounds:
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


class WorkloadMatch(_Model):
    """Pods by what the Plane charts do set on them (their values reach only the Deployment).

    ``podLabels``: the pod template's labels, e.g. ``app.name: plane-plane-worker-importers``
    (``<namespace>-<release>-<component>``). ``workloads``: the name of the workload that owns
    the pod: the Deployment (found through its ReplicaSet), StatefulSet, DaemonSet or Job.
    Regular expressions, searched anywhere; every one given must match.
    """

    pod_labels: dict[str, Regex] = Field(default_factory=dict)
    workloads: list[Regex] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something(self) -> WorkloadMatch:
        if not self.pod_labels and not self.workloads:
            raise ValueError("give podLabels or workloads (or both)")
        return self

    def matches(self, labels: dict[str, Any], workload: str | None) -> bool:
        for key, pattern in self.pod_labels.items():
            value = labels.get(key)
            if not isinstance(value, str) or not re.search(pattern, value):
                return False
        return not self.workloads or (workload is not None and any(re.search(p, workload) for p in self.workloads))


#: Role settings a workload rule may change (``env`` is merged into the role's, the rest replace).
WORKLOAD_OVERRIDES = tuple(RoleSettings.model_fields)


class Workload(RoleSettings):
    """One workload's exception to its role: left alone (``inject: false``), or other settings.

    Only the settings the rule writes apply (``model_fields_set``); the others keep the role's.
    """

    match: WorkloadMatch
    inject: bool = True
    reason: str | None = Field(default=None, min_length=1, max_length=200)

    def applied_to(self, role: Role) -> Role:
        """``role`` with this rule's settings; ``null`` is a value here (``amqpHeartbeat: null``: no heartbeat)."""
        given = {name: getattr(self, name) for name in WORKLOAD_OVERRIDES if name in self.model_fields_set}
        if not given:
            return role
        data = role.model_dump(by_alias=False)
        data.update(given)
        data["env"] = {**role.env, **self.env}
        return Role.model_validate(data)


class Limits(_Model):
    """The most work plane-guard does for one pod; a pod above a limit is admitted unchanged.

    Far above any Plane pod (a handful of containers, a few dozen env entries, a patch of a few
    kilobytes), and low enough that one request cannot hold the server up for the others.
    """

    containers_per_pod: int = Field(default=64, ge=1)
    env_per_container: int = Field(default=1024, ge=1)
    patch_bytes: int = Field(default=128 * 1024, ge=4096)


MATCH_CONDITION_NAME = "plane-backend-image"
#: Constructs Python's ``re`` knows and RE2 (the API server's CEL ``matches``) does not.
_NOT_RE2 = re.compile(r"\(\?[=!<]|\(\?P=|\\[1-9]")


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def match_condition_expression(images: Sequence[str]) -> str:
    """The CEL ``matchConditions`` expression that lets exactly these images' pods reach the webhook.

    One source for the Plane-image rule: the webhook configurations carry this expression,
    generated from the policy's ``match.images`` (a test checks the manifests), so an image the
    policy matches is never filtered out by the API server first. CEL's ``matches`` searches
    like Python's ``re.search``.
    """
    tests = " || ".join(f"c.image.matches({_cel_string(p)})" for p in images)
    return (
        "object != null && has(object.spec) && has(object.spec.containers) &&\n"
        f"object.spec.containers.exists(c, has(c.image) && ({tests}))"
    )


class Policy(_Model):
    """The whole policy; ``roles`` are tried in the order written, then ``workloads``' exceptions."""

    api_version: Literal["plane-guard.io/v1"] = Field(alias="apiVersion")
    kind: Literal["Policy"]
    amqp_url_variable: str = Field(default="AMQP_URL", pattern=ENV_NAME.pattern)
    roles: dict[str, Role] = Field(min_length=1)
    workloads: list[Workload] = Field(default_factory=list)
    runtime: Runtime = Field(default_factory=Runtime)
    validation: Validation = Field(default_factory=Validation)
    limits: Limits = Field(default_factory=Limits)

    def workload_rule(self, labels: dict[str, Any], workload: str | None) -> tuple[int, Workload] | None:
        """The first ``workloads`` entry that covers a pod with these labels and owner."""
        for index, rule in enumerate(self.workloads):
            if rule.match.matches(labels, workload):
                return index, rule
        return None

    @cached_property
    def _workload_roles(self) -> dict[tuple[int, str], Role]:
        return {
            (index, name): rule.applied_to(role)
            for index, rule in enumerate(self.workloads)
            for name, role in self.roles.items()
        }

    def role_for(self, name: str, rule: tuple[int, Workload] | None) -> Role:
        """The role's settings for one pod: its own, or as its workload rule changes them."""
        return self.roles[name] if rule is None else self._workload_roles[(rule[0], name)]

    @field_validator("roles")
    @classmethod
    def _role_names(cls, roles: dict[str, Role]) -> dict[str, Role]:
        for name in roles:
            if not ROLE_NAME.match(name):
                raise ValueError(f"role name {name!r} must be lower-case letters, digits and '-' (at most 40)")
        return roles

    @cached_property
    def plane_images(self) -> tuple[re.Pattern[str], ...]:
        """Every image pattern of every role: a container matching one runs a Plane backend image."""
        return tuple(p for role in self.roles.values() for p in role.match.compiled.images)

    @cached_property
    def image_patterns(self) -> tuple[str, ...]:
        """The roles' ``match.images``, each once, in the order written."""
        return tuple(dict.fromkeys(p for role in self.roles.values() for p in role.match.images))

    def match_condition(self) -> str:
        """The webhook configurations' CEL ``matchConditions`` expression for this policy."""
        return match_condition_expression(self.image_patterns)

    @cached_property
    def digest(self) -> str:
        """Short content hash: the status annotation records which policy mutated a pod.

        ``limits`` is left out: it decides whether a pod is worked on, not what is done to it.
        So are runtime pull secrets when there are none, as before they existed: pods guarded
        then stay current.
        """
        exclude: dict[str, Any] = {"limits": True}
        if not self.runtime.image_pull_secrets:
            exclude["runtime"] = {"image_pull_secrets": True}
        dumped = self.model_dump(mode="json", by_alias=True, exclude=exclude)
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _unwrap_optional(kind: Any) -> Any:
    if get_origin(kind) is Union or isinstance(kind, UnionType):
        return next(a for a in get_args(kind) if a is not type(None))
    return kind


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
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
        # The model's own keys first (``match`` before the shared role settings).
        own = set(current.__annotations__)
        names = sorted(current.model_fields, key=lambda name: name not in own)
        return [current.model_fields[name].alias or name for name in names]
    return []


def _describe(error: Any, source: str) -> str:
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
    return resources.files("webhook.core").joinpath("default_policy.yaml").read_text(encoding="utf-8")


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
