"""The service's self-maintenance (``[maintenance]``, docs/operations.md *Self-maintenance*).

Two tasks, each run by one worker at a time across processes (a session advisory lock, as
the scheduled calibration takes):

**Statistics**, every ``analyze_interval`` seconds: the planner's statistics of a table that
changed by more than ``analyze_fraction`` of its rows (plus ``analyze_min_rows``) since its last
ANALYZE are refreshed. The counts are PostgreSQL's own (``pg_stat_user_tables``), kept whether
autovacuum is on or off, and any ANALYZE resets them — autovacuum's, an operator's or this
task's — so with autovacuum on this task finds little to do. The registration functions are
planned from these statistics (docs/design/registration.md, *Statistics and autovacuum*): an
index filled from empty on a server with autovacuum off slowed to a tenth of its rate before.
With ``vacuum = "auto"`` and the server's autovacuum off it also VACUUMs (never FULL) a table
whose dead rows or rows inserted since its last VACUUM exceed ``vacuum_fraction`` of it: dead
rows (outbox deliveries, retention's deletions, updated persons and links) are reclaimed and
the visibility map kept for index-only scans.

**Retention**, every ``retention_interval`` seconds: delivered outbox rows, undelivered rows
of topics no worker of this configuration delivers, stored replies (``processed_message``) and
history (moved to ``history_archive``), each past its age in days (0: kept), deleted in
batches of ``batch_rows``, each batch its own transaction.

Each run that did something logs one line (``event=maintenance_statistics`` or
``event=maintenance_retention``) with table names and counts only; a run with nothing to do
logs at DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from identity.config import MaintenanceSettings
from identity.store.db import Database
from identity.store.maintenance import MaintenanceQueries, TableStats

log = logging.getLogger("identity.maintenance")

__all__ = ["MaintenanceSchedule", "RetentionRun", "StatisticsRun", "apply_retention",
           "needs_analyze", "needs_vacuum", "refresh_statistics"]


def needs_analyze(table: TableStats, settings: MaintenanceSettings) -> bool:
    """Rows changed since the last ANALYZE exceed ``analyze_min_rows`` plus
    ``analyze_fraction`` of the rows then (none when never analysed)."""
    return table.modified > (settings.analyze_min_rows
                             + settings.analyze_fraction * max(table.analyzed_rows, 0.0))


def needs_vacuum(table: TableStats, settings: MaintenanceSettings) -> bool:
    """Dead rows, or rows inserted since the last VACUUM, exceed ``analyze_min_rows`` plus
    ``vacuum_fraction`` of the table."""
    limit = settings.analyze_min_rows + settings.vacuum_fraction * max(table.live, 0)
    return table.dead > limit or table.inserted_since_vacuum > limit


@dataclass
class StatisticsRun:
    analyzed: list[str] = field(default_factory=list)
    vacuumed: list[str] = field(default_factory=list)
    tables: int = 0
    vacuum: bool = False
    """Whether VACUUM was considered (``vacuum`` and the server's autovacuum)."""
    seconds: float = 0.0


@dataclass
class RetentionRun:
    outbox_delivered: int = 0
    outbox_unconsumed: dict[str, int] = field(default_factory=dict)
    processed_message: int = 0
    history_archived: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return (self.outbox_delivered + sum(self.outbox_unconsumed.values())
                + self.processed_message + self.history_archived)


async def refresh_statistics(db: Database, settings: MaintenanceSettings) -> StatisticsRun | None:
    """One statistics run; None when another worker is at it."""
    async with db.connection(detached=True) as conn:
        queries = MaintenanceQueries(conn)
        if not await queries.try_lock("statistics"):
            return None
        try:
            started = time.monotonic()
            run = StatisticsRun()
            run.vacuum = settings.vacuum == "always" or (
                settings.vacuum == "auto" and not await queries.autovacuum_on())
            tables = await queries.table_stats()
            run.tables = len(tables)
            for table in tables:
                if run.vacuum and needs_vacuum(table, settings):
                    # VACUUM sets reltuples and the visibility map, not the statistics
                    await queries.vacuum(table.name)
                    run.vacuumed.append(table.name)
                if needs_analyze(table, settings):
                    await queries.analyze(table.name)
                    run.analyzed.append(table.name)
            run.seconds = time.monotonic() - started
        finally:
            await queries.unlock("statistics")
    level = logging.INFO if run.analyzed or run.vacuumed else logging.DEBUG
    log.log(level, "event=maintenance_statistics tables=%d analyzed=%s vacuumed=%s vacuum=%s "
            "seconds=%.2f", run.tables, ",".join(run.analyzed) or "-",
            ",".join(run.vacuumed) or "-", "on" if run.vacuum else "off", run.seconds)
    return run


async def apply_retention(
    db: Database, settings: MaintenanceSettings, consumers: Iterable[str]
) -> RetentionRun | None:
    """One retention run; None when another worker is at it. ``consumers``: the outbox topics
    the workers of this configuration deliver (identity.app.outbox_consumers)."""
    consumed = set(consumers)
    if settings.write_unconsumed_topics:
        from identity.mpi.uow import CHANGED_TOPIC, UPDATED_TOPIC

        consumed |= {CHANGED_TOPIC, UPDATED_TOPIC}  # written for a reader outside the service
    batch = settings.batch_rows
    async with db.connection(detached=True) as conn:
        queries = MaintenanceQueries(conn)
        if not await queries.try_lock("retention"):
            return None
        try:
            started = time.monotonic()
            run = RetentionRun()
            if settings.outbox_delivered_days:
                run.outbox_delivered = await queries.delete_delivered_outbox(
                    settings.outbox_delivered_days, batch)
            if settings.outbox_unconsumed_days:
                for topic in await queries.pending_topics():
                    if topic not in consumed:
                        deleted = await queries.delete_undelivered(
                            topic, settings.outbox_unconsumed_days, batch)
                        if deleted:
                            run.outbox_unconsumed[topic] = deleted
            if settings.processed_message_days:
                run.processed_message = await queries.delete_processed_messages(
                    settings.processed_message_days, batch)
            if settings.history_retention_days:
                run.history_archived = await queries.archive_history(
                    settings.history_retention_days, batch)
            run.seconds = time.monotonic() - started
        finally:
            await queries.unlock("retention")
    log.log(
        logging.INFO if run.rows else logging.DEBUG,
        "event=maintenance_retention outbox_delivered=%d outbox_unconsumed=%s "
        "processed_message=%d history_archived=%d seconds=%.2f",
        run.outbox_delivered,
        ",".join(f"{t}:{n}" for t, n in sorted(run.outbox_unconsumed.items())) or "0",
        run.processed_message, run.history_archived, run.seconds,
    )
    return run


class MaintenanceSchedule:
    """Both tasks on their intervals, in every worker (the locks let one run each at a time);
    a failed run is logged and tried again at the next interval."""

    def __init__(self, db: Database, settings: MaintenanceSettings, consumers: Iterable[str],
                 *, first: float | None = None) -> None:
        self.db = db
        self.settings = settings
        self.consumers = list(consumers)
        self.first = first
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.settings.enabled:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        first = settings.analyze_interval if self.first is None else self.first
        next_statistics = loop.time() + first
        next_retention = loop.time() + first
        while True:
            await asyncio.sleep(max(0.0, min(next_statistics, next_retention) - loop.time()))
            now = loop.time()
            if now >= next_statistics:
                next_statistics = now + settings.analyze_interval
                await self._run("statistics", refresh_statistics(self.db, settings))
            if now >= next_retention:
                next_retention = now + settings.retention_interval
                await self._run("retention",
                                apply_retention(self.db, settings, self.consumers))

    async def _run(self, task: str, run: object) -> None:
        try:
            await run  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed run is logged and tried again next interval
            log.exception("event=maintenance_failed task=%s", task)
