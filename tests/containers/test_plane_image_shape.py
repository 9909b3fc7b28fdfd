"""Plane's pods on an image shaped like Plane's own (``python:3.12.10-alpine``): CPython built
against musl, busybox as ``/bin/sh`` and every core utility, bash for the entrypoints, no glibc
(``musl-python.Dockerfile``, then the usual test app with musllinux wheels). README, "Plane's
image shape", says how it is made offline and where it differs from Plane's.

The mutated api and worker pods of ``plane-pods.yaml`` (one plane-ce, one plane-enterprise) are
played on it against the local RabbitMQ, one vhost each: the wrapper runs under busybox ``sh``,
``environment.py``'s exports reach the application, the start-up hook configures Celery (the
broker shows confirm channels and heartbeat 60), PID 1 is the supervisor, and a pod stop with
SIGTERM ends the application with exit 0 long before the grace period, the worker included,
which its entrypoint starts without exec.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.containers import images as test_images
from tests.containers.plane import Played, channels, play, program_process, stop
from tests.pods import podman, wait_for
from tests.proof.broker import PASSWORD, RABBITMQCTL, broker_ports_of

pytestmark = [pytest.mark.containers, pytest.mark.broker]

#: One api and one worker, across both charts and both init images (full for -ce, runtime for -ee).
CASES = ["ce-plane-api", "ee-plane-worker"]
HEARTBEAT = 60
HOOK_LINE = "plane-guard: Celery app 'plane': applied"
#: The pod stop's grace period, and how much of it the application may use to exit.
GRACE = 30
QUICK = 10
STEPS = {
    "api": ["entrypoint-start", "wait_for_db", "wait_for_migrations", "register_instance",
            "register_instance-published", "configure_instance", "exec gunicorn"],
    "worker": ["worker-entrypoint", "wait_for_db", "wait_for_migrations"],
}
#: Commands the entrypoints, the chart's scripts and these tests use: each must be busybox.
BUSYBOX_COMMANDS = ["sh", "cat", "awk", "sha256sum", "hostname", "ls", "stat", "env", "sed", "grep",
                    "readlink", "sleep", "touch", "id", "head", "tr", "kill", "ps"]
#: In-image probe: where commands resolve, every program in the bin folders, the ELF loaders of
#: python3 and bash, any glibc library, and what CPython says of itself.
PROBE = """
import json, os, shutil, subprocess, sys
busybox = os.path.realpath("/bin/busybox")
def interp(path):
    with open(os.path.realpath(path), "rb") as handle:
        head = handle.read(4096)
    start = head.find(b"/lib/ld-")
    return head[start:head.index(b"\\0", start)].decode() if start >= 0 else None
others = sorted(
    os.path.join(folder, name)
    for folder in ("/bin", "/sbin", "/usr/bin", "/usr/sbin") for name in os.listdir(folder)
    if os.path.realpath(os.path.join(folder, name)) != busybox
)
glibc = [os.path.join(root, name) for top in ("/lib", "/usr", "/opt", "/bin") for root, _, names in os.walk(top)
         for name in names if name.startswith(("libc.so.6", "ld-linux"))]
print(json.dumps({
    "resolved": {name: os.path.realpath(shutil.which(name) or "missing") for name in sys.argv[1:]},
    "busybox": busybox,
    "not_busybox": others,
    "loaders": {path: interp(path) for path in ("/usr/local/bin/python3", "/opt/venv/bin/python3", "/bin/bash")},
    "glibc": glibc,
    "multiarch": sys.implementation._multiarch,
    "bash": subprocess.run(["bash", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
}))
"""


@pytest.fixture(scope="module")
def shaped(images) -> test_images.Images:
    """The test images with the app image replaced by its musl twin."""
    return dataclasses.replace(images, app=test_images.musl_app())


@pytest.fixture(scope="module", params=CASES)
def played(request, shaped):
    running = play(request.param, shaped)
    yield running
    stop(running)


def _connection_pids(played: Played) -> dict[str, int]:
    """The broker's connections in the pod's vhost: connection pid (as list_channels names it) -> client port."""
    out = subprocess.run([RABBITMQCTL, "-q", "--no-table-headers", "list_connections", "vhost", "pid", "peer_port"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    return {r[1]: int(r[2]) for r in rows if len(r) == 3 and r[0] == played.vhost.name}


def _broker_alarms() -> str:
    return subprocess.run(["rabbitmq-diagnostics", "-q", "alarms"], capture_output=True, text=True, timeout=60).stdout


#: A broker-wide memory alarm (set by another test run on a shared broker) holds publishes back
#: until it clears, and the guarded publish gives up after its bound: so each is tried up to 3 times.
ATTEMPTS = 3


def _publish(played: Played) -> None:
    """The API publishes a task on request."""
    for _ in range(ATTEMPTS):
        (answer,) = played.get("/publish?marker=musl-shape")
        if "task_id" in answer:
            return
    raise AssertionError(f"the API did not publish: {answer}; broker alarms: {_broker_alarms()}")


def _ping(played: Played) -> None:
    """The worker answers a ping over the broker: a publish from its own connection."""
    node = re.search(r"(celery@\S+) ready\.", played.logs()).group(1)
    command = ["celery", "-A", "plane", "inspect", "ping", "--destination", node, "--timeout", "15"]
    for _ in range(ATTEMPTS):
        done = played.pod.exec(played.container, command, timeout=90)
        if done.returncode == 0:
            return
    raise AssertionError(f"celery inspect ping exited {done.returncode}: {done.stderr.strip()[-200:]}; "
                         f"broker alarms: {_broker_alarms()}")


def test_the_image_has_alpines_shape(shaped):
    """musl's loader runs python3 and bash, no glibc library is in the image, busybox is /bin/sh and
    every program in the bin folders but bash, and bash is GNU bash."""
    done = podman("run", "--rm", "--network", "none", shaped.app, "python3", "-c", PROBE, *BUSYBOX_COMMANDS,
                  timeout=120)
    seen = json.loads(done.stdout)
    assert seen["resolved"] == {name: seen["busybox"] for name in BUSYBOX_COMMANDS}, seen["resolved"]
    assert seen["not_busybox"] == ["/bin/bash"], seen["not_busybox"]
    assert set(seen["loaders"].values()) == {f"/lib/ld-musl-{seen['multiarch'].split('-')[0]}.so.1"}, seen["loaders"]
    assert seen["multiarch"].endswith("-linux-musl"), seen["multiarch"]
    assert seen["glibc"] == [], seen["glibc"]
    assert seen["bash"].startswith("GNU bash"), seen["bash"]


def test_the_wrapper_ran_under_busybox_sh_and_pid_1_is_the_supervisor(played):
    container = played.spec["spec"]["containers"][0]
    assert container["command"][:2] == ["/bin/sh", "/plane-guard/entrypoint.sh"], container["command"]
    sh = played.pod.exec(played.container, ["readlink", "-f", "/bin/sh"]).stdout.strip()
    assert sh.endswith("/busybox"), sh
    pid1 = played.pod.pid1(played.container)
    assert pid1[1:4] == ["-I", "-S", "/plane-guard/supervisor.py"], pid1
    # The application runs below the supervisor, not in place of it; both on musl, not glibc.
    program = program_process(played)[0]
    assert program != played.pod.host_pid(played.container)
    for pid in (program, played.pod.host_pid(played.container)):
        mapped = Path(f"/proc/{pid}/maps").read_text()
        assert "/lib/ld-musl-" in mapped and "libc.so.6" not in mapped, pid


def test_environment_py_decided_and_busybox_sh_exported(played):
    """environment.py's messages are in the log, and what it exported is in the application's
    environment: the policy's settings and the heartbeat merged into the URL (never printed)."""
    messages = [line for line in played.logs().splitlines() if line.startswith("plane-guard: ") and ": set to " in line]
    assert messages, played.logs()[-2000:]
    raw = Path(f"/proc/{program_process(played)[0]}/environ").read_bytes().split(b"\0")
    environ = dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)
    for line in messages:
        name = line.split(": ", 2)[1]
        assert environ.get(name), f"{name} was decided but is not in the application's environment"
    assert re.search(rf"[?&]heartbeat={HEARTBEAT}(&|$)", environ["AMQP_URL"]), "no heartbeat in AMQP_URL"
    assert environ["PYTHONPATH"].split(":")[0] == "/plane-guard/python"


def test_every_step_of_the_entrypoint_ran_and_the_images_hook_too(played):
    lines = played.markers()
    position = 0
    for step in STEPS[played.role]:
        found = next((i for i in range(position, len(lines)) if lines[i].startswith(step)), None)
        assert found is not None, (step, lines)
        position = found + 1
    assert any(line.startswith("image-sitecustomize") for line in lines), lines


def test_the_hook_applied_and_the_broker_shows_confirms_and_heartbeat(played):
    if played.role == "api":
        _publish(played)
    else:
        _ping(played)
    logs = wait_for(lambda: HOOK_LINE in (text := played.logs()) and text, timeout=30, what="hook line")
    assert "CELERY_CONFIRM_PUBLISH" in logs.split(HOOK_LINE, 1)[1].splitlines()[0]

    # The broker's view of the application's own connections: the api pod's are all its own
    # (gunicorn's worker, a child of the master, publishes); the worker's are those of its main
    # process, not the ping's client.
    ports = None if played.role == "api" else set(broker_ports_of(program_process(played)[0]))

    def own_channels() -> list[dict]:
        pids = {pid for pid, port in _connection_pids(played).items() if ports is None or port in ports}
        found = [c for c in channels(played.vhost) if c["connection"] in pids]
        return found if any(c["confirm"] for c in found) else []

    try:
        found = wait_for(own_channels, timeout=30, interval=0.5, what=f"{played.case} confirm channels")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: {channels(played.vhost)}") from None
    if played.role == "api":
        assert all(c["confirm"] for c in found), found
    connections = [c for c in played.vhost.connections() if ports is None or c.peer_port in ports]
    assert connections and [c.timeout for c in connections] == [HEARTBEAT] * len(connections), connections


def test_no_log_holds_the_broker_password(played):
    for name in played.pod.container_names():
        assert f":{PASSWORD}@" not in played.pod.logs(name), name


def test_sigterm_stops_the_application_with_exit_0_long_before_the_grace_period(played):
    """Last for each pod: `podman pod stop` sends SIGTERM; busybox sh exec'd the supervisor, which
    forwards it to gunicorn or to the celery worker that bash started without exec."""
    started = time.monotonic()
    codes = played.pod.stop(grace=GRACE)
    elapsed = time.monotonic() - started
    logs = played.logs()
    assert codes[played.container] == 0, (codes, logs[-2000:])
    assert elapsed < QUICK, f"stop took {elapsed:.1f} s of the {GRACE} s grace period"
    assert "SIGTERM forwarded to" in logs, logs[-2000:]
