"""Signals, drain and stop of ``plane-guard serve``: uvicorn's server and worker supervisor, adjusted.

When Kubernetes deletes a pod it removes it from the Service endpoints while the process keeps
running, and API servers keep sending on the keep-alive connections they already hold. So the
first SIGTERM does not stop the server: readiness turns false and every connection is closed
right after its next answer (``Connection: close``) for ``--drain-seconds``. Then uvicorn's
graceful shutdown runs: the listener closes, requests already begun are answered, idle
connections close. The process exits 0; uvicorn would re-raise the signal and die of it, which
skips everything after ``run`` (the log flush). A second SIGTERM, or SIGINT, ends the drain early.
SIGHUP reads the policy again without stopping; SIGINT and SIGQUIT stop without the drain.

With ``--workers`` > 1 the supervisor runs this server in every worker, passes the stop signal on
to each, replaces them one by one on SIGHUP, and reports a worker that died at error level before
it starts a new one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Generator
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from webhook.serve import decision_log
from webhook.serve.config import ServeConfig

#: What each signal does to a server process (one worker, or each worker of several).
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


class Server(uvicorn.Server):
    """uvicorn's server with a drain before its graceful shutdown, a policy reload on SIGHUP,
    and no re-raised signal.

    - SIGTERM: drain for ``--drain-seconds``, then stop gracefully (the Kubernetes stop).
    - SIGINT, SIGQUIT: stop gracefully now: requests under way are answered, up to
      ``--graceful-timeout``. A second one stops at once and says how many requests it cut.
    - SIGHUP: read the policy file again; a bad one is refused and the policy in use stays.
      Nothing stops, no connection closes. (Certificates reload by themselves.)
    """

    def __init__(self, config: ServeConfig):
        super().__init__(config)
        self.guard = config.guard
        self._drain_requested = False
        self._drain_until: float | None = None
        self._reload_requested = False
        self._stop_requested: int | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it only sets flags; on_tick acts on them inside the event loop.
        if sig == signal.SIGHUP:
            self._reload_requested = True
            return
        first_term = sig == signal.SIGTERM and not self._drain_requested and self._drain_until is None
        if first_term and self.guard.limits.drain_seconds > 0:
            self._drain_requested = True
            return
        if self.should_exit and sig in (signal.SIGINT, signal.SIGQUIT):
            self.force_exit = True
        elif sig != signal.SIGTERM or self._drain_until is not None:
            self._stop_requested = sig
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested:
            self._drain_requested = False
            guard = self.guard
            guard.begin_drain()
            self._drain_until = time.monotonic() + guard.limits.drain_seconds
            decision_log.LOG.info(
                "SIGTERM: draining; readiness is false and each connection closes after its next answer",
                extra={"fields": {"drain_seconds": guard.limits.drain_seconds}},
            )
        if self._reload_requested:
            self._reload_requested = False
            self._reload()
        if self._stop_requested is not None:
            sig, self._stop_requested = self._stop_requested, None
            decision_log.LOG.info(
                f"{signal.Signals(sig).name}: stopping; requests under way are answered first",
                extra={"fields": {"open_connections": len(self.guard.open), "graceful_timeout": self.config.timeout_graceful_shutdown}},
            )
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    def _reload(self) -> None:
        app = getattr(self.config, "webhook_app", None)
        if app is None:
            return
        digest, refused = app.reload_policy()
        if refused:
            decision_log.LOG.error(
                "SIGHUP: the policy file is not valid; the policy in use stays",
                extra={"fields": {"policy": digest, "problem": refused}},
            )
        else:
            decision_log.LOG.info("SIGHUP: policy read again", extra={"fields": {"policy": digest}})

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.guard.begin_stop()
        await super().shutdown(sockets)
        cut = sum(1 for c in self.guard.open if c.cycle is not None and not c.cycle.response_complete)
        if cut:
            decision_log.LOG.warning(
                "stopped with requests under way: they get no answer (a second SIGINT or SIGQUIT, or --graceful-timeout passed)",
                extra={"fields": {"requests_cut": cut}},
            )


class Worker(Process):
    """A worker process that runs ``Server``."""

    @property
    def server(self) -> Server:
        if self._server is None:
            assert isinstance(self.config, ServeConfig)
            self._server = Server(config=self.config)
        return self._server  # type: ignore[return-value]


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, starting ``Worker`` processes and reporting deaths as errors."""

    stop_signal = signal.SIGTERM

    def handle_int(self) -> None:
        self._stop_with(signal.SIGINT)

    def handle_quit(self) -> None:
        self._stop_with(signal.SIGQUIT)

    def handle_term(self) -> None:
        self._stop_with(signal.SIGTERM)

    def _stop_with(self, sig: signal.Signals) -> None:
        """Each worker gets the same signal and stops as a one-process server would."""
        decision_log.LOG.info(f"{sig.name}: stopping the worker processes with {sig.name}")
        self.stop_signal = sig
        self.should_exit.set()

    def terminate_all(self) -> None:
        for worker in self.processes:
            if worker.process.exitcode is None and worker.pid is not None:
                os.kill(worker.pid, self.stop_signal)

    def handle_hup(self) -> None:
        decision_log.LOG.info("SIGHUP: replacing the worker processes one at a time (policy and certificates read again)")
        self.restart_all()

    def _start_worker(self) -> Worker:
        worker = Worker(self.config, self.sockets)
        worker.start()
        return worker

    def init_processes(self) -> None:
        self.processes.extend(self._start_worker() for _ in range(self.processes_num))

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, worker in enumerate(self.processes):
            if worker.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            worker.kill()  # it may be hung rather than dead
            worker.join()
            if self.should_exit.is_set():
                return
            fields = {"pid": worker.pid, "exit_code": worker.exitcode}
            if worker.exitcode == STARTUP_FAILURE:
                decision_log.LOG.error("a worker process could not start; stopping", extra={"fields": fields})
                self.should_exit.set()
                return
            decision_log.LOG.error("a worker process died; starting a new one", extra={"fields": fields})
            self.processes[index] = self._start_worker()

    def restart_all(self) -> None:
        """SIGHUP: replace the workers one at a time, each new one ready before the old one stops."""
        for index, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start_worker()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                decision_log.LOG.error("a new worker process was not ready in time; keeping the old ones")
                return
            old.terminate()
            old.join()
            self.processes[index] = new

    def handle_ttin(self) -> None:
        self.processes_num += 1
        self.processes.append(self._start_worker())
