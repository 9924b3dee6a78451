"""Builds the service from Settings: database (embedded or external), migrations, MPI core and
front doors; starts them in order and stops them in reverse on shutdown.

The pieces follow aiohttp's own split: the Application holds routes, an AppRunner and a
TCPSite serve it; every resource that lives as long as the service is opened in ``start`` and
closed in ``stop``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from identity import __version__, metrics
from identity.audit.deliver import AuditDelivery, audit_delivery
from identity.audit.record import AUDIT_TOPIC
from identity.calibration import CalibrationSchedule
from identity.config import Settings
from identity.errors import StoreUnavailable
from identity.fhir import add_routes as add_fhir_routes
from identity.hl7v2.service import Hl7Service
from identity.logs import quiet_bad_requests
from identity.loop import loop_name, settle_heap
from identity.maintenance import MaintenanceSchedule
from identity.mpi import Mpi
from identity.mpi.uow import notify_topic
from identity.steward import add_routes as add_steward_routes
from identity.store.db import Database
from identity.store.embedded import EmbeddedPostgres
from identity.store.migrate import migrate, pending_versions
from identity.tls import describe, server_context

log = logging.getLogger("identity.app")

MPI_KEY = web.AppKey("mpi", Mpi)


async def open_database(settings: Settings) -> tuple[Database, EmbeddedPostgres | None]:
    """Connect to ``database.url``, or start the embedded server when it is unset."""
    embedded = None
    url = settings.database.url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = await embedded.start()
    try:
        db = await Database.connect(
            url,
            min_size=settings.database.min_connections,
            max_size=settings.database.max_connections,
            command_timeout=settings.database.command_timeout,
            replica_url=settings.database.replica_url,
            replica_max_lag=settings.database.replica_max_lag,
            replica_max_connections=settings.database.replica_max_connections,
        )
    except BaseException:
        if embedded is not None:
            await embedded.stop()
        raise
    return db, embedded


@asynccontextmanager
async def migrated_database(settings: Settings) -> AsyncIterator[tuple[Database, list[int]]]:
    """The database (embedded when database.url is unset) with migrations applied, and the
    versions applied now, for commands that run and exit; closed (and the embedded server
    stopped) afterwards."""
    db, embedded = await open_database(settings)
    try:
        async with db.connection() as conn:
            applied = await migrate(conn)
        yield db, applied
    finally:
        await db.close()
        if embedded is not None:
            await embedded.stop()


@dataclass
class Service:
    settings: Settings
    sockets: tuple[socket.socket, socket.socket] | None = None
    """Listening sockets (HTTP, MLLP) to serve instead of binding settings.http and .mllp: a
    worker process of several (identity.workers)."""
    db: Database | None = None
    embedded: EmbeddedPostgres | None = None
    mpi: Mpi | None = None
    http_runner: web.AppRunner | None = None
    http_port: int | None = None
    hl7: Hl7Service | None = None
    schedule: CalibrationSchedule | None = None
    maintenance: MaintenanceSchedule | None = None
    audit_delivery: AuditDelivery | None = None
    facts: metrics.DatabaseFacts | None = None
    draining: bool = False
    """Set when the service has been asked to stop: /readyz answers 503 from then on."""
    _pool_watch: asyncio.Task[None] | None = field(default=None, repr=False)
    _stopping: bool = field(default=False, repr=False)

    async def start(self) -> None:
        self.db, self.embedded = await open_database(self.settings)
        try:
            async with self.db.connection() as conn:
                applied = await migrate(conn)
            log.info("event=migrations_checked applied=%s", applied or "none")
            self.mpi = Mpi(self.db, self.settings)
            await self.mpi.start()
            await self.mpi.follow_models()
            self.schedule = CalibrationSchedule(self.mpi)
            self.schedule.start()
            self.maintenance = MaintenanceSchedule(
                self.db, self.settings.maintenance, outbox_consumers(self.settings))
            self.maintenance.start()
            self.hl7 = Hl7Service(
                self.mpi, self.db, self.settings, self.sockets[1] if self.sockets else None
            )
            await self.hl7.start()
            self.audit_delivery = audit_delivery(self.db, self.settings)
            if self.audit_delivery is not None:
                self.audit_delivery.start()
            self._pool_watch = asyncio.create_task(metrics.watch_pool(self.db))
            await self._start_http()
            frozen, collect_ms = settle_heap()
            log.debug("event=heap_settled frozen=%d collect_ms=%.1f", frozen, collect_ms)
        except BaseException:
            await self.stop()
            raise
        log.info(
            "event=%s version=%s http=%s:%s mllp=%s:%s database=%s loop=%s %s %s",
            "worker_ready" if self.sockets is not None else "service_started",
            __version__,
            self.settings.http.host,
            self.http_port,
            self.settings.mllp.host,
            self.hl7.port if self.hl7 else None,
            "embedded" if self.embedded else "external",
            loop_name(asyncio.get_running_loop()),
            describe(self.settings.http.tls, "http_"),
            describe(self.settings.mllp.tls, "mllp_"),
        )

    async def _start_http(self) -> None:
        quiet_bad_requests()  # no request bytes (tokens) in aiohttp's parse errors
        app = web.Application(
            client_max_size=self.settings.http.max_body_bytes,
            middlewares=[metrics.http_middleware],
        )
        app[SERVICE_KEY] = self
        assert self.mpi is not None and self.db is not None
        app[MPI_KEY] = self.mpi
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        if self.settings.http.metrics:
            self.facts = metrics.DatabaseFacts(
                self.db, outbox_consumers(self.settings),
                min(self.settings.http.request_timeout, 10.0),  # Prometheus's scrape timeout
            )
            app.router.add_get("/metrics", metrics_handler)
        add_fhir_routes(app, self.mpi, self.settings)
        add_steward_routes(app, self.mpi, self.settings)
        # keepalive_timeout: aiohttp closes a connection that has not sent a whole request for
        # this long (idle, or sending its headers slowly); its header limits stay aiohttp's
        # (docs/operations.md, *Limits*). The request deadline is the FHIR door's middleware.
        self.http_runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=10.0,
            keepalive_timeout=self.settings.http.idle_timeout,
        )
        await self.http_runner.setup()
        tls = self.settings.http.tls
        context = server_context(tls, "http") if tls is not None else None
        site: web.BaseSite
        if self.sockets is not None:
            site = web.SockSite(self.http_runner, self.sockets[0], ssl_context=context)
        else:
            site = web.TCPSite(
                self.http_runner,
                self.settings.http.host,
                self.settings.http.port,
                ssl_context=context,
            )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.settings.http.port

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, close the pool, stop the database."""
        if self._stopping:
            return
        self._stopping = True
        self.draining = True
        if self.http_runner is not None:
            await self.http_runner.cleanup()
            self.http_runner = None
        if self.hl7 is not None:
            await self.hl7.stop()
            self.hl7 = None
        if self.schedule is not None:
            await self.schedule.stop()
            self.schedule = None
        if self.maintenance is not None:
            await self.maintenance.stop()
            self.maintenance = None
        if self.mpi is not None:
            await self.mpi.stop()  # writes the audit records still queued
        if self.audit_delivery is not None:
            await self.audit_delivery.stop()
            self.audit_delivery = None
        if self._pool_watch is not None:
            self._pool_watch.cancel()
            await asyncio.gather(self._pool_watch, return_exceptions=True)
            self._pool_watch = None
        if self.db is not None:
            await self.db.close()
            self.db = None
        if self.embedded is not None:
            await self.embedded.stop()
            self.embedded = None
        gc.unfreeze()  # what start froze may be collected again (a test runs several services)
        log.info("event=service_stopped")


SERVICE_KEY = web.AppKey("service", Service)


async def healthz(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    db = service.db
    limit = service.settings.http.request_timeout
    try:
        async with asyncio.timeout(limit):
            ok, detail = (False, "not connected") if db is None else await db.healthy()
    except TimeoutError:
        ok, detail = False, f"no answer within {limit:g} s ([http] request_timeout)"
    body = {
        "status": "ok" if ok else "unavailable",
        "version": __version__,
        "process": os.getpid(),
        "database": {
            "ok": ok,
            "mode": "embedded" if service.embedded else "external",
            "detail": detail if not ok else None,
            "server_version": detail if ok else None,
        },
    }
    return web.json_response(body, status=200 if ok else 503)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: the database answers, every migration this release knows is applied, and
    the service is not draining (asked to stop). 503 names the checks that failed."""
    service = request.app[SERVICE_KEY]
    db = service.db
    limit = service.settings.http.request_timeout
    checks: dict[str, dict[str, object]] = {}
    checks["draining"] = {"ok": not service.draining}
    try:
        async with asyncio.timeout(limit):
            if db is None:
                raise StoreUnavailable("not connected")
            async with db.read() as conn:
                pending = await pending_versions(conn)
        checks["database"] = {"ok": True}
        checks["migrations"] = {"ok": not pending, "pending": pending}
    except TimeoutError:
        checks["database"] = {"ok": False,
                              "detail": f"no answer within {limit:g} s ([http] request_timeout)"}
    except Exception as exc:  # noqa: BLE001 - readiness reports any failure as text
        checks["database"] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    if not checks["database"]["ok"]:
        checks["migrations"] = {"ok": False, "detail": "database unavailable"}
    failed = [name for name, check in checks.items() if not check["ok"]]
    body = {
        "status": "not ready" if failed else "ready",
        "failed": failed,
        "checks": checks,
        "process": os.getpid(),
    }
    return web.json_response(body, status=503 if failed else 200)


async def metrics_handler(request: web.Request) -> web.Response:
    """Prometheus text exposition: every worker's counters and histograms, the database's
    facts (identity.metrics)."""
    service = request.app[SERVICE_KEY]
    body = await metrics.exposition(service.db, service.facts)
    return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})


def outbox_consumers(settings: Settings) -> list[str]:
    """The outbox topics a worker of this service delivers (ITI-10 consumers, syslog audit)."""
    topics = [notify_topic(n.name) for n in settings.notify]
    if settings.audit.syslog is not None:
        topics.append(AUDIT_TOPIC)
    return topics


async def serve(
    settings: Settings,
    *,
    ready: asyncio.Event | None = None,
    sockets: tuple[socket.socket, socket.socket] | None = None,
) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully. With ``workers`` above 1 this
    process supervises that many worker processes (identity.workers)."""
    if settings.workers > 1 and sockets is None:
        from identity.workers import supervise

        await supervise(settings, ready=ready)
        return
    service = Service(settings, sockets)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await service.start()
        except StoreUnavailable as exc:
            log.error("event=start_failed reason=%s", exc)
            raise
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("event=shutdown_requested")
        drain = settings.http.drain_seconds
        if drain > 0:
            # /readyz answers 503 while both doors go on serving, so that a load balancer
            # takes this instance out before it stops accepting; a second signal cuts it short
            service.draining = True
            log.info("event=draining seconds=%g", drain)
            stop.clear()
            try:
                await asyncio.wait_for(stop.wait(), drain)
            except TimeoutError:
                pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await service.stop()
