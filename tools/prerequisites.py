"""The system tools the tests use for real, installed when missing, and why a test skips when one is.

``make test`` runs ``python -m tools.prerequisites`` first. As root on a machine with apt-get,
every missing tool is installed and RabbitMQ is started; otherwise the missing tools are listed,
and the tests that need them skip with a reason naming the tool (``tests/conftest.py`` asks
:func:`skip_reason` for each test marker).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass

BROKER = ("127.0.0.1", 5672)


def find(command: str) -> str | None:
    """``command`` on PATH, else in ``KUBEBUILDER_ASSETS`` (the envtest kit ships kubectl there)."""
    found = shutil.which(command)
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if found is None and assets:
        found = shutil.which(command, path=assets)
    return found


@dataclass(frozen=True)
class Tool:
    """A program on PATH (any one of ``commands``), the Debian package that provides it, who needs it."""

    commands: tuple[str, ...]
    package: str | None
    markers: tuple[str, ...]
    purpose: str

    @property
    def present(self) -> bool:
        return any(find(command) for command in self.commands)

    @property
    def name(self) -> str:
        return " or ".join(self.commands)


TOOLS = (
    Tool(("rabbitmq-server",), "rabbitmq-server", ("broker",), "the broker on 127.0.0.1:5672 and rabbitmqctl"),
    Tool(("nft",), "nftables", ("root",), "the black-holed connection scenario"),
    Tool(("ss",), "iproute2", ("root",), "finding a process's broker connections"),
    Tool(("busybox",), "busybox", (), "running the wrapper under busybox sh"),
    Tool(("podman",), "podman", ("containers",), "building the images and playing pods"),
    Tool(("runc",), "runc", ("containers",), "podman's container runtime"),
    # podman builds its pods' pause image from catatonit locally, instead of pulling one.
    Tool(("catatonit",), "catatonit", ("containers",), "the pods' infra process, without a registry"),
    Tool(("mmdebstrap",), "mmdebstrap", ("containers",), "the offline Debian base image"),
    # Debian's kubernetes-client is too old for the manifests; `make test` puts the envtest kit's
    # kubectl in KUBEBUILDER_ASSETS, elsewhere install kubectl 1.27+ yourself.
    Tool(("kubectl", "kustomize"), None, ("manifests",), "building manifests/ (kubectl 1.27+ embeds kustomize)"),
)

#: Markers whose tests also need root (rabbitmqctl, nft and rootful podman do).
NEEDS_ROOT = frozenset({"broker", "root", "containers"})


def is_root() -> bool:
    return os.geteuid() == 0


def broker_answers(timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection(BROKER, timeout=timeout):
            return True
    except OSError:
        return False


def missing(marker: str | None = None) -> list[Tool]:
    return [t for t in TOOLS if not t.present and (marker is None or marker in t.markers)]


def skip_reason(marker: str) -> str | None:
    """Why the tests with ``marker`` cannot run here, or None when they can."""
    absent = missing(marker)
    if absent:
        names = ", ".join(f"{t.name} ({t.purpose})" for t in absent)
        return f"missing {names}: run `make test` as root to install it, or install it yourself"
    if marker in NEEDS_ROOT and not is_root():
        return f"tests marked {marker!r} need root (rabbitmqctl, nft, rootful podman)"
    if marker == "broker" and not broker_answers():
        return f"RabbitMQ does not answer on {BROKER[0]}:{BROKER[1]}: start it (rabbitmq-server -detached)"
    return None


def _say(message: str) -> None:
    print(f"prerequisites: {message}", flush=True)


def install(tools: list[Tool]) -> None:
    packages = sorted({t.package for t in tools if t.package})
    if not packages:
        return
    _say(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
        if done.returncode != 0:
            _say(f"`{' '.join(argv[:2])}` failed ({done.stderr.strip()[-300:]}); the tests that need these skip")
            return


def start_broker() -> None:
    """Start the local RabbitMQ unless it already answers; wait (bounded) until it is up."""
    if broker_answers() or not shutil.which("rabbitmqctl") or not is_root():
        return
    _say("starting RabbitMQ (rabbitmq-server -detached)")
    subprocess.run(["rabbitmq-server", "-detached"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    done = subprocess.run(["rabbitmqctl", "-q", "await_startup", "--timeout", "120"], capture_output=True, text=True, timeout=150)
    if done.returncode != 0:
        _say(f"RabbitMQ did not start: {done.stderr.strip()[-300:]}")


def main() -> int:
    if is_root() and shutil.which("apt-get"):
        install(missing())
    start_broker()
    for tool in missing():
        hint = f"apt-get install {tool.package}" if tool.package else "install it"
        _say(f"{tool.name} is missing ({tool.purpose}); {hint}. The tests that need it skip.")
    if not is_root():
        _say("not root: the broker, nftables and container tests skip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
