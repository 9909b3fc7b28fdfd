"""The five checks of one combination, each against the matrix's RabbitMQ node and with real processes.

Every process runs the combination's own interpreter with the hook first on ``PYTHONPATH``, as the
wrapper leaves it, and the Plane-shaped app in ``app/`` after it. No column can pass by accident:
where the app alone might already do it (confirms, gunicorn rotation, pika confirms) a control run
without the hook must show the opposite; ``bounded`` needs the hook's own timeout error, and
``black-hole`` a hole that bit (a publish raised or was retried). Every wait is bounded, and every
process is killed with its process group when its check ends.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.compat import node as nodes
from tests.compat.matrix import FAIL, OK

APP_DIR = Path(__file__).resolve().parent / "app"
#: PLANE_GUARD_PUBLISH_TIMEOUT for every check: a blocked publish must raise within BOUND + SLACK seconds.
BOUND = 3
SLACK = 1.0
#: The requests gunicorn serves in the rotation check, and the --max-requests it is started with.
REQUESTS = 10
MAX_REQUESTS = 3
PUBLISH_LINE = '{"plane_guard":"publish"'


class CheckFailed(Exception):
    """The check's verdict is FAIL; the message says what was seen."""


@dataclass
class Setup:
    """What the checks of one combination share: the node, the hook, the venv and a scratch directory."""

    node: nodes.Node
    runtime: Path  # what ``plane-guard runtime install`` left: ``python/`` is the hook
    venv: Path
    workdir: Path  # stderr files of this combination's processes
    #: Every ``plane-guard:`` line the hook wrote in any process of this combination, in order, once each.
    said: dict[str, None] = field(default_factory=dict)

    def heard(self, stderr: str) -> None:
        self.said.update((line, None) for line in stderr.splitlines() if line.startswith("plane-guard:"))

    def env(self, hooked: bool = True, **extra: str) -> dict[str, str]:
        """A container-like environment; ``hooked`` puts the hook in front, as the wrapper does."""
        path = f"{self.runtime / 'python'}:{APP_DIR}" if hooked else str(APP_DIR)
        base = {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(self.workdir),
            "PYTHONPATH": path,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        return {**base, **extra}

    def guarded(self, url: str) -> dict[str, str]:
        """What plane-guard's policy gives a Celery container (the bound shortened to ``BOUND``)."""
        return self.env(
            AMQP_URL=url,
            CELERY_CONFIRM_PUBLISH="1",
            CELERY_TASK_PUBLISH_RETRY="1",
            PLANE_GUARD_PUBLISH_TIMEOUT=str(BOUND),
            PLANE_GUARD_PIKA_CONFIRM_DELIVERY="1",
        )


def _stop(process: subprocess.Popen, grace: float = 10) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


class Probe:
    """One of ``app/probe_*.py`` in a process of its own: a command per line in, a JSON line out."""

    def __init__(self, setup: Setup, script: str, env: dict[str, str], label: str):
        self.setup = setup
        self.stderr_path = setup.workdir / f"{label}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [str(setup.venv / "bin" / "python"), script],
                env=env,
                cwd=APP_DIR,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        nodes.record_group(self.process.pid)
        self._answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._answers.put(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, command: str, timeout: float = 30) -> dict:
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise CheckFailed(f"the probe exited before {command!r}: {self.stderr_tail()}") from None
        try:
            return json.loads(self._answers.get(timeout=timeout))
        except queue.Empty:
            raise CheckFailed(f"no answer to {command!r} within {timeout:g}s: {self.stderr_tail()}") from None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, size: int = 600) -> str:
        return " | ".join(self.stderr()[-size:].splitlines()) or "(nothing on stderr)"

    def publish_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stderr().splitlines() if line.startswith(PUBLISH_LINE)]

    def close(self) -> None:
        try:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        _stop(self.process)
        self.setup.heard(self.stderr())


@contextmanager
def _probe(setup: Setup, script: str, env: dict[str, str], label: str) -> Iterator[Probe]:
    probe = Probe(setup, script, env, label)
    try:
        yield probe
    finally:
        probe.close()


@contextmanager
def _vhost(setup: Setup, prefix: str) -> Iterator[str]:
    name = setup.node.add_vhost(prefix)
    try:
        yield name
    finally:
        setup.node.delete_vhost(name)


def _own_channels(setup: Setup, vhost: str, pid: int) -> list[tuple[str, bool]]:
    """The broker's view of the channels of process ``pid``: (name, confirm mode)."""
    ports = nodes.broker_ports_of(pid, setup.node.port)
    prefixes = tuple(f"{nodes.HOST}:{port} ->" for port in ports)
    return [(name, confirm) for name, confirm in setup.node.channels(vhost) if name.startswith(prefixes)]


def _drain(url: str, queue_name: str, header: str | None) -> list[str]:
    """The ids of the messages in ``queue_name`` (a Celery header, else ``message_id``), taken off it."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url + "?socket_timeout=10&blocked_connection_timeout=10"))
    ids = []
    try:
        channel = connection.channel()
        for _ in range(1000):
            method, properties, _ = channel.basic_get(queue_name, auto_ack=True)
            if method is None:
                break
            ids.append((properties.headers or {}).get(header) if header else properties.message_id)
    finally:
        connection.close()
    return [str(i) for i in ids]


def _raised_within_bound(answer: dict, what: str) -> str:
    if answer.get("ok"):
        raise CheckFailed(f"{what} returned OK under the memory alarm (a publish the broker never confirmed)")
    if answer["seconds"] > BOUND + SLACK:
        raise CheckFailed(f"{what} raised after {answer['seconds']}s, past {BOUND} s + {SLACK:g} s: {answer['error']}")
    return f"raised after {answer['seconds']}s ({answer['error'].split(':')[0]})"


def _raised_line(probe: Probe, library: str) -> None:
    lines = [
        line for line in probe.publish_lines() if line.get("outcome") == "raised" and line.get("library") == library
    ]
    if not lines:
        raise CheckFailed(f'no {{"plane_guard":"publish",...,"outcome":"raised"}} line from {library} on stderr')
    if lines[-1].get("bound_s") != BOUND:
        raise CheckFailed(f"the raised line says bound_s={lines[-1].get('bound_s')}, not {BOUND}")


# ---------------------------------------------------------------------------------------------
# confirms + bounded: one Celery process, as a web worker would publish


def celery(setup: Setup) -> dict[str, tuple[str, str]]:
    """``confirms``: the broker sees the publishing channel in confirm mode (and not without the hook).

    ``bounded``: under a memory alarm ``delay()`` raises within the bound, with a ``raised`` line.
    """
    results = {}
    with _vhost(setup, "compat-celery") as vhost:
        url = setup.node.url(vhost)
        with _probe(setup, "probe_celery.py", setup.guarded(url), "celery") as probe:
            results["confirms"] = _verdict(lambda: _celery_confirms(setup, vhost, url, probe))
            results["bounded"] = _verdict(lambda: _celery_bounded(setup, probe))
    return results


def _celery_confirms(setup: Setup, vhost: str, url: str, probe: Probe) -> str:
    first = probe.ask("publish confirms-1")
    if not first["ok"]:
        raise CheckFailed(f"delay() raised on a healthy broker: {first['error']} | {probe.stderr_tail()}")
    channels = _own_channels(setup, vhost, probe.pid)
    if not channels:
        raise CheckFailed("the broker lists no channel of the publishing process")
    if not all(confirm for _, confirm in channels):
        raise CheckFailed(
            f"the broker sees {sum(not c for _, c in channels)} of {len(channels)} channels without confirms"
        )
    if "CELERY_CONFIRM_PUBLISH" not in probe.stderr():
        raise CheckFailed(f"the hook did not say it applied CELERY_CONFIRM_PUBLISH: {probe.stderr_tail()}")
    if first["id"] not in _drain(url, "celery", "id"):
        raise CheckFailed("the confirmed task is not in the queue")
    with _probe(
        setup, "probe_celery.py", setup.env(hooked=False, AMQP_URL=url, CELERY_CONFIRM_PUBLISH="1"), "celery-control"
    ) as control:
        answer = control.ask("publish control-1")
        unhooked = _own_channels(setup, vhost, control.pid)
    if not answer["ok"] or not unhooked or any(confirm for _, confirm in unhooked):
        raise CheckFailed(f"control without the hook: publish {answer}, channels {unhooked} (expected no confirms)")
    return f"{len(channels)} channel(s) in confirm mode (broker's view); none without the hook"


def _celery_bounded(setup: Setup, probe: Probe) -> str:
    with setup.node.memory_alarm():
        blocked = probe.ask("publish bounded-1", timeout=BOUND + 15)
    seen = _raised_within_bound(blocked, "delay()")
    if f"within {BOUND} s" not in blocked["error"]:
        raise CheckFailed(f"delay() raised, but not at plane-guard's bound: {blocked['error']}")
    _raised_line(probe, "kombu")
    after = probe.ask("publish after-alarm", timeout=BOUND + 15)
    if not after["ok"]:
        raise CheckFailed(f"after the alarm delay() still raises: {after['error']}")
    return seen


# ---------------------------------------------------------------------------------------------
# black hole


def black_hole(setup: Setup, publishes: int = 3) -> dict[str, tuple[str, str]]:
    """Publishes on a connection that silently stopped (no FIN/RST) arrive or raise; none is OK and lost."""
    with _vhost(setup, "compat-hole") as vhost:
        url = setup.node.url(vhost)
        with _probe(setup, "probe_celery.py", setup.guarded(url), "black-hole") as probe:
            return {"black-hole": _verdict(lambda: _black_hole(setup, url, probe, publishes))}


def _black_hole(setup: Setup, url: str, probe: Probe, publishes: int) -> str:
    warm = probe.ask("publish warm-up")
    if not warm["ok"]:
        raise CheckFailed(f"delay() raised on a healthy broker: {warm['error']}")
    ports = nodes.broker_ports_of(probe.pid, setup.node.port)
    if not ports:
        raise CheckFailed("the publishing process holds no connection to the broker")
    answers = []
    with nodes.black_hole(ports, setup.node.port):
        for index in range(publishes):
            answers.append(probe.ask(f"publish hole-{index}", timeout=BOUND + 20))
    returned = {a["id"] for a in answers if a["ok"]}
    delivered: list[str] = []
    deadline = time.monotonic() + 10
    while not returned <= set(delivered) and time.monotonic() < deadline:
        delivered += _drain(url, "celery", "id")
        time.sleep(0.5)
    lost = returned - set(delivered)
    outcomes = [line["outcome"] for line in probe.publish_lines()]
    raised = sum(not a["ok"] for a in answers)
    dup = len(delivered) - len(set(delivered))
    summary = f"{len(returned)} OK, {raised} raised, dup={dup}, lines {outcomes or 'none'}"
    if lost:
        raise CheckFailed(f"{len(lost)} publish(es) returned OK and never arrived: {summary}")
    if not raised and not {"retried", "raised"} & set(outcomes):
        raise CheckFailed(f"the black hole did not bite (no raise, no retry), so this proves nothing: {summary}")
    return f"lost 0: {summary}"


# ---------------------------------------------------------------------------------------------
# gunicorn


def rotation(setup: Setup) -> dict[str, tuple[str, str]]:
    """gunicorn ``--max-requests 3`` with GUNICORN_MAX_REQUESTS=0 serves every request from one worker."""
    return {"rotation-off": _verdict(lambda: _rotation(setup))}


def _rotation(setup: Setup) -> str:
    guarded, stderr = _serve(setup, "gunicorn", GUNICORN_MAX_REQUESTS="0", GUNICORN_MAX_REQUESTS_JITTER="0")
    control, _ = _serve(setup, "gunicorn-control")
    if len(control) < 2:
        raise CheckFailed(f"control without the variables did not rotate ({len(set(control))} PID): proves nothing")
    if len(guarded) != 1:
        raise CheckFailed(f"{REQUESTS} requests were served by {len(guarded)} worker PIDs: rotation is still on")
    if f"max_requests=0 (was {MAX_REQUESTS}" not in stderr:
        raise CheckFailed("gunicorn served from one worker, but the hook did not say it set max_requests=0")
    return f"{REQUESTS} requests, 1 worker PID (control: {len(control)} PIDs)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((nodes.HOST, 0))
        return probe.getsockname()[1]


def _get_pid(port: int, deadline: float) -> int:
    while True:
        connection = http.client.HTTPConnection(nodes.HOST, port, timeout=10)
        try:
            connection.request("GET", "/pid", headers={"Connection": "close"})
            return json.loads(connection.getresponse().read())["pid"]
        except (OSError, http.client.HTTPException, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            connection.close()


def _serve(setup: Setup, label: str, **variables: str) -> tuple[set[int], str]:
    """Plane's API command line (uvicorn worker, hard-coded --max-requests): the PIDs that served ``REQUESTS``."""
    port = _free_port()
    stderr_path = setup.workdir / f"{label}.stderr"
    argv = [
        str(setup.venv / "bin" / "gunicorn"),
        "-w",
        "1",
        "-k",
        "uvicorn.workers.UvicornWorker",
        "compat_app.asgi:application",
        "--bind",
        f"{nodes.HOST}:{port}",
        "--max-requests",
        str(MAX_REQUESTS),
        "--max-requests-jitter",
        "0",
    ]
    with open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            argv,
            env=setup.env(**variables),
            cwd=APP_DIR,
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            start_new_session=True,
        )
    nodes.record_group(process.pid)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise CheckFailed(f"gunicorn exited {process.returncode}: {stderr_path.read_text()[-600:]}")
            try:
                with socket.create_connection((nodes.HOST, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise CheckFailed("gunicorn did not listen within 30s") from None
                time.sleep(0.2)
        pids = []
        for _ in range(REQUESTS):
            try:
                pids.append(_get_pid(port, time.monotonic() + 20))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise CheckFailed(
                    f"request {len(pids) + 1} failed: {exc!r}: {stderr_path.read_text()[-600:]}"
                ) from None
            time.sleep(0.05)
    finally:
        _stop(process)
        setup.heard(stderr_path.read_text(errors="replace"))
    return set(pids), stderr_path.read_text(errors="replace")


# ---------------------------------------------------------------------------------------------
# pika


def pika_confirms(setup: Setup) -> dict[str, tuple[str, str]]:
    """pika channels publish with confirms (and not without the hook); under an alarm a publish raises in time."""
    with _vhost(setup, "compat-pika") as vhost:
        return {"pika-confirms": _verdict(lambda: _pika(setup, vhost))}


def _pika(setup: Setup, vhost: str) -> str:
    url = setup.node.url(vhost)
    with _probe(setup, "probe_pika.py", setup.env(hooked=False, AMQP_URL=url), "pika-control") as control:
        answer = control.ask("publish control-1")
        unhooked = control.ask("state")
    if not answer["ok"] or unhooked["confirm"] is not False:
        raise CheckFailed(f"control without the hook: publish {answer}, state {unhooked} (expected no confirms)")
    with _probe(setup, "probe_pika.py", setup.guarded(url), "pika") as probe:
        first = probe.ask("publish pika-1")
        if not first["ok"]:
            raise CheckFailed(f"basic_publish raised on a healthy broker: {first['error']} | {probe.stderr_tail()}")
        state = probe.ask("state")
        channels = _own_channels(setup, vhost, probe.pid)
        if state["confirm"] is not True or not channels or not all(confirm for _, confirm in channels):
            raise CheckFailed(
                f"no confirms: pika says {state['confirm']}, the broker {channels} | {probe.stderr_tail()}"
            )
        with setup.node.memory_alarm():
            blocked = probe.ask("publish pika-alarm", timeout=BOUND + 15)
        seen = _raised_within_bound(blocked, "basic_publish")
        if not str(blocked.get("module", "")).startswith("pika"):
            raise CheckFailed(f"basic_publish raised, but not pika's error: {blocked['error']}")
        _raised_line(probe, "pika")
    return f"confirm mode (pika and broker); {seen}"


def _verdict(check) -> tuple[str, str]:
    try:
        return OK, check()
    except CheckFailed as exc:
        return FAIL, str(exc)
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as exc:
        return FAIL, f"{type(exc).__name__}: {exc}"


#: Each check function and the table columns it fills.
CHECKS = (
    (celery, ("confirms", "bounded")),
    (black_hole, ("black-hole",)),
    (rotation, ("rotation-off",)),
    (pika_confirms, ("pika-confirms",)),
)


#: A hook line that says something was left out: shown under the table even when every check passed.
TROUBLE = re.compile(
    r"not found|could not|unknown|not (switched on|applied|guarded|printed|bounded)|hides|is off|ignoring"
)


def trouble(setup: Setup) -> list[str]:
    return [line for line in setup.said if TROUBLE.search(line)]


def run(setup: Setup) -> tuple[dict[str, str], dict[str, str]]:
    """Every check of one combination: (column -> ok/FAIL, column -> what was seen)."""
    results, details = {}, {}
    for check, columns in CHECKS:
        try:
            verdicts = check(setup)
        except (RuntimeError, OSError, subprocess.SubprocessError, CheckFailed) as exc:  # a vhost, the node
            verdicts = dict.fromkeys(columns, (FAIL, f"{type(exc).__name__}: {exc}"))
        for name, (verdict, detail) in verdicts.items():
            results[name], details[name] = verdict, detail
    return results, details
