"""Plane pod mutations, built directly as RFC 6902 operations against the pod the API server sent.

Pure: pod and policy in, operations out. Nothing here copies or diffs the pod; every operation
is computed from what the pod already holds, so the patch applies cleanly to exactly that object
(missing lists and maps are created with one ``add``, keys are JSON-pointer escaped) and nothing
the user wrote is dropped. ``apply_patch`` exists for the offline preview and the tests.

A pod is idempotent under this mutation: a second pass finds every change in place and the
status annotation unchanged, so it returns an empty patch (webhook reinvocation, re-applies).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from webhook import __version__
from webhook.core import conventions as names
from webhook.core.amqp_url import format_heartbeat, merge_heartbeat, parse_heartbeat
from webhook.core.policy import Policy, Role

RUNTIME_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
#: How much of an unrecognised command the notes quote (commands are not secret, but bounded).
COMMAND_ECHO = 60


@dataclass(frozen=True)
class Outcome:
    """What the mutation decided. Names and reasons only: never env values or URLs."""

    patch: list[dict[str, Any]]
    roles: dict[str, str] = field(default_factory=dict)
    changes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    #: (container, variable, keep | replace): the settings the wrapper decides at container start.
    decided_at_start: tuple[tuple[str, str, str], ...] = ()
    #: Sentences for people (preview): why a container was skipped.
    notes: tuple[str, ...] = ()

    @property
    def matched(self) -> bool:
        return bool(self.roles)


def escape(key: str) -> str:
    """A map key as one JSON-pointer segment (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def apply_patch(pod: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod as the API server stores it after the patch (a new object; ``pod`` is untouched)."""
    patched: dict[str, Any] = jsonpatch.apply_patch(pod, patch)
    return patched


def as_map(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one: pod bodies are plain dicts of any shape."""
    return value if isinstance(value, dict) else {}


def is_opted_out(pod: dict[str, Any]) -> bool:
    """The per-pod opt-out: label (seen by the objectSelector) or annotation."""
    metadata = as_map(pod.get("metadata"))
    for source in (as_map(metadata.get("labels")), as_map(metadata.get("annotations"))):
        value = source.get(names.INJECT)
        if isinstance(value, str) and value.strip().lower() in names.OPT_OUT_VALUES:
            return True
    return False


def _containers(pod: dict[str, Any]) -> list[Any]:
    containers = as_map(pod.get("spec")).get("containers")
    return containers if isinstance(containers, list) else []


def role_of(container: Any, labels: dict[str, Any], policy: Policy) -> tuple[str, Role] | None:
    """The first policy role whose match rules this container satisfies."""
    if not isinstance(container, dict):
        return None
    image, name, command = container.get("image"), container.get("name"), container.get("command")
    if not isinstance(image, str) or not isinstance(name, str):
        return None
    command_text = " ".join(c for c in command if isinstance(c, str)) if isinstance(command, list) else ""
    for role_name, role in policy.roles.items():
        images, commands, container_names, pod_labels = role.match.compiled
        if not any(p.search(image) for p in images):
            continue
        if any(not (isinstance(labels.get(k), str) and p.search(labels[k])) for k, p in pod_labels.items()):
            continue
        if command_text:
            recognised = any(p.search(command_text) for p in commands)
        else:
            recognised = any(p.search(name) for p in container_names)
        if recognised:
            return role_name, role
    return None


def unmatched(container: Any, policy: Policy) -> tuple[str, str]:
    """Why no role took this container: (reason code, sentence for people)."""
    if not isinstance(container, dict) or not isinstance(container.get("name"), str):
        return "malformed-container", "a container without a name"
    name, image = container["name"], container.get("image")
    if not isinstance(image, str) or not any(p.search(image) for p in policy.plane_images):
        return "not-plane-image", f"{name}: not a Plane backend image"
    command = container.get("command")
    text = " ".join(c for c in command if isinstance(c, str)) if isinstance(command, list) else ""
    text = " ".join(text.split())
    shown = text[:COMMAND_ECHO] + ("..." if len(text) > COMMAND_ECHO else "") if text else f"(no command; container name {name!r})"
    return "unrecognised-command", f"{name}: Plane backend image, command not recognised: {shown}"


def workload_name(pod: dict[str, Any]) -> str | None:
    """The workload a pod belongs to, from its controller reference.

    A ReplicaSet's name is its Deployment's plus ``-<pod-template-hash>``, which the pod carries as
    a label: that suffix is dropped, so rules name the Deployment, as the chart does.
    """
    metadata = as_map(pod.get("metadata"))
    owners = metadata.get("ownerReferences")
    if not isinstance(owners, list):
        return None
    owner = next((o for o in owners if isinstance(o, dict) and o.get("controller")), None)
    if owner is None or not isinstance(owner.get("name"), str):
        return None
    name = owner["name"]
    template_hash = as_map(metadata.get("labels")).get("pod-template-hash")
    if owner.get("kind") == "ReplicaSet" and isinstance(template_hash, str) and name.endswith(f"-{template_hash}"):
        return str(name[: -len(template_hash) - 1])
    return str(name)


def _opt_out_reason(rule: tuple[int, Any] | None) -> str | None:
    if rule is None or rule[1].inject:
        return None
    return rule[1].reason or f"the policy's workloads[{rule[0]}] sets inject: false"


def opted_out_by_policy(pod: dict[str, Any], policy: Policy, workload: str | None = None) -> str | None:
    """The reason when a ``workloads`` rule with ``inject: false`` covers this pod, else None."""
    labels = as_map(as_map(pod.get("metadata")).get("labels"))
    return _opt_out_reason(policy.workload_rule(labels, workload or workload_name(pod)))


def pod_roles(pod: dict[str, Any], policy: Policy) -> dict[str, str]:
    """Container name -> role for every Plane container plane-guard changes (opt-out not considered).

    Containers of a ``skip`` role (the migrator) are Plane's but never changed, so they are not listed.
    """
    labels = as_map(as_map(pod.get("metadata")).get("labels"))
    found = {}
    for container in _containers(pod):
        match = role_of(container, labels, policy)
        if match and not match[1].skip:
            found[container["name"]] = match[0]
    return found


@dataclass
class _Overrides:
    """Per-pod override annotations, validated; a bad value becomes a warning."""

    max_requests: str | None = None
    max_requests_jitter: str | None = None
    heartbeat: float | None = None
    wrap: bool | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, annotations: dict[str, Any], policy: Policy) -> _Overrides:
        found = cls()
        bounds = policy.validation.gunicorn_max_requests
        for key, attribute in (
            (names.MAX_REQUESTS_ANNOTATION, "max_requests"),
            (names.MAX_REQUESTS_JITTER_ANNOTATION, "max_requests_jitter"),
        ):
            raw = annotations.get(key)
            if raw is None:
                continue
            text = str(raw).strip()
            if not text.isdigit():
                found._bad(key, raw, "a whole number >= 0")
            elif attribute == "max_requests" and not bounds.contains(int(text)):
                found._bad(key, raw, f"a number within the policy bounds {bounds.min}..{bounds.max}")
            else:
                setattr(found, attribute, str(int(text)))
        raw = annotations.get(names.HEARTBEAT_ANNOTATION)
        if raw is not None:
            value = parse_heartbeat(str(raw).strip())
            if value is None or value > 86400:
                found._bad(names.HEARTBEAT_ANNOTATION, raw, "a number of seconds from 0 to 86400")
            else:
                found.heartbeat = value
        raw = annotations.get(names.WRAP_ANNOTATION)
        if raw is not None:
            text = str(raw).strip().lower()
            if text in ("true", "false"):
                found.wrap = text == "true"
            else:
                found._bad(names.WRAP_ANNOTATION, raw, "true or false")
        return found

    def _bad(self, key: str, raw: Any, expected: str) -> None:
        # The value is not quoted: whoever can create pods could make the warning say anything.
        self.warnings.append(f"ignored annotation {key}: expected {expected}")

    def settings_for(self, role: Role) -> dict[str, tuple[str, str]]:
        """The role's settings with the pod's annotations applied; an annotation always replaces."""
        settings = dict(role.settings)
        for variable, value in (
            ("GUNICORN_MAX_REQUESTS", self.max_requests),
            ("GUNICORN_MAX_REQUESTS_JITTER", self.max_requests_jitter),
        ):
            if value is not None and variable in settings:
                settings[variable] = (value, "replace")
        return settings


class _ContainerPlan:
    """Operations for one container; indices refer to the container as the API server sent it."""

    def __init__(self, container: dict[str, Any], index: int, ops: list[dict[str, Any]], changes: list[str], reasons: list[str]):
        self.container = container
        self.name = container["name"]
        self.base = f"/spec/containers/{index}"
        self.ops, self.changes, self.reasons = ops, changes, reasons
        env = container.get("env")
        self.entries = env if isinstance(env, list) else []
        self.env_exists = isinstance(env, list)
        self.positions = {
            entry["name"]: i
            for i, entry in enumerate(self.entries)
            if isinstance(entry, dict) and isinstance(entry.get("name"), str)
        }
        self.appended: list[dict[str, Any]] = []

    def set_env(self, variable: str, value: str, keep: bool = False, change: str | None = None) -> bool:
        """Set one variable in place (keeping ``$(VAR)`` order) or append it; True if it changed.

        ``change`` names the change in the status annotation (default ``<container>:env/<variable>``;
        empty: the caller records one change for several variables).
        """
        position = self.positions.get(variable)
        if position is None:
            if any(e["name"] == variable for e in self.appended):
                return False
            self.appended.append({"name": variable, "value": value})
        else:
            entry = self.entries[position]
            if entry.get("value") == value and "valueFrom" not in entry:
                return False
            if keep:
                self.reasons.append(f"{self.name}:kept-env/{variable}")
                return False
            replacement = {"name": variable, "value": value}
            self.ops.append({"op": "replace", "path": f"{self.base}/env/{position}", "value": replacement})
        if change != "":
            self.changes.append(change or f"{self.name}:env/{variable}")
        return True

    def set_env_from_field(self, variable: str, field_path: str, change: str) -> None:
        """Add ``variable`` from the Downward API (``fieldRef``) unless the container has it already."""
        if variable in self.positions or any(e["name"] == variable for e in self.appended):
            return
        self.appended.append({"name": variable, "valueFrom": {"fieldRef": {"fieldPath": field_path}}})
        self.changes.append(f"{self.name}:{change}")

    def finish_env(self) -> None:
        if not self.appended:
            return
        if self.env_exists:
            self.ops.extend({"op": "add", "path": f"{self.base}/env/-", "value": e} for e in self.appended)
        else:
            self.ops.append({"op": "add", "path": f"{self.base}/env", "value": self.appended})

    def set_list_item(self, key: str, item: dict[str, Any], change: str) -> None:
        """Add ``item`` to the list ``key`` unless an item of that name is already there."""
        current = self.container.get(key)
        if isinstance(current, list):
            if any(isinstance(i, dict) and i.get("name") == item["name"] for i in current):
                return
            self.ops.append({"op": "add", "path": f"{self.base}/{key}/-", "value": item})
        else:
            self.ops.append({"op": "add", "path": f"{self.base}/{key}", "value": [item]})
        self.changes.append(f"{self.name}:{change}")


def _malformed(container: dict[str, Any]) -> str | None:
    """Why the API server would reject this container anyway; such containers are not touched."""
    for key in ("env", "envFrom", "volumeMounts"):
        value = container.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(i, dict) for i in value)):
            return key
    command = container.get("command")
    if command is not None and not (isinstance(command, list) and all(isinstance(c, str) for c in command)):
        return "command"
    return None


def _wrap(plan: _ContainerPlan, role: Role, policy: Policy) -> bool:
    """Point the command at the runtime wrapper; True when the container runs through it."""
    runtime = policy.runtime
    command = plan.container.get("command") or []
    mounts = [m for m in plan.container.get("volumeMounts") or [] if m.get("name") != names.RUNTIME_VOLUME]
    if any(str(m.get("mountPath", "")).rstrip("/") == runtime.mount_path for m in mounts):
        plan.reasons.append(f"{plan.name}:mount-path-taken")
        return False
    if command[:2] != [names.RUNTIME_SHELL, runtime.entrypoint]:
        original = command or role.default_command(plan.container["image"])
        if not original:
            plan.reasons.append(f"{plan.name}:no-command-known")
            return False
        op = "replace" if "command" in plan.container else "add"
        plan.ops.append({"op": op, "path": f"{plan.base}/command", "value": [names.RUNTIME_SHELL, runtime.entrypoint, *original]})
        plan.changes.append(f"{plan.name}:entrypoint")
    mount = {"name": names.RUNTIME_VOLUME, "mountPath": runtime.mount_path, "readOnly": True}
    plan.set_list_item("volumeMounts", mount, "runtime-volume-mount")
    return True


def _amqp(plan: _ContainerPlan, role: Role, policy: Policy, heartbeat: float, wrapped: bool, warnings: list[str]) -> None:
    """Add the heartbeat to a literal URL here, or have the runtime merge one from a Secret."""
    variable = policy.amqp_url_variable
    position = plan.positions.get(variable)
    entry = plan.entries[position] if position is not None else None
    literal = entry is not None and "valueFrom" not in entry and isinstance(entry.get("value"), str)
    if entry is not None and literal and "$(" not in entry["value"]:
        merged = merge_heartbeat(entry["value"], heartbeat, role.existing_heartbeat)
        warnings.extend(f"{plan.name}: {variable}: {w}" for w in merged.warnings)
        if merged.changed:
            plan.ops.append({"op": "replace", "path": f"{plan.base}/env/{position}/value", "value": merged.url})
            plan.changes.append(f"{plan.name}:amqp-url/heartbeat")
        else:
            plan.reasons.append(f"{plan.name}:amqp-url-{merged.reason}")
        return
    from_secret = entry is not None and ("valueFrom" in entry or literal)
    from_env_from = entry is None and any(
        isinstance(source, dict) and not source.get("prefix") and ("secretRef" in source or "configMapRef" in source)
        for source in plan.container.get("envFrom") or []
    )
    if not (from_secret or from_env_from):
        plan.reasons.append(f"{plan.name}:amqp-url-absent")
        return
    if not wrapped:
        plan.reasons.append(f"{plan.name}:amqp-url-needs-wrapper")
        return
    settings = {names.ENV_AMQP_HEARTBEAT: format_heartbeat(heartbeat), names.ENV_AMQP_HEARTBEAT_EXISTING: role.existing_heartbeat}
    if variable != "AMQP_URL":
        settings[names.ENV_AMQP_URL_VAR] = variable
    if any([plan.set_env(name, value, change="") for name, value in settings.items()]):
        plan.changes.append(f"{plan.name}:amqp-url/runtime-merge")


def _pod_level(pod: dict[str, Any], policy: Policy, ops: list[dict[str, Any]], changes: list[str]) -> None:
    """The shared volume, the init container that fills it and its pull secrets, once per pod."""
    spec = pod["spec"]
    runtime = policy.runtime
    volume = {"name": names.RUNTIME_VOLUME, "emptyDir": {"sizeLimit": "8Mi"}}
    init = {
        "name": names.RUNTIME_INIT_CONTAINER,
        "image": runtime.image,
        "imagePullPolicy": runtime.image_pull_policy,
        "command": ["plane-guard", "runtime", "install", runtime.mount_path],
        "volumeMounts": [
            {"name": names.RUNTIME_VOLUME, "mountPath": runtime.mount_path},
            # The init container needs no API access: something mounted at the token path keeps
            # the API server from mounting the pod's token into it (and from changing the pod
            # after plane-guard, which would call plane-guard a second time).
            {"name": names.RUNTIME_VOLUME, "mountPath": names.SERVICE_ACCOUNT_TOKEN_PATH, "readOnly": True},
        ],
        "resources": runtime.resources.model_dump(),
        "securityContext": RUNTIME_SECURITY,
    }
    wanted = (
        ("volumes", [volume], "pod:runtime-volume"),
        ("initContainers", [init], "pod:runtime-init-container"),
        ("imagePullSecrets", [{"name": name} for name in runtime.image_pull_secrets], "pod:runtime-pull-secrets"),
    )
    for key, items, change in wanted:
        current = spec.get(key)
        present = {i.get("name") for i in current if isinstance(i, dict)} if isinstance(current, list) else set()
        missing = [item for item in items if item["name"] not in present]
        if not missing:
            continue
        if isinstance(current, list):
            ops.extend({"op": "add", "path": f"/spec/{key}/-", "value": item} for item in missing)
        else:
            ops.append({"op": "add", "path": f"/spec/{key}", "value": missing})
        changes.append(change)


def _settings(
    plan: _ContainerPlan, role: Role, settings: dict[str, tuple[str, str]], wrapped: bool, decided: list[tuple[str, str, str]]
) -> None:
    """The role's variables: left to the wrapper at container start when there is one.

    The webhook cannot see what ``envFrom`` brings, so with the wrapper each value travels under
    a reserved name that says keep or replace, and the container decides (and says so on
    stderr). Without the wrapper the variables are written as they are: ``replace`` wins over
    envFrom, ``keep`` only sees the container's own ``env`` list.
    """
    for variable, (value, mode) in settings.items():
        entry = plan.entries[plan.positions[variable]] if variable in plan.positions else None
        if not wrapped:
            plan.set_env(variable, value, keep=mode == "keep")
            continue
        if mode == "keep" and entry is not None and ("valueFrom" in entry or entry.get("value")):
            plan.reasons.append(f"{plan.name}:kept-env/{variable}")
        prefix = names.ENV_OVERRIDE_PREFIX if mode == "replace" else names.ENV_DEFAULT_PREFIX
        plan.set_env(prefix + variable, value, change=f"{plan.name}:env/{variable}")
        decided.append((plan.name, variable, mode))
    if not wrapped and settings:
        plan.reasons.append(f"{plan.name}:env-decided-at-admission")
    if wrapped and role.publish_timeout_seconds is not None:
        plan.set_env(names.ENV_PUBLISH_TIMEOUT, format_heartbeat(role.publish_timeout_seconds), change=f"{plan.name}:publish-timeout")
    if wrapped and role.pika_confirm_delivery:
        plan.set_env(names.ENV_PIKA_CONFIRM, "1", change=f"{plan.name}:pika-confirms")
    if wrapped and role.startup_steps and role.publish_timeout_seconds is not None:
        steps = json.dumps(role.startup_steps, separators=(",", ":"))
        plan.set_env(names.ENV_STARTUP_STEPS, steps, change=f"{plan.name}:startup-steps")


def _identity(plan: _ContainerPlan, workload: str | None) -> None:
    """Who writes the publish lines: the workload (known at admission) and the pod (named later)."""
    plan.set_env_from_field(names.ENV_POD, "metadata.name", "publish-identity")
    if workload:
        plan.set_env(names.ENV_WORKLOAD, workload, change="")


def _status(
    pod: dict[str, Any], policy: Policy, roles: dict[str, str], changes: list[str], decided: list[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """Record which policy looked at the pod, what it changed and what is left to the start.

    Names only. ``changed`` keeps earlier passes' names (webhook reinvocation); ``atStart``
    maps each container to the variables its wrapper decides (keep or replace).
    """
    metadata = pod.get("metadata")
    annotations = as_map(metadata).get("annotations") if isinstance(metadata, dict) else None
    existing = annotations.get(names.STATUS_ANNOTATION) if isinstance(annotations, dict) else None
    earlier: list[str] = []
    if isinstance(existing, str):
        try:
            recorded = json.loads(existing).get("changed", [])
            earlier = [c for c in recorded if isinstance(c, str)] if isinstance(recorded, list) else []
        except (ValueError, AttributeError):
            earlier = []
    record: dict[str, Any] = {"version": __version__, "policy": policy.digest, "roles": roles, "changed": sorted({*earlier, *changes})}
    at_start: dict[str, dict[str, str]] = {}
    for container, variable, mode in decided:
        at_start.setdefault(container, {})[variable] = mode
    if at_start:
        record["atStart"] = at_start
    status = json.dumps(record, sort_keys=True, separators=(",", ":"))
    if status == existing:
        return []
    if not isinstance(metadata, dict):
        return [{"op": "add", "path": "/metadata", "value": {"annotations": {names.STATUS_ANNOTATION: status}}}]
    if not isinstance(annotations, dict):
        return [{"op": "add", "path": "/metadata/annotations", "value": {names.STATUS_ANNOTATION: status}}]
    return [{"op": "add", "path": f"/metadata/annotations/{escape(names.STATUS_ANNOTATION)}", "value": status}]


def mutate_pod(pod: Any, policy: Policy, workload: str | None = None) -> Outcome:
    """The patch that hardens the Plane containers of ``pod``; an empty patch when none apply.

    ``workload`` names the pod's workload when the pod itself cannot (a Deployment's template in
    the preview); the webhook finds it from the pod's controller reference.
    """
    if not isinstance(pod, dict) or not isinstance(pod.get("spec"), dict):
        return Outcome([], reasons=("not-a-pod",))
    spec = pod["spec"]
    for key in ("volumes", "initContainers"):
        if spec.get(key) is not None and not isinstance(spec.get(key), list):
            return Outcome([], reasons=(f"malformed-spec/{key}",))
    metadata = as_map(pod.get("metadata"))
    labels = as_map(metadata.get("labels"))
    matches, left = [], []  # left: (reason code, reason, note) of every container not changed
    for index, container in enumerate(_containers(pod)):
        match = role_of(container, labels, policy)
        if match is None:
            code, note = unmatched(container, policy)
            left.append((code, f"{container.get('name') if isinstance(container, dict) else index}:{code}", note))
        elif match[1].skip:
            note = f"{container['name']}: role {match[0]}: left unchanged: {match[1].skip}"
            left.append(("skipped-role", f"{container['name']}:skipped-role", note))
        else:
            matches.append((index, container, match))
    if not matches:
        top = "skipped-role" if any(code == "skipped-role" for code, _, _ in left) else "no-role-matched"
        return Outcome([], reasons=(top, *(reason for _, reason, _ in left)), notes=tuple(note for _, _, note in left))
    # Beside Plane containers, other images (sidecars) are expected: only Plane's own are told.
    left = [item for item in left if item[0] != "not-plane-image"]
    reasons, notes = [reason for _, reason, _ in left], [note for _, _, note in left]
    roles = {container["name"]: match[0] for _, container, match in matches}
    if is_opted_out(pod):
        return Outcome([], reasons=("opted-out",))
    rule = policy.workload_rule(labels, workload or workload_name(pod))
    why = _opt_out_reason(rule)
    if why is not None:
        return Outcome([], reasons=("opted-out-by-policy",), notes=(f"left unchanged by the policy: {why}",))

    overrides = _Overrides.read(as_map(metadata.get("annotations")), policy)
    ops: list[dict[str, Any]] = []
    changes: list[str] = []
    decided: list[tuple[str, str, str]] = []
    warnings = list(overrides.warnings)
    needs_runtime = False
    for index, container, (role_name, _) in matches:
        role = policy.role_for(role_name, rule)
        broken = _malformed(container)
        if broken:
            reasons.append(f"{container['name']}:malformed-{broken}")
            continue
        plan = _ContainerPlan(container, index, ops, changes, reasons)
        wrap = role.wrap_entrypoint if overrides.wrap is None else overrides.wrap
        wrapped = _wrap(plan, role, policy) if wrap else False
        if not wrap:
            reasons.append(f"{plan.name}:wrap-disabled")
        needs_runtime = needs_runtime or wrapped
        _settings(plan, role, overrides.settings_for(role), wrapped, decided)
        if wrapped:
            _identity(plan, workload or workload_name(pod))
        heartbeat = role.amqp_heartbeat if overrides.heartbeat is None else overrides.heartbeat
        if heartbeat is not None:
            _amqp(plan, role, policy, heartbeat, wrapped, warnings)
        plan.finish_env()
    if needs_runtime:
        _pod_level(pod, policy, ops, changes)
    ops.extend(_status(pod, policy, roles, changes, decided))
    return Outcome(ops, roles, tuple(changes), tuple(reasons), tuple(warnings), tuple(decided), tuple(notes))
