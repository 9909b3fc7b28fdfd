"""Start the containers of a pod spec on this machine the way kubelet would, for end-to-end tests.

What is reproduced, because plane-guard's runtime depends on it:

* the environment: ``envFrom`` (ConfigMaps and Secrets, ``prefix``, ``optional``, later sources
  win), then ``env`` in order (``value`` with ``$(VAR)`` expansion against the variables defined
  so far, ``$$`` escaping, unresolved references left literal; ``valueFrom`` with
  ``secretKeyRef`` / ``configMapKeyRef`` / ``fieldRef``), on top of the image's environment;
* the process: ``command`` replaces the image ENTRYPOINT, ``args`` replace its CMD, both expanded
  against the final environment; ``workingDir`` or the image's; the user from
  ``securityContext`` (``runAsUser``/``runAsGroup``/``runAsNonRoot``) or the image;
* the user is checked (``runAsNonRoot`` against the resulting UID) and switched to, unless
  ``switch_user=False`` (when the local interpreter cannot be run by other users);
* init containers run first, in order, each to completion; a failure stops the pod;
* ``emptyDir`` volumes are fresh, world-writable directories at their ``mountPath``. There is no
  mount namespace here, so each emptyDir must be mounted at one path in every container; use a
  temporary directory as that path.

Not reproduced: images (an ``Image`` entry maps an image reference to local programs), other
volume types, service account tokens, service-link variables, probes, restarts, resource limits.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from webhook.conventions import SERVICE_ACCOUNT_TOKEN_PATH

#: What containerd and Docker set when the image defines no PATH.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: kubelet's check for names coming from ``envFrom`` (validation.IsEnvVarName).
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ContainerConfigError(RuntimeError):
    """What kubelet reports as CreateContainerConfigError: the container is never started."""


@dataclass(frozen=True)
class Image:
    """The parts of an OCI image config that decide how a container starts."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str = "/"
    env: Mapping[str, str] = field(default_factory=dict)
    user: int = 0
    group: int = 0


# --------------------------------------------------------------------------------------------
# $(VAR) expansion: third_party/forked/golang/expansion in Kubernetes


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """Expand ``$(NAME)`` in ``text``; ``$$`` is a literal ``$``; unknown names stay as written."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                closer = text.find(")", cursor + 2)
                if closer == -1:
                    out.append("$(")
                    advance = 1
                else:
                    name = text[cursor + 2 : closer]
                    value = lookup(name)
                    out.append(f"$({name})" if value is None else value)
                    advance = closer - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


# --------------------------------------------------------------------------------------------
# Environment


def _objects(items: list[dict[str, Any]] | None, kind: str) -> dict[str, dict[str, str]]:
    """ConfigMaps or Secrets by name, as the string data a container sees."""
    found: dict[str, dict[str, str]] = {}
    for item in items or []:
        if item.get("kind", kind) != kind:
            continue
        name = item["metadata"]["name"]
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (item.get("data") or {}).items()}
            data.update({k: str(v) for k, v in (item.get("stringData") or {}).items()})
        else:
            data = {k: str(v) for k, v in (item.get("data") or {}).items()}
        found[name] = data
    return found


def _field_ref(pod: dict[str, Any], path: str) -> str:
    metadata = pod.get("metadata") or {}
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", "default"),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": "localhost",
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName", "default"),
        "status.podIP": "127.0.0.1",
        "status.hostIP": "127.0.0.1",
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ContainerConfigError(f"fieldRef {path!r} is not supported by this test kubelet")


def container_env(
    pod: dict[str, Any],
    container: dict[str, Any],
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """The variables kubelet gives the container (without the image's own environment)."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}

    def source(kind: str, name: str, optional: bool) -> Mapping[str, str] | None:
        objects = secrets if kind == "Secret" else config_maps
        if name in objects:
            return objects[name]
        if optional:
            return None
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found in namespace {namespace}')

    for entry in container.get("envFrom") or []:
        prefix = entry.get("prefix", "")
        if "configMapRef" in entry:
            ref, kind = entry["configMapRef"], "ConfigMap"
        elif "secretRef" in entry:
            ref, kind = entry["secretRef"], "Secret"
        else:
            raise ContainerConfigError(f"envFrom entry {entry!r} has no configMapRef or secretRef")
        data = source(kind, ref["name"], bool(ref.get("optional")))
        for key, value in (data or {}).items():
            name = prefix + key
            if _ENV_NAME.match(name):
                env[name] = value

    for entry in container.get("env") or []:
        name = entry["name"]
        value = entry.get("value", "")
        if value:
            value = expand(value, env.get)
        elif "valueFrom" in entry:
            value_from = entry["valueFrom"]
            if "fieldRef" in value_from:
                value = _field_ref(pod, value_from["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
                kind = "Secret" if "secretKeyRef" in value_from else "ConfigMap"
                ref = value_from["secretKeyRef" if kind == "Secret" else "configMapKeyRef"]
                optional = bool(ref.get("optional"))
                data = source(kind, ref["name"], optional)
                if data is None:
                    continue
                if ref["key"] not in data:
                    if optional:
                        continue
                    raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
                value = data[ref["key"]]
            else:
                raise ContainerConfigError(f"valueFrom of {name} is not supported by this test kubelet")
        env[name] = value
    return env


def container_argv(container: dict[str, Any], image: Image, env: Mapping[str, str]) -> list[str]:
    """ENTRYPOINT/CMD as the runtime combines them with the pod spec, ``$(VAR)`` expanded."""
    command = [expand(part, env.get) for part in container.get("command") or []]
    args = [expand(part, env.get) for part in container.get("args") or []]
    if command:
        return [*command, *args]
    return [*image.entrypoint, *(args or image.cmd)]


# --------------------------------------------------------------------------------------------
# Processes


@dataclass
class Container:
    """A started container: its main process and log files."""

    name: str
    process: subprocess.Popen
    stdout: Path
    stderr: Path
    argv: list[str]
    env: dict[str, str]
    cwd: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to the main process, SIGKILL after ``grace``; then nothing of it is left running."""
        if self.process.poll() is None:
            try:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        return self.process.returncode


class Pod:
    """A pod on this machine: ``run_init_containers()`` then ``start(name)``; ``stop()`` ends it."""

    def __init__(
        self,
        pod: dict[str, Any],
        images: Mapping[str, Image],
        objects: list[dict[str, Any]] = (),
        log_dir: str | os.PathLike[str] | None = None,
        switch_user: bool = True,
    ):
        self.spec = pod
        self.images = images
        self.config_maps = _objects(list(objects), "ConfigMap")
        self.secrets = _objects(list(objects), "Secret")
        self.name = (pod.get("metadata") or {}).get("name", "pod")
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix=f"kubelet-{self.name}-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.switch_user = switch_user
        self.containers: list[Container] = []
        self._prepare_volumes()

    def __enter__(self) -> "Pod":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- volumes ---------------------------------------------------------------------------
    def _prepare_volumes(self) -> None:
        spec = self.spec["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        paths: dict[str, str] = {}
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            for mount in container.get("volumeMounts") or []:
                if mount["mountPath"].rstrip("/") == SERVICE_ACCOUNT_TOKEN_PATH:
                    continue  # service account tokens are not reproduced: nothing is mounted there
                volume = volumes.get(mount["name"])
                if volume is None:
                    raise ContainerConfigError(f"container {container['name']} mounts unknown volume {mount['name']}")
                if "emptyDir" not in volume:
                    raise ContainerConfigError(f"volume {mount['name']}: only emptyDir is supported by this test kubelet")
                path = mount["mountPath"].rstrip("/")
                if paths.setdefault(mount["name"], path) != path:
                    raise ContainerConfigError(
                        f"volume {mount['name']} is mounted at {paths[mount['name']]} and {path}; "
                        "this test kubelet has no mount namespaces, so use one path"
                    )
        for name, path in paths.items():
            directory = Path(path)
            if directory.exists() and any(directory.iterdir()):
                raise ContainerConfigError(f"emptyDir {name} at {path} is not empty; give each pod a fresh directory")
            directory.mkdir(parents=True, exist_ok=True)
            os.chmod(directory, 0o777)

    # -- containers ------------------------------------------------------------------------
    def _image(self, container: dict[str, Any]) -> Image:
        reference = container.get("image", "")
        for prefix, image in self.images.items():
            if reference == prefix or reference.startswith(prefix):
                return image
        raise ContainerConfigError(f"no local Image for {reference!r}; add one to the images mapping")

    def _user(self, container: dict[str, Any], image: Image) -> tuple[int, int]:
        pod_context = self.spec["spec"].get("securityContext") or {}
        context = container.get("securityContext") or {}

        def pick(key: str) -> Any:
            return context.get(key, pod_context.get(key))

        uid = pick("runAsUser")
        uid = image.user if uid is None else int(uid)
        gid = pick("runAsGroup")
        gid = (image.group if pick("runAsUser") is None else 0) if gid is None else int(gid)
        if pick("runAsNonRoot") and uid == 0:
            raise ContainerConfigError(f"container {container['name']} has runAsNonRoot and image will run as root")
        return uid, gid

    def _launch(self, container: dict[str, Any]) -> Container:
        image = self._image(container)
        variables = container_env(self.spec, container, self.config_maps, self.secrets)
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.name, **image.env, **variables}
        argv = container_argv(container, image, env)
        if not argv:
            raise ContainerConfigError(f"container {container['name']}: no command specified")
        cwd = container.get("workingDir") or image.workdir
        uid, gid = self._user(container, image)
        name = container["name"]
        stdout = self.log_dir / f"{name}.stdout"
        stderr = self.log_dir / f"{name}.stderr"
        with open(stdout, "wb") as out, open(stderr, "wb") as err:
            switch = self.switch_user and uid != os.geteuid()
            identity = {"user": uid, "group": gid, "extra_groups": []} if switch else {}
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                **identity,
            )
        started = Container(name, process, stdout, stderr, argv, env, cwd)
        self.containers.append(started)
        return started

    def run_init_containers(self, timeout: float = 60.0) -> list[Container]:
        """Each init container in order, to completion; a non-zero exit fails the pod."""
        done = []
        for spec in self.spec["spec"].get("initContainers") or []:
            container = self._launch(spec)
            try:
                container.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                container.stop(grace=1)
                raise RuntimeError(f"init container {spec['name']} did not finish in {timeout}s:\n{container.logs()}") from None
            if container.process.returncode != 0:
                raise RuntimeError(f"init container {spec['name']} exited {container.process.returncode}:\n{container.logs()}")
            done.append(container)
        return done

    def start(self, name: str | None = None) -> Container:
        """Start one app container (the first one when ``name`` is None)."""
        for spec in self.spec["spec"]["containers"]:
            if name is None or spec["name"] == name:
                return self._launch(spec)
        raise KeyError(f"pod {self.name} has no container {name}")

    def stop(self, grace: float = 10.0) -> None:
        for container in reversed(self.containers):
            container.stop(grace)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(interval)
