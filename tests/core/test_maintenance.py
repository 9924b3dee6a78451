"""Self-maintenance over real PostgreSQL: statistics refreshed after growth and left alone
otherwise, retention of the outbox, stored replies and history per its keys, topics no one
consumes not written, the configuration's keys checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from identity.config import MaintenanceSettings, Settings
from identity.errors import ConfigError, InvalidState
from identity.maintenance import apply_retention, refresh_statistics
from identity.mpi import Envelope, Mpi, Register, Undo
from identity.mpi.uow import CHANGED_TOPIC, UPDATED_TOPIC
from identity.store.db import Database

from .helpers import person

A = Envelope(source="ADT_A", actor="hl7:ADT_A|HOSP")


async def _stats(conn: asyncpg.Connection, table: str) -> asyncpg.Record:
    return await conn.fetchrow(
        """SELECT s.last_analyze, s.last_vacuum, s.n_dead_tup, c.reltuples
           FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
           WHERE s.schemaname = current_schema() AND s.relname = $1""", table)


async def _messages(conn: asyncpg.Connection, start: int, count: int, age_days: float = 0) -> None:
    """``count`` stored replies, ``age_days`` old; the backend's table counters are flushed
    to the statistics PostgreSQL keeps (they are otherwise flushed at most once a second)."""
    await conn.execute(
        """INSERT INTO processed_message (sender, control_id, reply, created_at)
           SELECT 'S', 'C' || g, 'MSA|AA', now() - make_interval(days => $3)
           FROM generate_series($1::int, $1::int + $2::int - 1) g""",
        start, count, int(age_days))
    await conn.execute("SELECT pg_stat_force_next_flush()")


async def test_a_table_is_analyzed_after_growth_and_left_alone_when_unchanged(
    db: Database,
) -> None:
    settings = MaintenanceSettings(analyze_min_rows=100, analyze_fraction=0.1, vacuum="never")
    run = await refresh_statistics(db, settings)
    assert run is not None and run.analyzed == []  # a fresh schema: nothing grew enough
    async with db.connection() as conn:
        assert (await _stats(conn, "processed_message"))["last_analyze"] is None
        await _messages(conn, 0, 1000)

    run = await refresh_statistics(db, settings)
    assert run is not None and run.analyzed == ["processed_message"]
    async with db.connection() as conn:
        first = await _stats(conn, "processed_message")
    assert first["last_analyze"] is not None and first["reltuples"] == 1000

    run = await refresh_statistics(db, settings)  # nothing changed since
    assert run is not None and run.analyzed == []
    async with db.connection() as conn:
        assert (await _stats(conn, "processed_message"))["last_analyze"] == first["last_analyze"]
        await _messages(conn, 1000, 150)  # 150 < 100 + 10% of 1000
    run = await refresh_statistics(db, settings)
    assert run is not None and run.analyzed == []

    async with db.connection() as conn:
        await _messages(conn, 2000, 100)  # 250 since the last ANALYZE
    run = await refresh_statistics(db, settings)
    assert run is not None and run.analyzed == ["processed_message"]
    async with db.connection() as conn:
        again = await _stats(conn, "processed_message")
    assert again["last_analyze"] > first["last_analyze"] and again["reltuples"] == 1250


async def test_dead_rows_are_vacuumed_when_asked(db: Database) -> None:
    settings = MaintenanceSettings(analyze_min_rows=100, vacuum="always")
    async with db.connection() as conn:
        await _messages(conn, 0, 1000)
    await refresh_statistics(db, settings)  # inserted rows: vacuumed and analysed once
    async with db.connection() as conn:
        await conn.execute(
            "DELETE FROM processed_message WHERE substr(control_id, 2)::int < 600")
        await conn.execute("SELECT pg_stat_force_next_flush()")
        assert (await _stats(conn, "processed_message"))["n_dead_tup"] > 500
    run = await refresh_statistics(db, settings)
    assert run is not None and run.vacuum and "processed_message" in run.vacuumed
    async with db.connection() as conn:
        after = await _stats(conn, "processed_message")
    assert after["n_dead_tup"] == 0 and after["last_vacuum"] is not None

    never = MaintenanceSettings(analyze_min_rows=100, vacuum="never")
    async with db.connection() as conn:
        await conn.execute("DELETE FROM processed_message")
        await conn.execute("SELECT pg_stat_force_next_flush()")
    run = await refresh_statistics(db, never)
    assert run is not None and not run.vacuum and run.vacuumed == []


async def _outbox(conn: asyncpg.Connection, topic: str, created_days: int,
                  delivered_days: int | None) -> int:
    return await conn.fetchval(
        """INSERT INTO outbox (topic, payload, created_at, delivered_at)
           VALUES ($1, '{}'::jsonb, now() - make_interval(days => $2),
                   now() - make_interval(days => $3)) RETURNING id""",
        topic, created_days, delivered_days)


async def test_retention_deletes_exactly_the_old_rows_of_each_key(db: Database) -> None:
    async with db.connection() as conn:
        old_delivered = [await _outbox(conn, "iti10:pixc", 12, 10),
                         await _outbox(conn, "audit", 9, 8)]
        kept = [
            await _outbox(conn, "iti10:pixc", 2, 1),     # delivered a day ago
            await _outbox(conn, "iti10:pixc", 30, None),  # undelivered, its consumer is here
            await _outbox(conn, "iti10:gone", 1, None),   # no consumer, but young
        ]
        unconsumed = [await _outbox(conn, "iti10:gone", 8, None),
                      await _outbox(conn, CHANGED_TOPIC, 20, None)]
        await _messages(conn, 0, 250, age_days=31)  # three batches of 100
        await _messages(conn, 1000, 5, age_days=29)

    settings = MaintenanceSettings(batch_rows=100)  # the defaults: 7, 7 and 30 days
    run = await apply_retention(db, settings, ["iti10:pixc"])
    assert run is not None
    assert run.outbox_delivered == 2
    assert run.outbox_unconsumed == {"iti10:gone": 1, CHANGED_TOPIC: 1}
    assert run.processed_message == 250 and run.history_archived == 0
    async with db.connection() as conn:
        left = {r["id"] for r in await conn.fetch("SELECT id FROM outbox")}
        replies = await conn.fetchval("SELECT count(*) FROM processed_message")
    assert left == set(kept) and not left & set(old_delivered + unconsumed)
    assert replies == 5

    off = MaintenanceSettings(outbox_delivered_days=0, outbox_unconsumed_days=0,
                              processed_message_days=0)
    async with db.connection() as conn:
        await _outbox(conn, "iti10:pixc", 90, 90)
        await _messages(conn, 2000, 3, age_days=365)
    run = await apply_retention(db, off, ["iti10:pixc"])
    assert run is not None and run.rows == 0


async def test_history_is_archived_past_its_retention_and_undo_refuses_it(
    mpi: Mpi, db: Database
) -> None:
    old = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    new = await mpi.handle(Register(subject=person("HOSPA", "A2", family="Jones")), A)
    async with db.connection() as conn:
        await conn.execute(
            "UPDATE history SET at = at - interval '40 days' WHERE command_id = $1::uuid",
            old.command_id)
        old_rows = await conn.fetchval(
            "SELECT count(*) FROM history WHERE command_id = $1::uuid", old.command_id)
        total = await conn.fetchval("SELECT count(*) FROM history")
    assert old_rows > 0

    run = await apply_retention(db, MaintenanceSettings(), [])
    assert run is not None and run.history_archived == 0  # default: kept forever

    run = await apply_retention(db, MaintenanceSettings(history_retention_days=30), [])
    assert run is not None and run.history_archived == old_rows
    async with db.connection() as conn:
        archived = await conn.fetch("SELECT command_id FROM history_archive")
        assert {str(r["command_id"]) for r in archived} == {old.command_id}
        assert await conn.fetchval("SELECT count(*) FROM history") == total - old_rows
        assert await conn.fetchval(
            "SELECT count(*) FROM history WHERE command_id = $1::uuid", new.command_id) > 0

    with pytest.raises(InvalidState, match="archived"):
        await mpi.handle(Undo(command_id=old.command_id), Envelope(actor="steward:ann"))


async def _topics(db: Database) -> list[str]:
    async with db.connection() as conn:
        return [r["topic"] for r in await conn.fetch("SELECT topic FROM outbox ORDER BY id")]


@pytest.mark.parametrize(("notify", "write_unconsumed", "expected"), [
    ([], False, []),
    (["pixc"], False, ["iti10:pixc"]),
    ([], True, [CHANGED_TOPIC, UPDATED_TOPIC]),
    (["pixc"], True, [CHANGED_TOPIC, "iti10:pixc", UPDATED_TOPIC]),
])
async def test_topics_no_one_consumes_are_not_written(
    db: Database, make_settings: Callable[..., Settings], notify: list[str],
    write_unconsumed: bool, expected: list[str],
) -> None:
    settings = make_settings(
        notify=[{"name": n, "host": "127.0.0.1", "port": 2576} for n in notify],
        maintenance={"write_unconsumed_topics": write_unconsumed},
    )
    mpi = Mpi(db, settings)
    await mpi.start()
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)  # identifiers: changed
    await mpi.handle(Register(subject=person("HOSPA", "A1", given="Jon")), A)  # updated
    assert await _topics(db) == expected


@pytest.mark.parametrize(("values", "message"), [
    ({"processed_message_days": 0.5}, "at least 1 day"),
    ({"history_retention_days": -1}, "greater than or equal"),
    ({"analyze_fraction": 0}, "greater than"),
    ({"vacuum": "sometimes"}, "auto"),
    ({"batch_rows": 10}, "greater than or equal"),
    ({"analyse_interval": 5}, "Extra inputs"),
])
def test_maintenance_keys_are_checked(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaintenanceSettings(**values)


def test_maintenance_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings().maintenance
    assert (defaults.enabled, defaults.outbox_delivered_days, defaults.processed_message_days,
            defaults.history_retention_days, defaults.write_unconsumed_topics) == (
        True, 7.0, 30.0, 0.0, False)
    monkeypatch.setenv("IDENTITY_MAINTENANCE__HISTORY_RETENTION_DAYS", "365")
    assert Settings().maintenance.history_retention_days == 365
    monkeypatch.setenv("IDENTITY_MAINTENANCE__PROCESSED_MESSAGE_DAYS", "0.25")
    with pytest.raises((ValueError, ConfigError)):
        Settings()
