"""Plane pods from the mutated spec, in real containers: api, worker and beat, plane-ce and
plane-enterprise shapes, each pod against a vhost of its own on the local RabbitMQ.

Every claim is checked where it happens: inside the running containers (``podman exec``) and on
the broker (``rabbitmqctl``). One unmutated API pod shows that the same checks see the problem.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.containers.plane import Played, channels, play, program_process, stop
from tests.pods import wait_for
from tests.proof.broker import PASSWORD

pytestmark = [pytest.mark.containers, pytest.mark.broker]

CASES = ["ce-plane-api", "ce-plane-worker", "ce-plane-beat-worker",
         "ee-plane-api", "ee-plane-worker", "ee-plane-beat-worker"]
APIS = ["ce-plane-api", "ee-plane-api"]
ENTERPRISE = [c for c in CASES if c.startswith("ee-")]
HEARTBEAT = 60
#: The USER of both plane-guard images.
IMAGE_USER = 10001
#: gunicorn's --max-requests as tests/plane_app/bin/docker-entrypoint-api.sh hard-codes it.
HARD_CODED_MAX_REQUESTS = 5
HOOK_LINE = "plane-guard: Celery app 'plane': applied"
#: Seconds between the requests of the rotation check: uvicorn ends a worker that reached
#: --max-requests on its next tick (0.1 s), so requests sent faster could all reach the old one.
REQUEST_PAUSE = 0.25

#: The steps each container's original command records, in order (a line starts with the step).
STEPS = {
    "api": ["entrypoint-start", "wait_for_db", "wait_for_migrations", "register_instance",
            "register_instance-published", "configure_instance", "exec gunicorn"],
    "worker": ["worker-entrypoint", "wait_for_db", "wait_for_migrations"],
    "beat": ["beat-entrypoint", "wait_for_db", "wait_for_migrations"],
}
#: The enterprise API starts through the chart's `bash -c` script and the -ee entrypoint first.
EE_API_STEPS = ["chart-prestart", "ee-entrypoint-start", *STEPS["api"]]


@pytest.fixture(scope="module", params=CASES)
def played(request, images):
    running = play(request.param, images)
    yield running
    stop(running)


def _in_order(lines: list[str], steps: list[str]) -> list[str]:
    """The steps not found, in order, as the start of a line."""
    position, missing = 0, []
    for step in steps:
        found = next((i for i in range(position, len(lines)) if lines[i].startswith(step)), None)
        if found is None:
            missing.append(step)
        else:
            position = found + 1
    return missing


def _publishing_channels(running: Played) -> list[dict]:
    """The pod's channels once it has published: the API publishes on request, beat on its schedule."""
    if running.role == "api":
        (answer,) = running.get("/publish?marker=containers")
        assert "task_id" in answer, answer
    return wait_for(lambda: channels(running.vhost), timeout=30, interval=0.5, what=f"{running.case} channels")


def _worker_conf(running: Played) -> dict:
    """The running worker's own configuration, asked over the broker (`celery inspect conf`).

    Asked up to three times: a broker-wide memory alarm (set by someone else on a shared broker)
    holds the question back until it clears.
    """
    node = re.search(r"(celery@\S+) ready\.", running.logs()).group(1)
    command = ["celery", "-A", "plane", "inspect", "conf", "--json", "--destination", node, "--timeout", "20"]
    for _ in range(3):
        done = running.pod.exec(running.container, command, timeout=90)
        if done.returncode == 0:
            (conf,) = json.loads(done.stdout.strip().splitlines()[-1]).values()
            return conf
    alarms = subprocess.run(["rabbitmq-diagnostics", "-q", "alarms"], capture_output=True, text=True, timeout=60).stdout
    # Only stderr's end: the reply (stdout) holds the broker URL with its password.
    raise AssertionError(f"celery inspect conf exited {done.returncode}: {done.stderr.strip()[-200:]}; broker alarms: {alarms}")


def test_pid_1_is_the_supervisor_and_the_application_runs_under_it(played):
    """The container's PID 1 is plane-guard's supervisor (it forwards SIGTERM to the application,
    whether the entrypoint exec'd it or not); the application itself runs below it."""
    argv = played.pod.pid1(played.container)
    assert any(part.endswith("/supervisor.py") for part in argv), argv
    assert program_process(played)[1]


def test_every_step_of_the_original_entrypoint_ran(played):
    steps = EE_API_STEPS if played.case == "ee-plane-api" else STEPS[played.role]
    lines = played.markers()
    assert _in_order(lines, steps) == [], lines
    # The image's own start-up hook still ran in the application (plane-guard's chains to it).
    assert any(line.startswith("image-sitecustomize") for line in lines), lines


def test_the_start_up_hook_configured_the_app(played):
    if played.role == "api":
        played.get("/publish?marker=hook")  # Celery configures itself on the first publish
    logs = wait_for(lambda: HOOK_LINE in (text := played.logs()) and text, timeout=30,
                    what=f"{played.case} start-up hook line")
    assert "CELERY_CONFIRM_PUBLISH" in logs.split(HOOK_LINE, 1)[1].splitlines()[0]


@pytest.mark.parametrize("played", APIS, indirect=True)
def test_gunicorn_workers_do_not_rotate(played):
    """The entrypoint still passes --max-requests 5; the worker answers three times that many requests."""
    argv = program_process(played)[1]
    assert argv[argv.index("--max-requests") + 1] == str(HARD_CODED_MAX_REQUESTS)
    answers = played.get(*["/pid"] * (3 * HARD_CODED_MAX_REQUESTS), pause=REQUEST_PAUSE)
    assert len({a["pid"] for a in answers}) == 1, answers


def test_celery_publishes_with_confirms(played):
    if played.role == "worker":
        conf = _worker_conf(played)
        assert conf["broker_transport_options"].get("confirm_publish") is True
        assert conf["task_publish_retry"] is True
        return
    found = _publishing_channels(played)
    assert found and all(c["confirm"] for c in found), found


def test_the_broker_shows_heartbeat_60_on_every_connection(played):
    if played.role == "api":
        played.get("/publish?marker=heartbeat")
    connections = wait_for(played.vhost.connections, timeout=30, interval=0.5, what=f"{played.case} connections")
    assert [c.timeout for c in connections] == [HEARTBEAT] * len(connections), connections


def test_the_init_container_ran_as_non_root(played):
    """The runtime files belong to the init container's user: the pod's runAsUser (enterprise) or
    else the image's numeric non-root one."""
    assert played.pod.exit_code("plane-guard-runtime") == 0
    expected = (played.spec["spec"].get("securityContext") or {}).get("runAsUser", IMAGE_USER)
    owner = played.pod.exec(played.container, ["stat", "-c", "%u %a", "/plane-guard/entrypoint.sh"]).stdout.split()
    assert owner == [str(expected), "755"], owner


@pytest.mark.parametrize("played", ENTERPRISE, indirect=True)
def test_enterprise_pods_run_non_root_on_a_read_only_root(played):
    status = played.pod.exec(played.container, ["cat", "/proc/1/status"]).stdout
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["1000"] * 4, uid_line
    attempt = played.pod.exec(played.container, ["touch", "/code/written"])
    assert attempt.returncode != 0 and "Read-only file system" in attempt.stderr


def test_no_log_holds_the_broker_password(played):
    for name in played.pod.container_names():
        assert f":{PASSWORD}@" not in played.pod.logs(name), name


def test_unmutated_api_pod_shows_the_problem(images):
    """The same checks on the pod as the chart renders it: rotation, no confirms, heartbeat off."""
    baseline = play("ce-plane-api", images, guarded=False)
    try:
        assert baseline.pod.container_names() == ["plane-api"]
        pids = {a["pid"] for a in baseline.get(*["/pid"] * (3 * HARD_CODED_MAX_REQUESTS), pause=REQUEST_PAUSE)}
        assert len(pids) >= 2, pids
        found = _publishing_channels(baseline)
        assert found and not any(c["confirm"] for c in found), found
        connections = baseline.vhost.connections()
        assert connections and all(c.timeout == 0 for c in connections), connections
        assert HOOK_LINE not in baseline.logs()
    finally:
        stop(baseline)
