"""The outbox: rows written by commands inside their transactions, delivered after commit by
one worker per topic (ITI-10 notifications today, audit records later)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from identity.store.keys import key_hash
from identity.store.rows import outbox_entry_from_row
from identity.store.state import OutboxEntry


@dataclass(frozen=True, slots=True)
class TopicBacklog:
    """One topic's undelivered rows: how many (counted up to a cap) and the oldest's time."""

    topic: str
    pending: int
    oldest: datetime | None


class OutboxStore:
    """Claiming and settling outbox rows. A worker handles one topic's rows in id order.

    Only one worker per topic at a time, across processes: ``try_own`` takes a session-level
    advisory lock on the topic, held by that worker's dedicated connection.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def try_own(self, topic: str) -> bool:
        return await self.conn.fetchval(
            "SELECT pg_try_advisory_lock($1)", key_hash("outbox:" + topic)
        )

    async def release(self, topic: str) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock($1)", key_hash("outbox:" + topic))

    async def head(self, topic: str) -> OutboxEntry | None:
        """The oldest undelivered row of the topic (due or not: see ``OutboxEntry.due``)."""
        row = await self.conn.fetchrow(
            """SELECT id, payload, attempts, available_at <= now() AS due
               FROM outbox WHERE topic = $1 AND delivered_at IS NULL ORDER BY id LIMIT 1""",
            topic,
        )
        return None if row is None else outbox_entry_from_row(row)

    async def delivered(self, row_id: int, note: str | None = None) -> None:
        await self.conn.execute(
            "UPDATE outbox SET delivered_at = now(), last_error = $2 WHERE id = $1", row_id, note
        )

    async def failed(self, row_id: int, error: str, retry_in_seconds: float) -> None:
        await self.conn.execute(
            """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                   available_at = now() + make_interval(secs => $3) WHERE id = $1""",
            row_id,
            error,
            retry_in_seconds,
        )

    async def pending_count(self, topic: str) -> int:
        return await self.conn.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = $1 AND delivered_at IS NULL", topic
        )

    async def backlogs(self, cap: int) -> list[TopicBacklog]:
        """Every topic with undelivered rows, its count of them (at most ``cap``: the cost of
        a scrape stays bounded however far behind a topic is) and its oldest row's time.

        The topics are found by a skip scan of the partial index ``outbox_pending (topic, id)``
        (one index probe per topic, not a pass over the rows); each topic's count reads at
        most ``cap`` index entries, its oldest row one."""
        rows = await self.conn.fetch(
            """WITH RECURSIVE topics(topic) AS (
                   (SELECT topic FROM outbox WHERE delivered_at IS NULL ORDER BY topic LIMIT 1)
                   UNION ALL
                   SELECT (SELECT o.topic FROM outbox o
                           WHERE o.delivered_at IS NULL AND o.topic > t.topic
                           ORDER BY o.topic LIMIT 1)
                   FROM topics t WHERE t.topic IS NOT NULL)
               SELECT t.topic,
                      (SELECT count(*) FROM (SELECT 1 FROM outbox o
                                              WHERE o.topic = t.topic AND o.delivered_at IS NULL
                                              LIMIT $1) c) AS pending,
                      (SELECT o.created_at FROM outbox o
                       WHERE o.topic = t.topic AND o.delivered_at IS NULL
                       ORDER BY o.id LIMIT 1) AS oldest
               FROM topics t WHERE t.topic IS NOT NULL""",
            cap,
        )
        return [TopicBacklog(r["topic"], r["pending"], r["oldest"]) for r in rows]
