"""The set path of ``identity import`` (identity.mpi.bulk): what it reads of the index a chunk at
a time, and COPY-based writing."""

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
        """Keep writers out while a chunk is matched and written (feeds wait; reads go on;
        two imports take turns)."""
        await self.conn.execute("LOCK TABLE source_record, person, link IN EXCLUSIVE MODE")

    async def draw(self, sequence: str, count: int) -> list[int]:
        """``count`` values of a sequence in one call (not necessarily consecutive: others may
        draw from it meanwhile)."""
        if count == 0:
            return []
        rows = await self.conn.fetchval(
            "SELECT array_agg(nextval($1::regclass)) FROM generate_series(1, $2)",
            sequence, count,
        )
        return list(rows)

    async def draw_persons(self, count: int) -> list[tuple[int, str]]:
        """Ids and enterprise ids of ``count`` new persons (as register_insert makes them)."""
        if count == 0:
            return []
        rows = await self.conn.fetch(
            "SELECT nextval('person_id_seq') AS id,"
            " lpad(nextval('enterprise_id_seq')::text, 10, '0') AS eid"
            " FROM generate_series(1, $1)",
            count,
        )
        return [(row["id"], row["eid"]) for row in rows]

    async def blocks(self, keys: Sequence[str], per_key: int) -> dict[str, list[int]]:
        """The first ``per_key`` record ids (in id order) under each of ``keys`` that has any,
        in one query (what register_candidates reads of each key)."""
        rows = await self.conn.fetch(
            """SELECT k.key, ARRAY(SELECT b.source_record_id FROM blocking_key b
                                   WHERE b.key = k.key ORDER BY b.source_record_id
                                   LIMIT $2) AS ids
               FROM unnest($1::text[]) AS k(key)""",
            list(keys), per_key, timeout=BULK_STATEMENT_TIMEOUT,
        )
        return {row["key"]: row["ids"] for row in rows if row["ids"]}

    async def person_records(
        self, record_ids: Sequence[int]
    ) -> list[tuple[int, int, int, dict[str, Any], int]]:
        """(record id, domain id, person id, normalized, version) of every active record of
        the persons of ``record_ids`` (the parties register_candidates returns)."""
        if not record_ids:
            return []
        rows = await self.conn.fetch(
            """SELECT r.id, r.domain_id, l.person_id, r.normalized, r.version
               FROM link l JOIN source_record r ON r.id = l.source_record_id
               WHERE l.person_id IN (SELECT l2.person_id FROM link l2
                                     WHERE l2.source_record_id = ANY($1::bigint[]))
                 AND r.status = 'active'""",
            list(record_ids), timeout=BULK_STATEMENT_TIMEOUT,
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]

    async def existing(self, keys: Sequence[tuple[int, str]]) -> set[tuple[int, str]]:
        """Which of (domain id, identifier) the index holds a record of (any status)."""
        if not keys:
            return set()
        rows = await self.conn.fetch(
            """SELECT r.domain_id, r.identifier
               FROM unnest($1::integer[], $2::text[]) AS x(d, v)
               JOIN source_record r ON r.domain_id = x.d AND r.identifier = x.v""",
            [d for d, _ in keys], [v for _, v in keys], timeout=BULK_STATEMENT_TIMEOUT,
        )
        return {(row["domain_id"], row["identifier"]) for row in rows}

    async def touch_persons(self, person_ids: Sequence[int]) -> None:
        """A new version of each person a record was linked to (as register_insert does)."""
        if person_ids:
            await self.conn.execute(
                "UPDATE person SET version = version + 1, updated_at = now()"
                " WHERE id = ANY($1::bigint[])",
                list(person_ids), timeout=BULK_STATEMENT_TIMEOUT,
            )

    async def events(
        self,
        history: Sequence[tuple[Any, ...]],
        outbox: Sequence[tuple[str, dict[str, Any], Any]],
    ) -> None:
        """History rows (command id, event, entity, entity id, person id, record id, before,
        after, actor, message id) and outbox rows (topic, payload, command id), as a unit of
        work collects them (``UnitOfWork.take_events``), with COPY."""
        await self.copy("history", ["command_id", "event", "entity", "entity_id", "person_id",
                                    "record_id", "before", "after", "actor", "message_id"],
                        history)
        await self.copy("outbox", ["topic", "payload", "command_id"], outbox)

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


#: The tables a load writes: VACUUMed (and ANALYZEd) when it ends.
LOADED_TABLES = (*INDEX_TABLES, "history", "outbox")


async def settle(conn: asyncpg.Connection, tables: Sequence[str] = LOADED_TABLES) -> None:
    """VACUUM (ANALYZE) what a load wrote, before the service works on it: rows COPYed in
    are not yet marked visible to all, so every index lookup of a blocking key fetches its
    heap row too, and the first VACUUM of millions of rows (autovacuum's, or the service's
    own maintenance when autovacuum is off) would otherwise run under the first feeds."""
    await conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}", timeout=BULK_STATEMENT_TIMEOUT)


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
