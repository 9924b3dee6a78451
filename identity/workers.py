"""Several service processes on one machine (``workers`` above 1).

One Python process runs one event loop on one core at a time, so a service of one process
cannot use a machine's other cores. (On the two-core benchmark machine, where PostgreSQL and the
client share the cores, two workers raised the share of the cores used but also each update's
CPU, and the rate did not measurably change: README, *Benchmarks*.) So ``identity serve`` with
``workers = N`` becomes a supervisor:

1. it starts the embedded PostgreSQL when ``database.url`` is unset and applies migrations;
2. it binds the HTTP and MLLP listening sockets itself (port 0 picks one port for all);
3. it starts N worker processes (spawned, not forked), each a whole service over the shared
   sockets — its own event loop, database pool, MPI core and front doors — and waits until
   every one is ready before logging ``event=service_started``;
4. a worker that exits unexpectedly is started again; one that exits within
   ``_CRASH_WINDOW`` seconds of its start stops the whole service (a configuration or
   database problem, not a crash to retry forever);
5. on SIGTERM or SIGINT it asks each worker to stop (SIGTERM: in-flight messages are
   finished and answered), waits, then stops the embedded database.

Metrics: before the first worker starts the supervisor makes a directory of its own for this
run (``$TMPDIR/identity-metrics-<pid>-*``, removed when it stops; one left by a supervisor that
was killed is removed at the next start) and starts every worker with
``PROMETHEUS_MULTIPROC_DIR`` naming it: each worker keeps its metric values in files there, and
``GET /metrics``, whichever worker answers, sums them all (identity.metrics). A worker that
exits is marked dead there (its gauges leave the sums; its counts stay, as counters must).

The kernel hands each new connection to one worker; a connection stays with its worker (an
MLLP sender or HTTP keep-alive client is served by one process). Everything the workers share
lives in PostgreSQL: idempotency and locks, the outbox (each ITI-10 consumer is delivered to by
the one worker holding its advisory lock). What a worker keeps in memory is a cache (domains,
oversized blocking keys, term frequencies).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import Any

import asyncpg
from prometheus_client.multiprocess import mark_process_dead

from identity.config import Settings
from identity.errors import StoreUnavailable, WorkerFailed
from identity.logs import setup_logging
from identity.loop import run as run_loop
from identity.metrics import MULTIPROC_ENV
from identity.store.embedded import EmbeddedPostgres
from identity.store.migrate import migrate
from identity.tls import describe, server_context

log = logging.getLogger("identity.workers")

_CRASH_WINDOW = 10.0  # seconds: a worker that dies this soon after starting stops the service
_START_TIMEOUT = 120.0
_STOP_TIMEOUT = 30.0


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket, non-blocking, for the workers to share."""
    sock = socket.create_server((host, port), backlog=backlog, reuse_port=False)
    sock.setblocking(False)
    return sock


async def _stop_when_orphaned(supervisor: int) -> None:
    """Stop this worker (gracefully, as SIGTERM does) when its supervisor is gone, killed
    without the chance to stop it: a worker must not go on holding the service's ports."""
    while os.getppid() == supervisor:  # noqa: ASYNC110 (no event tells of a parent's death)
        await asyncio.sleep(1.0)
    log.error("event=supervisor_gone pid=%d", supervisor)
    os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(
    values: dict[str, Any],
    http: socket.socket,
    mllp: socket.socket,
    ready: ProcessEvent,
    supervisor: int,
) -> None:
    """A worker process: the whole service over the supervisor's sockets, with the
    supervisor's settings (as values: they are final, no file or environment is read again)."""
    settings = Settings.model_validate(values)
    setup_logging(settings.log_level, with_pid=True)

    async def main() -> None:
        from identity.app import serve

        started = asyncio.Event()
        watcher = asyncio.create_task(started.wait())
        watcher.add_done_callback(lambda task: None if task.cancelled() else ready.set())
        orphaned = asyncio.create_task(_stop_when_orphaned(supervisor))
        try:
            await serve(settings, ready=started, sockets=(http, mllp))
        finally:
            watcher.cancel()
            orphaned.cancel()

    try:
        run_loop(main(), settings.event_loop)
    except KeyboardInterrupt:
        pass


_METRICS_PREFIX = "identity-metrics-"


def _metrics_directory() -> str:
    """A new directory for this run's metric files, named after this process; those left by
    supervisors that were killed (their process gone) are removed first."""
    parent = tempfile.gettempdir()
    for entry in os.scandir(parent):
        if not entry.name.startswith(_METRICS_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        pid = entry.name[len(_METRICS_PREFIX):].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry.path, ignore_errors=True)
            log.info("event=stale_metrics_removed path=%s", entry.path)
    return tempfile.mkdtemp(prefix=f"{_METRICS_PREFIX}{os.getpid()}-", dir=parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment while a worker is spawned (a spawned
    process inherits it; the supervisor's own, perhaps a test's process, is left as it was)."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.process: SpawnProcess | None = None
        self.ready: ProcessEvent | None = None
        self.started_at = 0.0


async def supervise(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run ``settings.workers`` worker processes until SIGINT or SIGTERM (see the module)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    embedded: EmbeddedPostgres | None = None
    sockets: list[socket.socket] = []
    workers: list[_Worker] = []
    context = multiprocessing.get_context("spawn")
    metrics_dir: str | None = None
    try:
        # Each worker builds its own TLS contexts (an SSLContext does not cross processes);
        # building them here first makes a bad certificate or key a ConfigError at start-up.
        for door, tls in (("http", settings.http.tls), ("mllp", settings.mllp.tls)):
            if tls is not None:
                server_context(tls, door)
        url = settings.database.url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await embedded.start()
        try:
            conn = await asyncpg.connect(url)
        except (OSError, asyncpg.PostgresError) as exc:
            log.error("event=start_failed reason=%s", exc)
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        log.info("event=migrations_checked applied=%s", applied or "none")
        http = listen(settings.http.host, settings.http.port)
        mllp = listen(settings.mllp.host, settings.mllp.port)
        sockets = [http, mllp]
        child = settings.model_dump(mode="json")
        child["database"]["url"] = url
        metrics_dir = _metrics_directory()
        run_metrics = metrics_dir

        def start(worker: _Worker) -> None:
            worker.ready = context.Event()
            worker.process = context.Process(
                target=_worker_main,
                args=(child, http, mllp, worker.ready, os.getpid()),
                name=f"identity-worker-{worker.index}",
            )
            with _environment(MULTIPROC_ENV, run_metrics):
                worker.process.start()
            worker.started_at = time.monotonic()
            log.info("event=worker_started worker=%d pid=%s", worker.index, worker.process.pid)

        workers = [_Worker(i) for i in range(settings.workers)]
        for worker in workers:
            start(worker)
        await _until_ready(workers, stop)
        if stop.is_set():
            return
        log.info(
            "event=service_started workers=%d http=%s:%d mllp=%s:%d database=%s %s %s",
            len(workers),
            settings.http.host,
            http.getsockname()[1],
            settings.mllp.host,
            mllp.getsockname()[1],
            "embedded" if embedded else "external",
            describe(settings.http.tls, "http_"),
            describe(settings.mllp.tls, "mllp_"),
        )
        if ready is not None:
            ready.set()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
            for worker in workers:
                process = worker.process
                if stop.is_set() or process is None or process.is_alive():
                    continue
                lived = time.monotonic() - worker.started_at
                log.error("event=worker_exited worker=%d pid=%s code=%s seconds=%.1f",
                          worker.index, process.pid, process.exitcode, lived)
                mark_process_dead(process.pid, run_metrics)
                if lived < _CRASH_WINDOW:
                    raise WorkerFailed(
                        f"worker {worker.index} exited with code {process.exitcode} "
                        f"{lived:.1f} s after it started"
                    )
                start(worker)
        log.info("event=shutdown_requested")
    finally:
        # the handlers stay while the workers stop (they drain [http] drain_seconds): a second
        # signal must not kill the supervisor and orphan them
        await _stop_all(workers, settings.http.drain_seconds)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for sock in sockets:
            sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        if embedded is not None:
            await embedded.stop()
        log.info("event=service_stopped")


async def _until_ready(workers: list[_Worker], stop: asyncio.Event) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while not stop.is_set():
        if all(w.ready is not None and w.ready.is_set() for w in workers):
            return
        for worker in workers:
            if worker.process is not None and not worker.process.is_alive():
                raise WorkerFailed(
                    f"worker {worker.index} exited with code {worker.process.exitcode} "
                    "before it was ready"
                )
        if time.monotonic() > deadline:
            raise WorkerFailed(f"workers not ready after {_START_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)


async def _stop_all(workers: list[_Worker], drain: float = 0.0) -> None:
    """SIGTERM every worker (each drains ``drain`` seconds and stops gracefully), wait, then
    SIGKILL what is left."""
    running = [w.process for w in workers if w.process is not None and w.process.is_alive()]
    for process in running:
        if process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    await asyncio.to_thread(_join, running, _STOP_TIMEOUT + drain)
    for process in running:
        if process.is_alive():
            log.error("event=worker_killed pid=%s", process.pid)
            process.kill()
        process.join(1.0)


def _join(processes: list[SpawnProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
