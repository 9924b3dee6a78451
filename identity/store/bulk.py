"""COPY-based writing for an initial load (``identity import``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

BULK_STATEMENT_TIMEOUT = 3600.0  # seconds, for one COPY or ANALYZE of an initial load


class BulkWriter:
    """COPY-based writing for the initial load (bulk import), inside the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock_index(self) -> None:
        """Keep feeds out while the load runs (they wait; reads go on)."""
        await self.conn.execute("LOCK TABLE source_record, person, link IN EXCLUSIVE MODE")

    async def reserve(self, sequence: str, count: int) -> list[int]:
        """``count`` consecutive values of a sequence, reserved at once (gaps on rollback).
        Call under ``lock_index`` so that no other transaction draws from it meanwhile."""
        if count == 0:
            return []
        first = await self.conn.fetchval(
            "SELECT setval($1::regclass, nextval($1::regclass) + $2 - 1) - $2 + 1",
            sequence,
            count,
        )
        return list(range(first, first + count))

    async def copy(
        self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
    ) -> int:
        # One COPY per table of the whole load: far beyond the per-statement command timeout.
        result = await self.conn.copy_records_to_table(
            table, records=rows, columns=list(columns), timeout=BULK_STATEMENT_TIMEOUT
        )
        return int(result.split()[-1])



#: The tables a registration reads and writes, whose planner statistics a long load refreshes.
INDEX_TABLES = (
    "source_record", "person", "link", "blocking_key", "record_identifier", "review_item",
)


async def analyze(conn: asyncpg.Connection, tables: Sequence[str] = INDEX_TABLES) -> None:
    """Refresh the planner's statistics of ``tables`` (a load that grows them many times over
    must not run on the plans of the tables it started with, whether or not autovacuum runs)."""
    await conn.execute(f"ANALYZE {', '.join(tables)}", timeout=BULK_STATEMENT_TIMEOUT)


async def record_count(conn: asyncpg.Connection) -> int:
    """About how many source records the index holds (the planner's estimate, at once)."""
    estimate = await conn.fetchval(
        "SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'source_record'::regclass"
    )
    return int(estimate or 0)
