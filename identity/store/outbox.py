"""The outbox: rows written by commands inside their transactions, delivered after commit by
one worker per topic (ITI-10 notifications today, audit records later)."""

from __future__ import annotations

import asyncpg

from identity.store.keys import key_hash
from identity.store.rows import outbox_entry_from_row
from identity.store.state import OutboxEntry


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
