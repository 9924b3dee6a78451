"""The outbox port: how a worker that delivers what commands wrote to the outbox (ITI-10
notifications today, audit records later) reads its work, without the pool or SQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from identity.store.db import Database
from identity.store.outbox import OutboxStore
from identity.store.state import OutboxEntry

__all__ = ["OutboxEntry", "TopicDeliveries", "own_topic"]


class TopicDeliveries:
    """The deliveries of one topic, owned by one worker (across processes) while it holds
    them; rows are delivered in id order."""

    def __init__(self, store: OutboxStore, topic: str) -> None:
        self._store = store
        self.topic = topic

    async def head(self) -> OutboxEntry | None:
        """The oldest undelivered entry, if any."""
        return await self._store.head(self.topic)

    async def delivered(self, entry: OutboxEntry, note: str | None = None) -> None:
        await self._store.delivered(entry.id, note)

    async def failed(self, entry: OutboxEntry, error: str, retry_in_seconds: float) -> None:
        await self._store.failed(entry.id, error, retry_in_seconds)


@contextlib.asynccontextmanager
async def own_topic(db: Database, topic: str) -> AsyncIterator[TopicDeliveries | None]:
    """The topic's deliveries on a connection of their own, or None when another worker (in
    any process) owns the topic now."""
    async with db.pool.acquire() as conn:
        store = OutboxStore(conn)
        if not await store.try_own(topic):
            yield None
            return
        try:
            yield TopicDeliveries(store, topic)
        finally:
            with contextlib.suppress(Exception):
                await store.release(topic)
