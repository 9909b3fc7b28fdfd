"""Drain and stop ``plane-guard serve``: uvicorn's server and worker supervisor, adjusted.

When Kubernetes deletes a pod it removes it from the Service endpoints while the process keeps
running, and API servers keep sending on the keep-alive connections they already hold. So the
first SIGTERM does not stop the server: readiness turns false and every connection is closed
right after its next answer (``Connection: close``) for ``--drain-seconds``. Then uvicorn's
graceful shutdown runs: the listener closes, requests already begun are answered, idle
connections close. The process exits 0; uvicorn would re-raise the signal and die of it, which
skips everything after ``run`` (the log flush). A second SIGTERM, or SIGINT, ends the drain early.

With ``--workers`` > 1 the supervisor runs this server in every worker and reports a worker that
died at error level before it starts a new one.
"""

from __future__ import annotations

import signal
import socket
import time
from types import FrameType

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from webhook.serve import connections, decision_log


class Server(uvicorn.Server):
    """uvicorn's server with a drain before its graceful shutdown, and no re-raised signal."""

    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self._drain_requested = False
        self._drain_until: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it only sets flags; on_tick acts on them inside the event loop.
        first_term = sig == signal.SIGTERM and not self._drain_requested and self._drain_until is None
        if first_term and connections.current().limits.drain_seconds > 0:
            self._drain_requested = True
            return
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested:
            self._drain_requested = False
            guard = connections.current()
            guard.begin_drain()
            self._drain_until = time.monotonic() + guard.limits.drain_seconds
            decision_log.LOG.info(
                "SIGTERM: draining; readiness is false and each connection closes after its next answer",
                extra={"fields": {"drain_seconds": guard.limits.drain_seconds}},
            )
        if self._drain_until is not None and time.monotonic() >= self._drain_until:
            self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        connections.current().begin_stop()
        await super().shutdown(sockets)


class Worker(Process):
    """A worker process that runs ``Server``."""

    @property
    def server(self) -> Server:
        if self._server is None:
            self._server = Server(config=self.config)
        return self._server  # type: ignore[return-value]


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, starting ``Worker`` processes and reporting deaths as errors."""

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
