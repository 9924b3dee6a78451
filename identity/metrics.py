"""Prometheus metrics (``GET /metrics``) and what they are read from (docs/operations.md,
*Metrics and health*).

Two kinds of metric:

- **Events of a process** (messages, requests, latencies, match decisions, the pool): counters,
  histograms and gauges of prometheus-client, module-level, updated where the event happens.
  With ``workers = N`` the supervisor (identity.workers) gives every worker one directory in
  ``PROMETHEUS_MULTIPROC_DIR`` before it starts: prometheus-client then keeps each value in a
  file per process, and a scrape, whichever worker answers it, sums every process's files
  (``MultiProcessCollector``). Without workers the values are in memory.
- **Facts of the database** (review queue, outbox backlogs, calibration runs): read at scrape
  time by the worker answering it (:class:`DatabaseFacts`; a few indexed queries, kept for
  ``FACTS_TTL`` seconds), so that N workers do not report N copies of one fact.

Labels are few and bounded: a message type the door supports or ``other``, an acknowledgment
code, a FHIR route's transaction, a status class, a decision, an outbox topic. Never patient
data, identifiers or raw paths.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from identity.model import Decision
from identity.store import db as db_module
from identity.store.calibration import CalibrationQueries
from identity.store.db import Database
from identity.store.outbox import OutboxStore
from identity.store.repository import Repository

log = logging.getLogger("identity.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
FACTS_TTL = 5.0
"""Seconds a scrape's database facts are kept for the next scrapes of the same worker."""
OUTBOX_COUNT_CAP = 100_000
"""A topic's undelivered rows are counted up to this many (identity_outbox_pending_rows)."""
POOL_INTERVAL = 2.0
"""Seconds between two samples of a worker's pool (the other workers' gauges are this old)."""

# Latencies of one message or request: from under a millisecond (a PIX query) to seconds (a
# PMIR bundle, a slow disk).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HL7_MESSAGES = Counter(
    "identity_hl7_messages",
    "HL7 v2 messages answered over MLLP, by message type (MSH-9) and acknowledgment code.",
    ["message_type", "ack_code"],
)
HL7_DURATION = Histogram(
    "identity_hl7_message_duration_seconds",
    "Time from a whole HL7 v2 message read to its reply ready, by message type (MSH-9).",
    ["message_type"],
    buckets=_BUCKETS,
)
FHIR_REQUESTS = Counter(
    "identity_fhir_requests",
    "FHIR requests answered, by transaction or interaction (of the route) and status class.",
    ["transaction", "status_class"],
)
FHIR_DURATION = Histogram(
    "identity_fhir_request_duration_seconds",
    "Time from a FHIR request's headers read to its response ready, by transaction.",
    ["transaction"],
    buckets=_BUCKETS,
)
MATCH_DECISIONS = Counter(
    "identity_match_decisions",
    "Registrations (new or changed source records) by what matching decided.",
    ["decision"],
)
POOL_CONNECTIONS = Gauge(
    "identity_db_pool_connections",
    "Database pool connections, by state: open (idle or in use), in_use, max (the size it may "
    "grow to); summed over live worker processes.",
    ["state"],
    multiprocess_mode="livesum",
)
DB_READS = Counter(
    "identity_db_reads",
    "Queries of the doors (PIX, PDQ, FHIR read and search, $match) with [database] "
    "replica_url set, by the server that answered them: replica or primary (the replica "
    "behind the caller's own change, lagging, or unavailable).",
    ["server"],
)
_DB_READ_CHILDREN = {server: DB_READS.labels(server) for server in ("replica", "primary")}


def observe_read(server: str) -> None:
    _DB_READ_CHILDREN[server].inc()


db_module.read_observer = observe_read


def multiprocess_dir() -> str | None:
    """The directory of this service's per-process metric files, when this process keeps its
    values there (it was started with PROMETHEUS_MULTIPROC_DIR set); else None."""
    path = os.environ.get(MULTIPROC_ENV)
    if not path or values.ValueClass is values.MutexValue:
        return None
    return path


# --- the doors ------------------------------------------------------------------------------

_ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})


def ack_code(reply: bytes) -> str:
    """MSA-1 of a reply the door built (``MSH|...\\rMSA|AA|...``); ``none`` if it has none."""
    sep = reply[3:4]
    at = reply.find(b"\rMSA" + sep)
    if not sep or at < 0:
        return "none"
    start = at + 5
    code = reply[start : start + 2].decode("ascii", "replace")
    return code if code in _ACK_CODES else "none"


# Each label set's children, looked up once (``labels()`` takes a lock and builds a key on
# every call); as bounded as the labels.
_HL7_CHILDREN: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
_FHIR_CHILDREN: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
_DECISION_CHILDREN = {decision: MATCH_DECISIONS.labels(decision.value) for decision in Decision}
"""Every decision, present from the start (0 until it happens)."""


def observe_hl7(message_type: str, reply: bytes, seconds: float) -> None:
    key = (message_type, ack_code(reply))
    children = _HL7_CHILDREN.get(key)
    if children is None:
        children = _HL7_CHILDREN[key] = (HL7_MESSAGES.labels(*key),
                                         HL7_DURATION.labels(message_type))
    children[0].inc()
    children[1].observe(seconds)


def observe_fhir(transaction: str, status: int, seconds: float) -> None:
    key = (transaction, f"{status // 100}xx")
    children = _FHIR_CHILDREN.get(key)
    if children is None:
        children = _FHIR_CHILDREN[key] = (FHIR_REQUESTS.labels(*key),
                                          FHIR_DURATION.labels(transaction))
    children[0].inc()
    children[1].observe(seconds)


def observe_decision(decision: Decision) -> None:
    _DECISION_CHILDREN[decision].inc()


FHIR_PREFIX = "/fhir"

_FHIR_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/fhir/metadata"): "capabilities",
    ("GET", "/fhir/Patient/$ihe-pix"): "ITI-83",
    ("POST", "/fhir/Patient/$ihe-pix"): "ITI-83",
    ("POST", "/fhir/Patient/$match"): "ITI-119",
    ("GET", "/fhir/Patient"): "ITI-78",
    ("POST", "/fhir/Patient/_search"): "ITI-78",
    ("GET", "/fhir/Patient/{id}"): "read",
    ("GET", "/fhir/Patient/{id}/_history"): "history",
    ("GET", "/fhir/Patient/{id}/_history/{vid}"): "vread",
    ("PUT", "/fhir/Patient"): "ITI-104",
    ("DELETE", "/fhir/Patient"): "conditional-delete",
    ("POST", "/fhir/Patient"): "create",
    ("PUT", "/fhir/Patient/{id}"): "update",
    ("DELETE", "/fhir/Patient/{id}"): "delete",
    ("POST", "/fhir/$process-message"): "ITI-93",
    ("POST", "/fhir/Bundle"): "ITI-93",
    ("POST", "/fhir/"): "bundle",
    ("POST", "/fhir"): "bundle",
    ("GET", "/fhir/AuditEvent"): "audit-search",
    ("GET", "/fhir/AuditEvent/{id}"): "audit-read",
}


def fhir_transaction(request: web.Request) -> str:
    """The label of a FHIR request: its route's transaction or interaction (a route not named
    above: its method and route pattern, as bounded as the routes); ``unmatched`` when no
    route matched (404, 405)."""
    info = request.match_info
    if info.http_exception is not None:
        return "unmatched"
    resource = info.route.resource
    canonical = resource.canonical if resource is not None else ""
    method = "GET" if request.method == "HEAD" else request.method
    return _FHIR_ROUTES.get((method, canonical)) or f"{method} {canonical}"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def http_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts and times every request under /fhir (the parent application's middleware, so
    that it sees the status the FHIR door's own middleware answered with)."""
    if not request.path.startswith(FHIR_PREFIX):
        return await handler(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        observe_fhir(fhir_transaction(request), status, time.perf_counter() - started)


# --- the pool -------------------------------------------------------------------------------


def sample_pool(db: Database) -> None:
    pool = db.pool
    size = pool.get_size()
    POOL_CONNECTIONS.labels("open").set(size)
    POOL_CONNECTIONS.labels("in_use").set(size - pool.get_idle_size())
    POOL_CONNECTIONS.labels("max").set(pool.get_max_size())


async def watch_pool(db: Database, interval: float = POOL_INTERVAL) -> None:
    """Sample the pool every ``interval`` seconds until cancelled (each worker its own)."""
    while True:
        try:
            sample_pool(db)
        except Exception:  # noqa: BLE001 - a closed pool: the service is stopping
            log.debug("event=pool_sample_failed", exc_info=True)
        await asyncio.sleep(interval)


# --- the database's facts -------------------------------------------------------------------


def _timestamp(at: datetime | None) -> float:
    return at.timestamp() if at is not None else 0.0


class DatabaseFacts:
    """The review queue, the outbox backlogs and the calibration runs, read from the database
    by the worker a scrape reaches; kept ``ttl`` seconds (scrapes in between reuse them)."""

    def __init__(self, db: Database, topics: Iterable[str], timeout: float,
                 ttl: float = FACTS_TTL) -> None:  # fmt: skip
        self.db = db
        self.topics = tuple(topics)
        """Topics reported even when nothing is pending (0): those a consumer delivers."""
        self.timeout = timeout
        self.ttl = ttl
        self._families: list[Metric] = []
        self._at = -float("inf")
        self._lock = asyncio.Lock()

    async def families(self) -> list[Metric]:
        async with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._at >= self.ttl:
                self._families = await self._read()
                self._at = time.monotonic()
            return self._families

    async def _read(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "identity_database_facts_up",
            "1 when the last read of the database's facts (review queue, outbox, calibration) "
            "succeeded, else 0 (and those metrics are absent).",
        )
        try:
            async with asyncio.timeout(self.timeout):
                async with self.db.read() as conn:
                    queue = await Repository(conn).open_review_facets()
                    backlogs = await OutboxStore(conn).backlogs(OUTBOX_COUNT_CAP)
                    runs, last, active, active_at = await CalibrationQueries(conn).runs()
        except Exception as exc:  # noqa: BLE001 - a scrape reports it, the service goes on
            log.warning("event=metrics_database_facts_failed error=%s", type(exc).__name__)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        now = time.time()
        items = GaugeMetricFamily("identity_review_queue_items",
                                  "Open review items (the steward's queue).")
        items.add_metric([], queue.size)
        oldest = GaugeMetricFamily(
            "identity_review_queue_oldest_age_seconds",
            "Age of the oldest open review item (0: the queue is empty).")
        oldest.add_metric([], max(0.0, now - queue.oldest.timestamp()) if queue.oldest else 0.0)
        pending = GaugeMetricFamily(
            "identity_outbox_pending_rows",
            f"Undelivered outbox rows per topic (counted up to {OUTBOX_COUNT_CAP}).",
            labels=["topic"])
        age = GaugeMetricFamily(
            "identity_outbox_oldest_pending_age_seconds",
            "Age of the oldest undelivered outbox row per topic (0: none).", labels=["topic"])
        seen = set()
        for backlog in backlogs:
            seen.add(backlog.topic)
            pending.add_metric([backlog.topic], backlog.pending)
            age.add_metric([backlog.topic], max(0.0, now - _timestamp(backlog.oldest))
                           if backlog.oldest else 0.0)
        for topic in self.topics:
            if topic not in seen:
                pending.add_metric([topic], 0)
                age.add_metric([topic], 0.0)
        calibrations = CounterMetricFamily(
            "identity_calibration_runs",
            "Calibration runs: match model versions stored (scheduled or `identity calibrate`).",
        )
        calibrations.add_metric([], runs)
        last_run = GaugeMetricFamily(
            "identity_calibration_last_run_timestamp_seconds",
            "Unix time of the newest calibration run (0: none).")
        last_run.add_metric([], _timestamp(last))
        active_version = GaugeMetricFamily(
            "identity_calibration_active_model_version",
            "The match model version in service (0: none, the configured model file).")
        active_version.add_metric([], active or 0)
        active_time = GaugeMetricFamily(
            "identity_calibration_active_model_timestamp_seconds",
            "Unix time the model version in service was made by its calibration run (0: none).")
        active_time.add_metric([], _timestamp(active_at))
        return [up, items, oldest, pending, age, calibrations, last_run, active_version,
                active_time]


class _Families:
    """A collector of families read beforehand (a registry's collectors are synchronous)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self._families


class _Forward:
    """The process-wide registry's metrics (one process: in memory, with process_* too)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


async def exposition(db: Database | None, facts: DatabaseFacts | None) -> bytes:
    """The text exposition of a scrape: every process's metrics and the database's facts."""
    if db is not None:
        try:
            sample_pool(db)  # this worker's pool as of now
        except Exception:  # noqa: BLE001
            log.debug("event=pool_sample_failed", exc_info=True)
    registry = CollectorRegistry(auto_describe=False)
    path = multiprocess_dir()
    if path is not None:
        MultiProcessCollector(registry, path)
    else:
        registry.register(_Forward())
    if facts is not None:
        registry.register(_Families(await facts.families()))
    return generate_latest(registry)


CONTENT_TYPE = CONTENT_TYPE_LATEST
