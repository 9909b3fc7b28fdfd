"""Run pod specs in real containers with podman (``podman kube play``), for end-to-end tests.

podman does the work a kubelet does, for real: it runs the init containers in order and each to
completion (a failing one stops the pod), gives every container its image's entrypoint and
environment, ``command``/``args``, ``env``/``envFrom`` from ConfigMaps and Secrets, the user and
``securityContext`` (``runAsUser``, ``runAsGroup``, ``readOnlyRootFilesystem``, capabilities),
resource limits (cgroups) and fresh ``emptyDir`` volumes in a mount namespace of their own.
podman 4 does not check ``runAsNonRoot``; this module does, before playing, as the kubelet does
(the effective user must be a numeric UID other than 0), and refuses the pod otherwise.

What this module changes in the spec it plays (a copy; the caller's spec is untouched), so that a
spec written for a cluster runs on one machine next to other test runs, and nothing else:

* images are mapped to local ones (``images``) and never pulled (``imagePullPolicy: Never``);
* the pod, its Secrets and its emptyDir volumes get a per-run suffix, because podman keeps them
  machine-wide (podman 4 makes each emptyDir a named volume); the references follow;
* Secrets become podman secrets holding what ``kube play`` reads from them (key -> base64 value);
  ConfigMaps are played with the pod; ``envFrom.prefix``, which podman ignores, is applied to a
  copy of the ConfigMap or Secret (prefixed names, invalid ones left out, as the kubelet does);
* ``hostNetwork: true`` (by default), so the containers reach services on 127.0.0.1;
* ``restartPolicy: Never``, so a crash is seen instead of a restart loop; init containers are
  kept after they ran (podman's ``always`` type), so their logs can be read;
* annotations longer than 63 characters are left out (podman 4 checks annotation values against
  the label limit, which Kubernetes does not); ``dropped_annotations`` lists them.

Not covered (podman 4 does not do them and no test needs them yet): ``$(VAR)`` references in
``env``, ``command`` and ``args`` (podman passes them on as written), probes, Services, fieldRef
values other than podman's.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tools.images import engine_env

PODMAN = "podman"
#: Suffix of every name this module gives podman objects: the owner's PID, then random hex.
_SUFFIX = re.compile(r"-pgt(\d+)-[0-9a-f]{6}$")
_INIT_TYPE_ANNOTATION = "io.podman.annotations.init.container.type"
_PODMAN_ANNOTATION_LIMIT = 63
#: The kubelet's rule for variable names that come from envFrom.
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class PodError(RuntimeError):
    """The pod did not start or a container did not reach the state asked for; carries the logs."""


def podman(*args: str, timeout: float = 60.0, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """One podman command with the project's containers.conf; bounded, and its error in the exception."""
    try:
        done = subprocess.run(
            [PODMAN, *args], capture_output=True, text=True, timeout=timeout, env=engine_env(), input=input
        )
    except subprocess.TimeoutExpired:
        raise PodError(f"podman {' '.join(args[:2])} did not finish within {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise PodError(f"podman {' '.join(args[:3])} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something true; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def remove_stale() -> None:
    """Remove pods, secrets and volumes left by earlier runs whose process is gone (a killed test run)."""

    def stale(name: str) -> bool:
        match = _SUFFIX.search(name)
        return bool(match) and not os.path.exists(f"/proc/{match.group(1)}")

    for kind, listing in (("pod", ["pod", "ps", "--format", "{{.Name}}"]),
                          ("secret", ["secret", "ls", "--format", "{{.Name}}"]),
                          ("volume", ["volume", "ls", "--format", "{{.Name}}"])):
        for name in podman(*listing, check=False).stdout.split():
            if stale(name):
                podman(kind, "rm", "-f", name, check=False, timeout=120)


def _secret_payload(secret: Mapping[str, Any], prefix: str = "") -> str:
    """What ``kube play`` reads from a podman secret named in ``secretRef``/``secretKeyRef``."""
    data = dict(secret.get("data") or {})
    for key, value in (secret.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    return json.dumps(_prefixed(data, prefix))


def _prefixed(data: Mapping[str, str], prefix: str) -> dict[str, str]:
    """``envFrom.prefix`` as the kubelet applies it: prefixed names, invalid ones left out."""
    return {prefix + key: value for key, value in data.items() if _ENV_NAME.match(prefix + key)}


def _token(prefix: str) -> str:
    """A name-safe token for an envFrom prefix."""
    return "p" + hashlib.sha256(prefix.encode()).hexdigest()[:6]


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


class Pod:
    """A pod played by podman: ``start()``, then logs, exec, files; ``remove()`` (or ``with``) ends it."""

    def __init__(
        self,
        pod: Mapping[str, Any],
        objects: Iterable[Mapping[str, Any]] = (),
        images: Mapping[str, str] | None = None,
        host_network: bool = True,
    ):
        self.spec = copy.deepcopy(dict(pod))
        self.objects = [copy.deepcopy(dict(o)) for o in objects]
        self.images = dict(images or {})
        self.host_network = host_network
        self.suffix = f"-pgt{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.name = (self.spec.get("metadata") or {}).get("name", "pod") + self.suffix
        #: podman secret name -> (Secret name, envFrom prefix)
        self.secrets: dict[str, tuple[str, str]] = {}
        self.volumes: list[str] = []
        self.played: dict[str, Any] = {}
        self.dropped_annotations: dict[str, str] = {}
        self._started = False

    # -- the spec podman plays ------------------------------------------------------------------
    def _playable(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        pod = copy.deepcopy(self.spec)
        metadata = pod.setdefault("metadata", {})
        metadata["name"] = self.name
        annotations = metadata.setdefault("annotations", {})
        for key, value in list(annotations.items()):
            if len(str(value)) > _PODMAN_ANNOTATION_LIMIT:
                self.dropped_annotations[key] = annotations.pop(key)
        annotations[_INIT_TYPE_ANNOTATION] = "always"
        spec = pod["spec"]
        spec["restartPolicy"] = "Never"
        if self.host_network:
            spec["hostNetwork"] = True
        renamed_volumes = {}
        for volume in spec.get("volumes") or []:
            if "emptyDir" in volume:
                renamed_volumes[volume["name"]] = volume["name"] = volume["name"] + self.suffix
                self.volumes.append(volume["name"])
        for container in _containers(spec):
            container["image"] = self.images.get(container.get("image", ""), container.get("image", ""))
            container["imagePullPolicy"] = "Never"
            for mount in container.get("volumeMounts") or []:
                mount["name"] = renamed_volumes.get(mount["name"], mount["name"])
            for source in container.get("envFrom") or []:
                prefix = source.pop("prefix", "")
                if "secretRef" in source:
                    source["secretRef"]["name"] = self._secret(source["secretRef"]["name"], prefix)
                elif "configMapRef" in source and prefix:
                    source["configMapRef"]["name"] = self._prefixed_config_map(source["configMapRef"]["name"], prefix)
            for variable in container.get("env") or []:
                reference = (variable.get("valueFrom") or {}).get("secretKeyRef")
                if reference:
                    reference["name"] = self._secret(reference["name"])
        return pod, [o for o in self.objects if o.get("kind") == "ConfigMap"]

    def _secret(self, name: str, prefix: str = "") -> str:
        podman_name = f"{name}-{_token(prefix)}{self.suffix}" if prefix else name + self.suffix
        self.secrets[podman_name] = (name, prefix)
        return podman_name

    def _prefixed_config_map(self, name: str, prefix: str) -> str:
        """podman ignores ``envFrom.prefix``: play a copy of the ConfigMap with the prefixed names."""
        derived = f"{name}-{_token(prefix)}"
        source = next((o for o in self.objects if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == name), None)
        if source is not None and not any(o["metadata"]["name"] == derived for o in self.objects):
            copy_ = copy.deepcopy(source)
            copy_["metadata"]["name"] = derived
            copy_["data"] = _prefixed(source.get("data") or {}, prefix)
            self.objects.append(copy_)
        return derived

    def _check_run_as_non_root(self, pod: dict[str, Any]) -> None:
        """The kubelet's runAsNonRoot check, which podman 4 skips: PodError when a container would run as root."""
        pod_context = pod["spec"].get("securityContext") or {}
        for container in _containers(pod["spec"]):
            context = {**pod_context, **(container.get("securityContext") or {})}
            if not context.get("runAsNonRoot"):
                continue
            user = context.get("runAsUser")
            if user is None:
                image_user = podman("image", "inspect", "--format", "{{.Config.User}}", container["image"]).stdout.strip()
                user = image_user.split(":")[0] or "0"
            if not str(user).isdigit() or int(user) == 0:
                raise PodError(f"container {container['name']} has runAsNonRoot and would run as user {user!r} "
                               "(the kubelet refuses it: give the image a numeric non-root USER or set runAsUser)")

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> Pod:
        """Play the pod: init containers run to completion, then the app containers are started."""
        pod, config_maps = self._playable()
        self._check_run_as_non_root(pod)
        self.played = pod
        self._started = True
        try:
            by_name = {o["metadata"]["name"]: o for o in self.objects if o.get("kind") == "Secret"}
            for podman_name, (name, prefix) in self.secrets.items():
                if name in by_name:
                    podman("secret", "create", podman_name, "-", input=_secret_payload(by_name[name], prefix))
            with tempfile.TemporaryDirectory(prefix="plane-guard-pod-") as scratch:
                path = Path(scratch) / "pod.yaml"
                path.write_text(yaml.safe_dump_all([*config_maps, pod], sort_keys=False))
                done = podman("kube", "play", "--quiet", str(path), timeout=timeout, check=False)
            if done.returncode != 0:
                raise PodError(f"podman kube play {self.name} exited {done.returncode}: "
                               f"{done.stderr.strip()[-2000:]}\n{self.describe()}")
        except BaseException:
            self.remove()
            raise
        return self

    def __enter__(self) -> Pod:
        return self if self._started else self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def stop(self, grace: float = 10.0) -> dict[str, int]:
        """SIGTERM to every container, SIGKILL after ``grace``; their exit codes by container name."""
        podman("pod", "stop", "--time", str(int(grace)), self.name, timeout=grace + 60, check=False)
        return {name: self.exit_code(name) for name in self.container_names()}

    def remove(self, grace: int = 2) -> None:
        """Remove the pod (SIGKILL after ``grace`` s), its volumes and secrets; safe to call more than once."""
        if not self._started:
            return
        podman("pod", "rm", "--force", "--time", str(grace), self.name, timeout=120, check=False)
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, timeout=60, check=False)
        for secret in self.secrets:
            podman("secret", "rm", secret, timeout=60, check=False)
        self._started = False

    # -- containers ----------------------------------------------------------------------------
    def container_names(self, init: bool = True) -> list[str]:
        spec = self.spec["spec"]
        names = [c["name"] for c in (spec.get("initContainers") or [])] if init else []
        return names + [c["name"] for c in spec["containers"]]

    def container(self, name: str) -> str:
        """podman's name for a container of this pod."""
        return f"{self.name}-{name}"

    def state(self, name: str) -> dict[str, Any]:
        done = podman("container", "inspect", "--format", "{{json .State}}", self.container(name), check=False)
        return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() else {}

    def exit_code(self, name: str) -> int | None:
        state = self.state(name)
        return None if not state or state.get("Running") else state.get("ExitCode")

    def wait_running(self, name: str, timeout: float = 60.0) -> None:
        try:
            wait_for(lambda: self.state(name).get("Running") or self.exit_code(name) is not None,
                     timeout, interval=0.2, what=f"{name} running")
        except TimeoutError as exc:
            raise PodError(f"{exc}\n{self.describe()}") from None
        if not self.state(name).get("Running"):
            raise PodError(f"{name} exited {self.exit_code(name)} instead of running\n{self.describe()}")

    def wait_exited(self, name: str, timeout: float = 60.0) -> int:
        try:
            return wait_for(lambda: (code := self.exit_code(name)) is not None and (code,),
                            timeout, interval=0.2, what=f"{name} exited")[0]
        except TimeoutError as exc:
            raise PodError(f"{exc}\n{self.describe()}") from None

    def logs(self, name: str) -> str:
        done = podman("logs", self.container(name), check=False, timeout=60)
        return (done.stdout + done.stderr).replace("\r\n", "\n")

    def exec(self, name: str, argv: list[str], timeout: float = 60.0, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the running container (with the container's environment)."""
        options = ["--user", user] if user else []
        return podman("exec", *options, self.container(name), *argv, timeout=timeout, check=False)

    def read_file(self, name: str, path: str) -> str:
        """A file as the container sees it (its volumes included), read without running anything in it."""
        try:
            done = subprocess.run([PODMAN, "cp", f"{self.container(name)}:{path}", "-"], capture_output=True,
                                  timeout=60, env=engine_env())
        except subprocess.TimeoutExpired:
            raise PodError(f"podman cp of {path} from {name} did not finish within 60 s") from None
        if done.returncode != 0:
            raise PodError(f"cannot read {path} in {name}: {done.stderr.decode(errors='replace').strip()}")
        with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
            member = archive.next()
            handle = archive.extractfile(member) if member is not None else None
            if handle is None:
                raise PodError(f"{path} in {name} is not a regular file")
            return handle.read().decode(errors="replace")

    def host_pid(self, name: str) -> int:
        """The host's PID of the container's PID 1 (for ss, /proc and signals from the host)."""
        pid = self.state(name).get("Pid")
        if not pid:
            raise PodError(f"{name} is not running\n{self.describe()}")
        return int(pid)

    def host_pids(self, name: str) -> dict[int, int]:
        """Every process of the container: its PID inside the container -> its PID on the host."""
        rows = podman("top", self.container(name), "pid", "hpid").stdout.splitlines()[1:]
        return {int(inside): int(host) for inside, host in (row.split()[:2] for row in rows if row.strip())}

    def pid1(self, name: str) -> list[str]:
        """The command line of the container's PID 1 (read from the host's /proc)."""
        return [part for part in Path(f"/proc/{self.host_pid(name)}/cmdline").read_text().split("\0") if part]

    def describe(self) -> str:
        """Every container's state and the end of its log, for failure messages."""
        lines = []
        for name in self.container_names():
            state = self.state(name)
            status = state.get("Status", "missing") if state else "missing"
            lines.append(f"--- {name}: {status} exit={state.get('ExitCode') if state else None}")
            lines.append(self.logs(name)[-3000:] if state else "")
        return "\n".join(lines)
