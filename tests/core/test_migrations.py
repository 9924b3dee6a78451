"""Migrations: applied in order, recorded, re-running is a no-op, a failure changes nothing;
each function's current definition (sql/NAME.sql) applied when it changed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from identity.store.migrate import (
    Applied,
    Function,
    Migration,
    apply_migrations,
    available_functions,
    available_migrations,
    migrate,
)
from identity.store.schema_dump import dump_schema


@pytest.fixture
async def empty_schema(run_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    name = f"m_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(run_database_url)
    await conn.execute(f'CREATE SCHEMA "{name}"')
    await conn.execute(f'SET search_path TO "{name}"')
    yield conn
    await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    await conn.close()


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    )
    return {r["table_name"] for r in rows}


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in available_migrations()]
    assert versions == sorted(versions) and versions[0] == 1


async def test_migrate_creates_schema_and_records_versions(
    empty_schema: asyncpg.Connection,
) -> None:
    applied = await migrate(empty_schema)
    assert applied == [m.version for m in available_migrations()]
    assert {
        "domain",
        "person",
        "source_record",
        "link",
        "review_item",
        "no_match",
        "history",
        "outbox",
        "processed_message",
        "blocking_key",
    } <= await _tables(empty_schema)
    recorded = await empty_schema.fetch("SELECT version FROM schema_migration ORDER BY version")
    assert [r["version"] for r in recorded] == applied


async def test_candidate_search_keeps_cached_plans_that_cannot_scan_whole_tables(
    empty_schema: asyncpg.Connection,
) -> None:
    """Migration 0009 (now in sql/register_candidates.sql and sql/usable_keys.sql):
    register_candidates and usable_keys plan once per connection, and only with index
    look-ups and nested loops (benchmarks/plan_stability.py: a plan cached alone on
    empty tables took 1.2 s a call once they had grown; with these rules 2 ms)."""
    await migrate(empty_schema)
    rows = await empty_schema.fetch(
        """SELECT p.proname, p.proconfig FROM pg_proc p
           WHERE p.pronamespace = current_schema()::regnamespace
             AND p.proname IN ('register_candidates', 'usable_keys')"""
    )
    assert sorted(r["proname"] for r in rows) == ["register_candidates", "usable_keys"]
    for row in rows:
        assert set(row["proconfig"]) == {
            "plan_cache_mode=force_generic_plan",
            "enable_seqscan=off",
            "enable_hashjoin=off",
            "enable_mergejoin=off",
        }, row["proname"]


async def test_rerunning_is_a_no_op(empty_schema: asyncpg.Connection) -> None:
    await migrate(empty_schema)
    assert await migrate(empty_schema) == []
    assert await apply_migrations(empty_schema) == Applied([], [])


async def _functions(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT proname FROM pg_proc WHERE pronamespace = current_schema()::regnamespace"
    )
    return {r["proname"] for r in rows}


async def test_every_function_has_one_file_of_its_own(empty_schema: asyncpg.Connection) -> None:
    functions = available_functions()
    for function in functions:
        assert f"CREATE OR REPLACE FUNCTION {function.name}(" in function.sql, function.name
        assert function.sql.count("CREATE OR REPLACE FUNCTION") == 1, function.name
    applied = await apply_migrations(empty_schema)
    assert applied.functions == [f.name for f in functions]
    assert await _functions(empty_schema) == {f.name for f in functions}
    recorded = await empty_schema.fetch("SELECT name, checksum FROM schema_function")
    assert {r["name"]: r["checksum"] for r in recorded} == {f.name: f.checksum for f in functions}


async def test_a_changed_definition_is_applied_alone_and_once(
    empty_schema: asyncpg.Connection,
) -> None:
    await migrate(empty_schema)
    functions = available_functions()
    lock_keys = next(f for f in functions if f.name == "lock_keys")
    changed = Function("lock_keys", lock_keys.sql.replace("BEGIN\n", "BEGIN\n    -- changed\n", 1))
    assert changed.sql != lock_keys.sql
    edited = [changed if f.name == "lock_keys" else f for f in functions]
    assert await apply_migrations(empty_schema, functions=edited) == Applied([], ["lock_keys"])
    assert await apply_migrations(empty_schema, functions=edited) == Applied([], [])
    source = await empty_schema.fetchval(
        "SELECT prosrc FROM pg_proc WHERE proname = 'lock_keys'"
        " AND pronamespace = current_schema()::regnamespace"
    )
    assert "-- changed" in source
    assert await apply_migrations(empty_schema) == Applied([], ["lock_keys"])  # back again


#: The last numbered migration before the functions moved to identity/store/sql/.
LAST_BEFORE_FILES = 10


async def test_a_database_migrated_before_the_files_gets_the_same_functions(
    empty_schema: asyncpg.Connection, run_database_url: str
) -> None:
    """An existing install has the numbered migrations of its time recorded and no
    schema_function: its first run applies the newer migrations and every file, and the
    schema comes out as a fresh database's."""
    legacy = [m for m in available_migrations() if m.version <= LAST_BEFORE_FILES]
    assert (await apply_migrations(empty_schema, legacy, functions=[])).functions == []
    applied = await apply_migrations(empty_schema)
    assert applied == Applied(
        [m.version for m in available_migrations() if m.version > LAST_BEFORE_FILES],
        [f.name for f in available_functions()],
    )
    schema = await empty_schema.fetchval("SELECT current_schema()")
    upgraded = await dump_schema(empty_schema, schema)

    fresh = f"m_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(run_database_url)
    try:
        await conn.execute(f'CREATE SCHEMA "{fresh}"')
        await conn.execute(f'SET search_path TO "{fresh}"')
        await migrate(conn)
        assert await dump_schema(conn, fresh) == upgraded
        await conn.execute(f'DROP SCHEMA "{fresh}" CASCADE')
    finally:
        await conn.close()


async def test_a_failing_definition_leaves_database_as_it_was(
    empty_schema: asyncpg.Connection,
) -> None:
    broken = Function("broken", "CREATE OR REPLACE FUNCTION broken() RETURNS int LANGUAGE sql")
    with pytest.raises(asyncpg.PostgresError):
        await apply_migrations(empty_schema, functions=[*available_functions(), broken])
    assert await _tables(empty_schema) == set()
    assert await _functions(empty_schema) == set()


async def test_failing_migration_leaves_database_as_it_was(
    empty_schema: asyncpg.Connection,
) -> None:
    good = Migration(1, "good", "CREATE TABLE good_one (id int)")
    bad = Migration(2, "bad", "CREATE TABLE bad_one (id int); SELECT no_such_function()")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(empty_schema, [good, bad])
    assert await _tables(empty_schema) == set()  # not even schema_migration or good_one
    assert await migrate(empty_schema, [good]) == [1]
