"""The silent-loss scenarios, run against real pods in podman: shared by ``python -m tests.proof``
and the tests.

Each scenario starts a fresh API pod (baseline: the chart's pod spec; guarded: the same spec after
plane-guard's mutation), publishes through its HTTP endpoint (the view calls ``task.delay()``),
and counts, by task id, what the Celery worker pod of the same configuration executed. The pika
scenario does the same with the outbox poller and a queue bound to its exchange:

* returned_ok: publishes that returned (a task id, an event marked sent) without raising;
* arrived: of those, the ones the consumer received;
* lost: returned_ok - arrived, the silent losses;
* raised: publishes that raised (the caller saw an error; the outbox tries again);
* max_delay_s: the longest any one publish took;
* dup: extra copies the consumer received (confirms with retry publish again when an ack is lost).

Every wait is bounded; every pod, vhost and nftables table is removed afterwards.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby

from tests.pods import remove_stale, wait_for
from tests.proof import broker
from tests.proof.plane import Api, PlaneRun, Poller, Publish, Started, Worker, ensure_images
from webhook.core import conventions
from webhook.core.policy import default_policy

#: Heartbeat for the idle scenario: small, so that "idle past the heartbeat" takes seconds.
IDLE_HEARTBEAT = 3
IDLE_SECONDS = 4 * IDLE_HEARTBEAT
ROTATION_REQUESTS = 12
ROTATION_GAP = 0.3
#: The default policy's bound on a publish (publishTimeoutSeconds).
PUBLISH_BOUND = default_policy().roles["api"].publish_timeout_seconds
#: gunicorn's master when the wrapper exec'd it: the first process of the container's PID namespace.
CONTAINER_PID1 = 1
#: The memory alarm of the blocked scenario lasts at least this long.
ALARM_SECONDS = 12
EVENTS_QUEUE = "plane-guard-proof-events"
#: Seconds the outbox poller gets between SIGTERM (the baseline's ignores it) and SIGKILL.
POLLER_GRACE = 1
#: alarm-at-start: the memory alarm holds at least this long while the API pod starts.
START_ALARM_SECONDS = 40
#: worker-shutdown: tasks of TASK_SECONDS each, together longer than the grace period; the
#: stop (SIGTERM to PID 1, SIGKILL after WORKER_GRACE) comes STOP_INTO_TASK s into the first.
SHUTDOWN_TASKS = 6
TASK_SECONDS = 4
WORKER_GRACE = 14
STOP_INTO_TASK = 2


@dataclass
class Result:
    scenario: str
    config: str
    publishes: list[Publish]
    #: What the consumer received, one entry per copy (task ids, or event ids for pika).
    received: list[str] = field(default_factory=list)
    #: Markers of everything the consumer received (delivered publishes that raised show up here).
    received_markers: set[str] = field(default_factory=set)
    details: dict[str, object] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    #: Fields a scenario adds to its line (``ready=1 restarts=0 ...``), in order.
    line_fields: dict[str, object] = field(default_factory=dict)
    #: The line has only these fields after scenario and config (a scenario that counts no publishes).
    own_line: bool = False

    @property
    def returned_ok(self) -> int:
        return sum(1 for p in self.publishes if p.ok)

    @property
    def raised(self) -> int:
        return sum(1 for p in self.publishes if not p.ok)

    @property
    def arrived(self) -> int:
        return len({p.task_id for p in self.publishes if p.ok} & set(self.received))

    @property
    def lost(self) -> int:
        return self.returned_ok - self.arrived

    @property
    def dup(self) -> int:
        return sum(count - 1 for count in Counter(self.received).values())

    @property
    def max_delay_s(self) -> float:
        return max((p.seconds for p in self.publishes), default=0.0)

    @property
    def raised_but_delivered(self) -> int:
        """Publishes that raised, were not sent again, and still arrived: the broker had read them.

        A caller that retries such a publish itself sends a second copy.
        """
        resent = {p.marker for p in self.publishes if p.ok}
        return sum(1 for p in self.publishes if not p.ok and p.marker not in resent and p.marker in self.received_markers)

    @property
    def pids(self) -> list[int | None]:
        return [p.pid for p in self.publishes]

    def line(self) -> str:
        if self.own_line:
            return f"scenario={self.scenario} config={self.config}" + "".join(
                f" {key}={value}" for key, value in self.line_fields.items()
            )
        return (
            f"scenario={self.scenario} config={self.config} returned_ok={self.returned_ok} "
            f"arrived={self.arrived} lost={self.lost} raised={self.raised} "
            f"max_delay_s={self.max_delay_s:.1f} dup={self.dup}"
        ) + "".join(f" {key}={value}" for key, value in self.line_fields.items())

    def detail_lines(self) -> list[str]:
        lines = [f"raised_but_delivered={self.raised_but_delivered}"] if self.raised else []
        lines += [f"{key}={value}" for key, value in self.details.items()]
        return lines


def pid_runs(pids: list[int | None]) -> list[int]:
    """Lengths of the runs of requests served by the same worker: ``[5, 5, 2]``."""
    return [len(list(group)) for _, group in groupby(pids)]


def await_arrivals(run: PlaneRun, worker: Worker, wanted: set[str], timeout: float = 20.0) -> None:
    """Wait until the worker executed every id in ``wanted``, or until nothing more can arrive.

    "Nothing more" means: the queue is empty and no new task ran for 2 s, checked after at least
    3 s. Either way the wait ends within ``timeout``.
    """
    started = time.monotonic()
    last_change, seen = started, worker.executed()
    while not wanted <= seen and time.monotonic() - started < timeout:
        time.sleep(0.5)
        now_seen = worker.executed()
        if now_seen != seen:
            seen, last_change = now_seen, time.monotonic()
            continue
        quiet = time.monotonic() - last_change >= 2 and time.monotonic() - started >= 3
        if quiet and run.vhost.queue_depth() == 0:
            break


def revive_stalled_worker(run: PlaneRun, worker: Worker, wanted: set[str], result: Result) -> None:
    """Restart the worker when tasks wait in the queue and it no longer takes them, and wait again.

    Celery's consumer can stop for good when the broker closes its connection again while it is
    still reconnecting (seen on a loaded machine in broker-close-churn, baseline and guarded alike:
    "Couldn't ack ... connection already closed", then no reconnect). The broker holds those
    tasks, so they are not lost; counting them as lost would blame the publisher for the consumer.
    The restart is said in the result (``worker_restarted``), so it is never silent.
    """
    if wanted <= worker.executed() or run.vhost.queue_depth() == 0:
        return
    waiting = run.vhost.queue_depth()
    worker.restart()
    result.details["worker_restarted"] = f"its consumer stopped taking tasks with {waiting} in the queue; restarted"
    await_arrivals(run, worker, wanted)


def _connection_timeouts(run: PlaneRun, started: Started, pid: int | None = None) -> list[int]:
    """The heartbeat the broker negotiated for each connection that process ``pid`` of the pod
    (by default any of its processes) holds."""
    ports = set(started.broker_ports(pid))
    return sorted(c.timeout for c in run.vhost.connections() if c.peer_port in ports)


def _publish_many(api: Api, prefix: str, count: int, gap: float = 0.0) -> list[Publish]:
    done = []
    for index in range(count):
        if index and gap:
            time.sleep(gap)
        done.append(api.publish(f"{prefix}-{index}"))
    return done


def _finish(run: PlaneRun, worker: Worker, api: Api, result: Result) -> Result:
    result.details["container_pid1"] = api.pid1
    exit_code = api.stop()
    wanted = {p.task_id for p in result.publishes if p.ok}
    await_arrivals(run, worker, wanted)
    revive_stalled_worker(run, worker, wanted, result)
    markers = {p.marker for p in result.publishes}  # unique per scenario within one worker's life
    runs = [(task_id, marker) for task_id, marker in worker.runs() if marker in markers]
    result.received = [task_id for task_id, _ in runs]
    result.received_markers = {marker for _, marker in runs}
    result.logs["api"] = api.logs()
    result.logs["api_markers"] = "\n".join(api.marker_lines())
    master = re.search(r"Listening at: \S+ \((\d+)\)", result.logs["api"])
    result.details["gunicorn_is_container_pid"] = bool(master) and int(master.group(1)) == CONTAINER_PID1
    result.details["api_exit_code"] = exit_code
    api.remove()
    return result


# --------------------------------------------------------------------------------------------


def gunicorn_rotation(run: PlaneRun, worker: Worker, config: str, max_requests: int | None = None) -> Result:
    """Requests one at a time; the worker PIDs show when gunicorn rotated its worker."""
    annotations = {conventions.MAX_REQUESTS_ANNOTATION: str(max_requests)} if max_requests is not None else {}
    name = "gunicorn-rotation" if max_requests is None else f"gunicorn-rotation-at-{max_requests}"
    api = run.start_api(config, annotations)
    result = Result(name, config, [])
    try:
        result.publishes = _publish_many(api, name, ROTATION_REQUESTS, gap=ROTATION_GAP)
        result.details["pid_runs"] = pid_runs(result.pids)
    finally:
        _finish(run, worker, api, result)
    return result


def churn(run: PlaneRun, worker: Worker, config: str) -> Result:
    """Broker-side closes (``rabbitmqctl close_all_connections``) between bursts of publishes."""
    api = run.start_api(config)
    result = Result("broker-close-churn", config, [])
    try:
        result.publishes += _publish_many(api, "churn-warm", 3)
        result.details["api_heartbeat"] = _connection_timeouts(run, api, result.publishes[-1].pid)
        result.details["worker_heartbeat"] = _connection_timeouts(run, worker)
        for round_ in range(3):
            run.vhost.close_all_connections()
            time.sleep(0.5)
            result.publishes += _publish_many(api, f"churn-{round_}", 3)
    finally:
        _finish(run, worker, api, result)
    return result


def black_hole(run: PlaneRun, worker: Worker, config: str, direction: str = "both") -> Result:
    """The pooled connection starts dropping every packet, with no FIN or RST.

    ``direction="from-broker"`` (scenario ack-lost): only the broker's packets are dropped, so
    every publish arrives but its acknowledgement does not.
    """
    api = run.start_api(config)
    result = Result("black-hole" if direction == "both" else "ack-lost", config, [])
    try:
        result.publishes += _publish_many(api, f"{result.scenario}-warm", 2)
        ports = api.broker_ports(result.publishes[-1].pid)
        result.details["black_holed_ports"] = ports
        with broker.black_hole(ports, direction):
            result.publishes += _publish_many(api, f"{result.scenario}-a", 3, gap=0.2)
            time.sleep(2)
            result.publishes += _publish_many(api, f"{result.scenario}-b", 2)
            api.stop()
    finally:
        _finish(run, worker, api, result)
    return result


def idle(run: PlaneRun, worker: Worker, config: str) -> Result:
    """The API pod idles past the heartbeat (guarded: 3 s via the pod annotation) and publishes again."""
    annotations = {conventions.HEARTBEAT_ANNOTATION: str(IDLE_HEARTBEAT)} if config == "guarded" else {}
    api = run.start_api(config, annotations)
    result = Result("idle-past-heartbeat", config, [])
    try:
        result.publishes += _publish_many(api, "idle-warm", 2)
        ports_before = api.broker_ports(result.publishes[-1].pid)
        live = {c.peer_port: c.timeout for c in run.vhost.connections()}
        result.details["api_heartbeat"] = sorted(live[p] for p in ports_before if p in live)
        time.sleep(IDLE_SECONDS)
        still_open = {c.peer_port for c in run.vhost.connections()} & set(ports_before)
        result.details["broker_closed_idle_connection"] = not still_open
        result.publishes += _publish_many(api, "idle-after", 3)
    finally:
        _finish(run, worker, api, result)
    return result


def blocked(run: PlaneRun, worker: Worker, config: str) -> Result:
    """A RabbitMQ memory alarm: the broker is up but reads nothing from publishing connections.

    Two publishes start while the alarm holds (guarded: each raises at the policy's bound), one
    starts just before it clears (guarded: it waits, then succeeds), two more after it cleared.
    """
    api = run.start_api(config)
    result = Result("blocked", config, [])
    try:
        result.publishes += _publish_many(api, "blocked-warm", 2)
        late: list[Publish] = []
        with broker.memory_alarm():
            alarm_started = time.monotonic()
            result.publishes += _publish_many(api, "blocked-long", 2)
            waiting = threading.Thread(target=lambda: late.append(api.publish("blocked-short")), daemon=True)
            waiting.start()
            time.sleep(max(1.0, ALARM_SECONDS - (time.monotonic() - alarm_started)))
            result.details["alarm_s"] = round(time.monotonic() - alarm_started, 1)
        waiting.join(60)
        result.publishes += late
        result.publishes += _publish_many(api, "blocked-after", 2)
        result.details["bound_s"] = PUBLISH_BOUND
    finally:
        _finish(run, worker, api, result)
    return result


def alarm_at_start(run: PlaneRun, worker: Worker, config: str) -> Result:
    """The API pod starts while a memory alarm holds (at least ``START_ALARM_SECONDS``).

    Its entrypoint's ``manage.py register_instance`` publishes under ``set -e``: unguarded, the
    publish lands in the socket buffer and the start goes on; guarded, it waits for the bound and
    then must go on too (a start-up step), with a line, instead of failing the container. Then
    the pod must answer requests once the alarm is over, and the start-up task is either
    delivered or reported by a line.
    """
    result = Result("alarm-at-start", config, [])
    with broker.memory_alarm():
        alarm_started = time.monotonic()
        api, ready_after, restarts = run.start_api_counting_restarts(config, timeout=START_ALARM_SECONDS + 20)
        time.sleep(max(0.0, START_ALARM_SECONDS - (time.monotonic() - alarm_started)))
        result.details["alarm_s"] = round(time.monotonic() - alarm_started, 1)
    try:
        result.line_fields = {
            "ready": int(ready_after is not None),
            "restarts": restarts,
            "ready_after_s": f"{ready_after:.1f}" if ready_after is not None else "-",
        }
        if ready_after is not None:
            result.publishes += _publish_many(api, "alarm-at-start-after", 2)
        published = [line.split("task=", 1)[1] for line in api.marker_lines() if line.startswith("register_instance-published")]
        result.details["startup_task_ids"] = published
        await_arrivals(run, worker, set(published) | {p.task_id for p in result.publishes if p.ok})
        result.details["startup_task_delivered"] = bool(published) and set(published) <= worker.executed()
    finally:
        _finish(run, worker, api, result)
    return result


def worker_shutdown(run: PlaneRun, _worker: Worker, config: str) -> Result:
    """A busy worker pod is stopped as the kubelet stops it: SIGTERM to PID 1, SIGKILL after the grace.

    Plane's worker entrypoint runs celery without ``exec``: bash is PID 1 and ignores SIGTERM, so
    Celery goes on taking tasks until SIGKILL lands in one it already acknowledged. Guarded, the
    SIGTERM must reach Celery (warm shutdown): the running task finishes, no new one starts, the
    rest stay queued, and the pod exits long before the grace period ends.
    """
    run.vhost.drain("celery")
    worker = run.start_worker(config)
    result = Result("worker-shutdown", config, [], own_line=True)
    try:
        markers = [f"{config}-shutdown-{index}" for index in range(SHUTDOWN_TASKS)]
        run.send_tasks("plane.bgtasks.slow_task", [(marker, TASK_SECONDS) for marker in markers])
        wait_for(lambda: any(m.startswith("start:") for _, m in worker.runs()), timeout=30, interval=0.1,
                 what="the first slow task started")
        time.sleep(STOP_INTO_TASK)
        stopped = time.monotonic()
        exit_code = worker.stop(grace=WORKER_GRACE)
        exit_s = time.monotonic() - stopped
        runs = worker.runs()
        started = {task_id for task_id, marker in runs if marker.startswith("start:")}
        done = {task_id for task_id, marker in runs if marker in markers}
        result.received = [task_id for task_id, marker in runs if marker in markers]
        result.received_markers = {marker for _, marker in runs if marker in markers}
        left_queued = run.vhost.queue_depth()
        result.line_fields = {
            "started": len(started),
            "done": len(done),
            "lost": len(started - done),
            "exit_s": f"{exit_s:.1f}",
        }
        result.details.update(left_queued=left_queued, exit_code=exit_code, grace_s=WORKER_GRACE,
                              never_started=SHUTDOWN_TASKS - len(started))
        result.logs["worker"] = worker.logs()
        # What the stopped worker did not take stays for the next worker; count, then clear it.
        run.vhost.drain("celery")
    finally:
        worker.remove()
    return result


def pika_black_hole(run: PlaneRun, _worker: Worker, config: str) -> Result:
    """The outbox poller's pika connection starts dropping every packet, with no FIN or RST."""
    run.vhost.bind_queue(EVENTS_QUEUE, "plane.event_stream")
    run.vhost.drain(EVENTS_QUEUE)
    poller = run.start_poller(config)
    result = Result("pika-black-hole", config, [])
    try:
        _send_events(poller, f"{config}-warm", 2)
        ports = poller.broker_ports()
        result.details["black_holed_ports"] = ports
        with broker.black_hole(ports):
            for index in range(3):
                poller.add_event(f"{config}-hole-a-{index}")
                time.sleep(0.2)
            time.sleep(2)
            _send_events(poller, f"{config}-hole-b", 2, timeout=PUBLISH_BOUND + 20)
            # Still inside the black hole: nothing buffered reaches the broker later. The baseline
            # poller is its container's PID 1 with no SIGTERM handler, so it ignores SIGTERM (as in
            # a cluster) and the stop is a SIGKILL after the grace period; the guarded one gets it.
            poller.stop(grace=POLLER_GRACE)
    finally:
        poller.stop(grace=POLLER_GRACE)
        result.publishes = poller.attempts()
        result.received = run.vhost.drain(EVENTS_QUEUE)
        result.received_markers = set(result.received)
        result.logs["poller"] = poller.logs()
        poller.remove()
    return result


def _send_events(poller: Poller, prefix: str, count: int, timeout: float = 20.0) -> None:
    """Put ``count`` events in the outbox and wait until every event so far is marked sent."""
    for index in range(count):
        poller.add_event(f"{prefix}-{index}")
    deadline = time.monotonic() + timeout
    while any(poller.outbox.glob("*.event")) and time.monotonic() < deadline:
        time.sleep(0.1)


Scenario = Callable[[PlaneRun, Worker, str], Result]

SCENARIOS: tuple[tuple[str, Scenario, tuple[str, ...]], ...] = (
    ("gunicorn-rotation", gunicorn_rotation, ("baseline", "guarded")),
    ("gunicorn-rotation-at-3", lambda run, worker, config: gunicorn_rotation(run, worker, config, 3), ("guarded",)),
    ("broker-close-churn", churn, ("baseline", "guarded")),
    ("black-hole", black_hole, ("baseline", "guarded")),
    ("ack-lost", lambda run, worker, config: black_hole(run, worker, config, "from-broker"), ("baseline", "guarded")),
    ("idle-past-heartbeat", idle, ("baseline", "guarded")),
    ("blocked", blocked, ("baseline", "guarded")),
    ("pika-black-hole", pika_black_hole, ("baseline", "guarded")),
    ("alarm-at-start", alarm_at_start, ("baseline", "guarded")),
)
#: Scenarios that start a worker pod of their own, run after the shared worker is gone (they
#: stop workers, and the shared one would take their tasks).
OWN_WORKER: tuple[tuple[str, Scenario, tuple[str, ...]], ...] = (
    ("worker-shutdown", worker_shutdown, ("baseline", "guarded")),
)


def run_all(report: Callable[[Result], None] = lambda result: None) -> list[Result]:
    """Every scenario for every configuration, baseline first; ``report`` sees each result as it comes."""
    broker.require_broker()
    broker.require_nft()
    images = ensure_images()
    remove_stale()
    broker.remove_stale_black_holes()
    broker.restore_stale_memory_alarm()
    run = PlaneRun(images)
    results: list[Result] = []
    try:
        for config in ("baseline", "guarded"):
            worker = run.start_worker(config)
            try:
                for _, scenario, configs in SCENARIOS:
                    if config in configs:
                        started = time.monotonic()
                        result = scenario(run, worker, config)
                        result.details["seconds"] = round(time.monotonic() - started, 1)
                        result.logs["worker"] = worker.logs()
                        results.append(result)
                        report(result)
            finally:
                worker.remove()
            for _, scenario, configs in OWN_WORKER:
                if config in configs:
                    started = time.monotonic()
                    result = scenario(run, worker, config)
                    result.details["seconds"] = round(time.monotonic() - started, 1)
                    results.append(result)
                    report(result)
    finally:
        run.close()
    return results
