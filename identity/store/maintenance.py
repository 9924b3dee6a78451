"""The SQL of the service's self-maintenance (identity.maintenance): the tables' statistics as
PostgreSQL counts them, ANALYZE and VACUUM, and the retention deletions in bounded batches.

Every method runs on a connection of its own outside any transaction block (VACUUM cannot run
in one; each batch of a deletion commits alone, so that no lock is held longer than one batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

#: Statement timeout (client side) of one ANALYZE, VACUUM or batch: far above the pool's
#: ``command_timeout``, which is sized for requests.
MAINTENANCE_TIMEOUT = 3600.0


@dataclass(frozen=True, slots=True)
class TableStats:
    """One table of the service's schema as ``pg_stat_user_tables`` and ``pg_class`` see it."""

    name: str
    live: int
    """Rows now (``n_live_tup``: kept by the statistics collector, autovacuum or not)."""
    dead: int
    """Dead row versions not yet vacuumed (``n_dead_tup``)."""
    modified: int
    """Rows inserted, updated or deleted since the last ANALYZE (``n_mod_since_analyze``)."""
    inserted_since_vacuum: int
    """Rows inserted since the last VACUUM (``n_ins_since_vacuum``)."""
    analyzed_rows: float
    """Rows the planner believes the table holds (``pg_class.reltuples``, set by the last
    ANALYZE or VACUUM; -1 never)."""
    last_analyze: datetime | None
    """The later of ``last_analyze`` and ``last_autoanalyze``."""


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class MaintenanceQueries:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def try_lock(self, task: str) -> bool:
        """A session advisory lock on ``task`` in this schema (one worker, of any process,
        runs it at a time); held until :meth:`unlock`."""
        return bool(await self.conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtext('identity.maintenance:' || $1 || ':' "
            "|| current_schema()))", task))

    async def unlock(self, task: str) -> None:
        await self.conn.execute(
            "SELECT pg_advisory_unlock(hashtext('identity.maintenance:' || $1 || ':' "
            "|| current_schema()))", task)

    async def autovacuum_on(self) -> bool:
        return await self.conn.fetchval("SELECT current_setting('autovacuum') = 'on'")

    async def table_stats(self) -> list[TableStats]:
        """The tables of the current schema (the service's), by name."""
        rows = await self.conn.fetch(
            """SELECT s.relname, s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
                      s.n_ins_since_vacuum, c.reltuples,
                      greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze
               FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
               WHERE s.schemaname = current_schema()
               ORDER BY s.relname"""
        )
        return [TableStats(r["relname"], r["n_live_tup"], r["n_dead_tup"],
                           r["n_mod_since_analyze"], r["n_ins_since_vacuum"],
                           float(r["reltuples"]), r["last_analyze"])
                for r in rows]

    async def analyze(self, table: str) -> None:
        await self.conn.execute(f"ANALYZE {_quoted(table)}", timeout=MAINTENANCE_TIMEOUT)

    async def vacuum(self, table: str) -> None:
        await self.conn.execute(f"VACUUM {_quoted(table)}", timeout=MAINTENANCE_TIMEOUT)

    async def _batches(self, sql: str, *args: object) -> int:
        """Run ``sql`` (one bounded batch, ``RETURNING 1``-less: its status counts the rows)
        until a batch affects fewer than ``args[-1]`` rows; the rows affected in all."""
        limit = args[-1]
        assert isinstance(limit, int)
        total = 0
        while True:
            status = await self.conn.execute(sql, *args, timeout=MAINTENANCE_TIMEOUT)
            count = int(status.rsplit(" ", 1)[-1])
            total += count
            if count < limit:
                return total

    async def delete_delivered_outbox(self, days: float, batch: int) -> int:
        """Delete outbox rows delivered more than ``days`` ago (index outbox_delivered)."""
        return await self._batches(
            """DELETE FROM outbox WHERE id = ANY(ARRAY(
                   SELECT id FROM outbox
                   WHERE delivered_at IS NOT NULL
                     AND delivered_at < now() - make_interval(secs => $1)
                   LIMIT $2))""",
            days * 86400.0, batch,
        )

    async def pending_topics(self) -> list[str]:
        """The topics with undelivered rows: a skip scan of the partial index outbox_pending
        (one probe per topic)."""
        rows = await self.conn.fetch(
            """WITH RECURSIVE topics(topic) AS (
                   (SELECT topic FROM outbox WHERE delivered_at IS NULL ORDER BY topic LIMIT 1)
                   UNION ALL
                   SELECT (SELECT o.topic FROM outbox o
                           WHERE o.delivered_at IS NULL AND o.topic > t.topic
                           ORDER BY o.topic LIMIT 1)
                   FROM topics t WHERE t.topic IS NOT NULL)
               SELECT topic FROM topics WHERE topic IS NOT NULL"""
        )
        return [r["topic"] for r in rows]

    async def delete_undelivered(self, topic: str, days: float, batch: int) -> int:
        """Delete the topic's undelivered rows written more than ``days`` ago, oldest first
        (index outbox_pending, in id order: the old rows are at its head)."""
        return await self._batches(
            """DELETE FROM outbox WHERE id = ANY(ARRAY(
                   SELECT id FROM outbox
                   WHERE topic = $1 AND delivered_at IS NULL
                     AND created_at < now() - make_interval(secs => $2)
                   ORDER BY id LIMIT $3))""",
            topic, days * 86400.0, batch,
        )

    async def delete_processed_messages(self, days: float, batch: int) -> int:
        """Delete stored replies older than ``days`` (index processed_message_created)."""
        return await self._batches(
            """DELETE FROM processed_message WHERE ctid = ANY(ARRAY(
                   SELECT ctid FROM processed_message
                   WHERE created_at < now() - make_interval(secs => $1)
                   LIMIT $2))""",
            days * 86400.0, batch,
        )

    async def archive_history(self, days: float, batch: int) -> int:
        """Move history rows older than ``days`` to history_archive, in id order.

        history has no index on its time: the first row not old enough, found from the head
        of the primary key (past the rows about to move), bounds the ids moved. Ids are
        drawn when rows are written and ``at`` is their transaction's start, so an old row
        above that bound waits for a later run; a command whose rows interleave with a newer
        one's may be archived in two runs (undo refuses it as soon as one row is archived)."""
        cutoff = await self.conn.fetchval("SELECT now() - make_interval(secs => $1)",
                                          days * 86400.0)
        boundary = await self.conn.fetchval(
            "SELECT id FROM history WHERE at >= $1 ORDER BY id LIMIT 1", cutoff)
        if boundary is None:
            boundary = await self.conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM history")
        columns = ("id, command_id, at, event, entity, entity_id, person_id, record_id, before, "
                   "after, actor, message_id")
        return await self._batches(
            f"""WITH moved AS (
                    DELETE FROM history WHERE id = ANY(ARRAY(
                        SELECT id FROM history WHERE id < $1 AND at < $2 ORDER BY id LIMIT $3))
                    RETURNING {columns})
                INSERT INTO history_archive ({columns}) SELECT {columns} FROM moved""",
            boundary, cutoff, batch,
        )
