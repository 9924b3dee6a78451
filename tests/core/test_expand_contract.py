"""Expand/contract (docs/operations.md, *Upgrades*): this release keeps running against a
database that a newer release has expanded (a nullable column, a table, an index, a function
body of its own), and leaves the newer release's schema as it is."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from identity.config import Settings
from identity.model import SearchCriteria
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database
from identity.store.migrate import (
    Migration,
    apply_migrations,
    available_migrations,
    migrate,
    pending_versions,
)
from tests.conftest import migrated_schema

from .helpers import person, ref

#: What a newer release might add: expand-only (nothing this release reads or writes changes).
EXPAND = Migration(9001, "newer_release_expand", """
ALTER TABLE source_record ADD COLUMN preferred_language text;
ALTER TABLE person ADD COLUMN golden jsonb;
CREATE TABLE record_consent (
    record_id bigint NOT NULL REFERENCES source_record (id),
    policy    text NOT NULL,
    PRIMARY KEY (record_id, policy)
);
CREATE INDEX source_record_language ON source_record (preferred_language)
    WHERE preferred_language IS NOT NULL;
-- the newer release's body of a function (its sql/ file changed): recorded as applied
UPDATE schema_function SET checksum = 'newer-release' WHERE name = 'append_events';
""")

A = Envelope(source="ADT_A", actor="hl7:ADT_A|HOSP")


@pytest.fixture
async def expanded(run_database_url: str) -> AsyncIterator[str]:
    """A schema migrated by this release, then by a newer one's expand migration."""
    name = await migrated_schema(run_database_url, "x_")
    conn = await asyncpg.connect(run_database_url)
    try:
        await conn.execute(f'SET search_path TO "{name}"')
        await apply_migrations(conn, [*available_migrations(), EXPAND], functions=[])
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()


async def test_this_release_runs_against_a_schema_a_newer_release_expanded(
    run_database_url: str, expanded: str, make_settings: Callable[..., Settings],
) -> None:
    db = await Database.connect(run_database_url, min_size=1, max_size=4,
                                server_settings={"search_path": expanded})
    try:
        async with db.connection() as conn:
            # starting: migrations checked, nothing applied, the newer function left in place
            assert await migrate(conn) == []
            assert await pending_versions(conn) == []  # /readyz: ready
            assert await conn.fetchval(
                "SELECT checksum FROM schema_function WHERE name = 'append_events'"
            ) == "newer-release"
        mpi = Mpi(db, make_settings())
        await mpi.start()
        first = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
        second = await mpi.handle(Register(subject=person(
            "HOSPB", "B1", others=(ref("SSA", "123-45-6789"),))),
            Envelope(source="ADT_B", actor="hl7:ADT_B|HOSP"))
        update = await mpi.handle(Register(subject=person("HOSPA", "A1", given="Jon")), A)
        assert update.record.id == first.record.id
        references = await mpi.cross_references(ref("HOSPA", "A1"))
        assert references.person_id == first.person.id
        found = await mpi.search(SearchCriteria(family="Smith"))
        assert {r.identifier for r in found.records} >= {"A1", "B1"}
        assert second.record.identifier == "B1"
        async with db.connection() as conn:
            # the newer release's rows and columns are there, untouched (NULL in new rows)
            assert await conn.fetchval(
                "SELECT count(*) FROM source_record WHERE preferred_language IS NULL") == 2
            assert await conn.fetchval("SELECT count(*) FROM record_consent") == 0
    finally:
        await db.close()


async def test_a_newer_schema_without_this_release_migrations_is_refused(
    run_database_url: str,
) -> None:
    name = f"x_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(run_database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        await conn.execute(f'SET search_path TO "{name}"')
        known = available_migrations()
        await apply_migrations(conn, [*known[:-1], EXPAND], functions=[])
        with pytest.raises(RuntimeError, match="lacks its migrations"):
            await migrate(conn)
    finally:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()
