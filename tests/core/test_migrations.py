"""Migrations: applied in order, recorded, re-running is a no-op, a failure changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from identity.store.migrate import Migration, available_migrations, migrate


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
    """Migration 0009: register_candidates and usable_keys plan once per connection, and only
    with index look-ups and nested loops (benchmarks/plan_stability.py: a plan cached alone on
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


async def test_failing_migration_leaves_database_as_it_was(
    empty_schema: asyncpg.Connection,
) -> None:
    good = Migration(1, "good", "CREATE TABLE good_one (id int)")
    bad = Migration(2, "bad", "CREATE TABLE bad_one (id int); SELECT no_such_function()")
    with pytest.raises(asyncpg.PostgresError):
        await migrate(empty_schema, [good, bad])
    assert await _tables(empty_schema) == set()  # not even schema_migration or good_one
    assert await migrate(empty_schema, [good]) == [1]
