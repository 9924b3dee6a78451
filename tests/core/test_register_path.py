"""The registration path in few round trips (migration 0002): lock order, the candidate cap's
fallback, the reply assembled without reading back, and the pool's reset."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from identity.config import Settings
from identity.model import Decision
from identity.mpi import Envelope, Mpi, Register, Remove
from identity.mpi.changes import record_key
from identity.store.db import Database
from identity.store.keys import key_hash
from identity.store.registration import CandidateSelection
from identity.store.repository import Repository

from .helpers import person, ref

A = Envelope(source="ADT_A", actor="hl7:ADT_A")
B = Envelope(source="ADT_B", actor="hl7:ADT_B")


def _split(key: str) -> tuple[int, int]:
    """An advisory lock key as pg_locks shows it: (classid, objid) of the 64-bit value."""
    value = key_hash(key) & 0xFFFFFFFFFFFFFFFF
    return value >> 32, value & 0xFFFFFFFF


async def _advisory_locks(conn: asyncpg.Connection, pid: int) -> dict[tuple[int, int], bool]:
    rows = await conn.fetch(
        """SELECT classid::bigint AS c, objid::bigint AS o, granted FROM pg_locks
           WHERE locktype = 'advisory' AND pid = $1 AND objsubid = 1""",
        pid,
    )
    return {(r["c"], r["o"]): r["granted"] for r in rows}


async def _waiting_backend(conn: asyncpg.Connection, own: list[int]) -> int:
    """The pid of the backend of this database (not one of ``own``) waiting on an advisory
    lock (other test runs share the server, each in a database of its own)."""
    while True:
        pid = await conn.fetchval(
            """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND pid <> ALL($1::int[]) LIMIT 1""",
            own,
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)


async def test_registration_takes_the_record_key_before_the_blocking_keys(
    mpi: Mpi, db: Database, run_database_url: str, schema: str
) -> None:
    """Held: one blocking key of the incoming record. The registration then holds its record
    key and waits for the blocking key: record key first, blocking keys after."""
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    incoming = person("HOSPB", "B1")
    domain = await mpi.domains.resolve(incoming.identifier.authority)
    prepared = mpi.matcher.prepare(
        incoming.demographics.as_matching_input(), [(domain.id, "B1", None)]
    )
    blocking = sorted(prepared.keys)[0]
    holder = await asyncpg.connect(run_database_url, server_settings={"search_path": schema})
    watcher = await asyncpg.connect(run_database_url, server_settings={"search_path": schema})
    try:
        own = [holder.get_server_pid(), watcher.get_server_pid()]
        transaction = holder.transaction()
        await transaction.start()
        await Repository(holder).lock([blocking])
        task = asyncio.create_task(mpi.handle(Register(subject=incoming), B))
        pid = await asyncio.wait_for(_waiting_backend(watcher, own), timeout=30)
        locks = await _advisory_locks(watcher, pid)
        assert locks.get(_split(record_key(domain.id, "B1"))) is True
        assert locks.get(_split(blocking)) is False
        await transaction.rollback()
        result = await asyncio.wait_for(task, timeout=30)
        assert result.decision == Decision.LINKED
    finally:
        await holder.close()
        await watcher.close()


async def test_an_update_waits_for_its_record_key_before_taking_any_other_lock(
    mpi: Mpi, db: Database, run_database_url: str, schema: str
) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    holder = await asyncpg.connect(run_database_url, server_settings={"search_path": schema})
    watcher = await asyncpg.connect(run_database_url, server_settings={"search_path": schema})
    try:
        own = [holder.get_server_pid(), watcher.get_server_pid()]
        transaction = holder.transaction()
        await transaction.start()
        key = record_key(first.record.domain.id, "A1")
        await Repository(holder).lock([key])
        task = asyncio.create_task(mpi.handle(
            Register(subject=person("HOSPA", "A1", family="Jones")), A)
        )
        pid = await asyncio.wait_for(_waiting_backend(watcher, own), timeout=30)
        assert await _advisory_locks(watcher, pid) == {_split(key): False}
        await transaction.rollback()
        result = await asyncio.wait_for(task, timeout=30)
        assert result.record.version == 2
    finally:
        await holder.close()
        await watcher.close()


async def test_candidates_beyond_the_prefetch_cap_are_selected_and_fetched(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    """With max_candidates 1 (three candidates) the best-ranked one (most shared keys) is
    selected and its person read with it."""
    core = Mpi(db, make_settings(matching={"max_candidates": 1, "term_frequencies": False}))
    await core.start()
    await core.handle(Register(subject=person("HOSPA", "A1", given="Mary", sex="F")), A)
    await core.handle(Register(subject=person("HOSPA", "A2", birth_date="1980-03-13")), A)
    target = await core.handle(
        Register(subject=person("LAB", "L1")),
        Envelope(actor="lis", source="LIS"),
    )
    linked = await core.handle(Register(subject=person("HOSPB", "B1")), B)
    assert linked.decision == Decision.LINKED
    assert linked.person.id == target.person.id
    assert linked.review_items == ()  # A2 (a review without the cap) was not scored


async def test_register_result_is_what_a_read_back_returns(mpi: Mpi) -> None:
    """The reply is assembled from what the transaction wrote; it equals a fresh read."""
    ssn = ref("NATIONAL", "123456789")
    commands = [
        (person("HOSPA", "A1", others=(ssn,)), A),
        (person("HOSPB", "B1", others=(ssn,)), B),  # linked
        (person("HOSPA", "A2", others=(ref("NATIONAL", "9"),)), A),  # reviewed
        (person("HOSPB", "B1", given="Johnny", others=(ssn,)), B),  # updated, link holds
        (person("HOSPB", "B1", family="Okafor", given="Chidi", birth_date="1991-07-30"), B),
    ]
    decisions = []
    for inp, who in commands:
        result = await mpi.handle(Register(subject=inp), who)
        decisions.append(result.decision)
        assert result.record == await mpi.get_record(result.record.id)
        person_now = await mpi.get_person(result.person.id)
        assert result.person == person_now.model_copy(update={"records": ()})
        stored = {i.id: i for i in await mpi.review_items()}
        for item in result.review_items:
            assert item == stored[item.id]
    assert decisions == [
        Decision.NEW_PERSON,
        Decision.LINKED,
        Decision.REVIEW,
        Decision.UNCHANGED_LINK,
        Decision.REVIEW,
    ]


async def test_a_connection_used_outside_a_transaction_is_still_reset(db: Database) -> None:
    """Only a committed Database.transaction() skips the pool's reset query: a session
    advisory lock taken on a plain connection is released when it goes back to the pool."""
    async with db.connection() as conn:
        assert await conn.fetchval("SELECT pg_try_advisory_lock(4242)")
    async with db.transaction() as conn:
        pass
    other = await asyncpg.connect(db.url, server_settings={})
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock(4242)")
    finally:
        await other.close()


async def test_a_read_connection_goes_back_to_the_pool_without_the_reset(db: Database) -> None:
    """Database.read() is for statements that leave no session state: its connection is not
    reset on release (the round trip saved), so a session lock taken on it stays held; a block
    that ends in an error is reset as usual."""
    async with db.read() as conn:
        assert await conn.fetchval("SELECT pg_try_advisory_lock(4343)")
    other = await asyncpg.connect(db.url, server_settings={})
    try:
        assert not await other.fetchval("SELECT pg_try_advisory_lock(4343)")  # still held
        with pytest.raises(ZeroDivisionError):
            async with db.read() as conn:
                assert await conn.fetchval("SELECT pg_try_advisory_lock(4345)")
                raise ZeroDivisionError
        assert await other.fetchval("SELECT pg_try_advisory_lock(4345)")  # reset: released
    finally:
        await other.close()
        await db.pool.expire_connections()  # let no test after this one inherit the lock


async def test_a_removed_record_registered_again_is_matched_like_a_new_one(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Remove(identifier=ref("HOSPA", "A1")), A)
    other = await mpi.handle(Register(subject=person("HOSPB", "B1")), B)
    assert other.decision == Decision.NEW_PERSON  # A1 is no candidate while removed
    again = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    assert not again.created
    assert again.decision == Decision.LINKED
    assert again.person.id == other.person.id != first.person.id
    assert again.record.status.value == "active" and again.record.version == 3
    assert again.record == await mpi.get_record(again.record.id)
    events = [e.event for e in await mpi.history(command_id=again.command_id)]
    assert events == ["record_updated", "link_set"]


async def test_a_new_record_does_not_wait_for_keys_too_common_to_give_candidates(
    db: Database, make_settings: Callable[..., Settings], run_database_url: str, schema: str
) -> None:
    """Migrations 0005 and 0010: a blocking key holding more than max_block records is never
    read for candidates, so a registration does not lock it once the service knows it to be
    oversized (the first registration to read its block tells); one that holds the lock of
    every other key is waited for. Three Smiths born in 1980 make the family + birth year key
    oversized with max_block 2."""
    core = Mpi(db, make_settings(matching={"max_block": 2, "term_frequencies": False}))
    await core.start()
    for value, given, day in (("A1", "Adam", "01"), ("A2", "Bert", "02"), ("A3", "Carl", "03")):
        await core.handle(
            Register(subject=person("HOSPA", value, given=given, birth_date=f"1980-05-{day}")),
            A,
        )
    incoming = person("HOSPB", "B1", given="Dave", birth_date="1980-06-04")
    domain = await core.domains.resolve(incoming.identifier.authority)
    keys = core.matcher.prepare(
        incoming.demographics.as_matching_input(), [(domain.id, "B1", None)]
    ).keys
    common = [k for k in keys if k.startswith("fp_by:")]
    assert len(common) == 1
    async with db.connection() as conn:
        usable = await conn.fetchrow(
            "SELECT * FROM usable_keys($1::text[], $2::bigint[], 2)",
            keys, [key_hash(k) for k in keys],
        )
        assert common[0] not in usable["keys"] and usable["keys"]
        assert usable["locks"] == [key_hash(k) for k in usable["keys"]]
        # every block oversized: the smallest (the first among equals) is used, and locked
        smallest = await conn.fetchrow(
            "SELECT * FROM usable_keys($1::text[], $2::bigint[], 0)",
            [common[0], "nm:unknown"], [1, 2],
        )
        assert (smallest["keys"], smallest["locks"]) == (["nm:unknown"], [2])

    holder = await asyncpg.connect(run_database_url, server_settings={"search_path": schema})
    try:
        # not known yet: the first registration meeting the key locks it, reads its block
        # and tells the service that it is oversized
        assert common[0] not in core.changes.oversized
        transaction = holder.transaction()
        await transaction.start()
        await Repository(holder).lock([common[0]])
        first = person("HOSPB", "B0", given="Eric", birth_date="1980-07-05")
        task = asyncio.create_task(core.handle(Register(subject=first), B))
        # it waits on the lock the holder keeps (polled, not slept on)
        await asyncio.wait_for(_waiting_backend(holder, [holder.get_server_pid()]), timeout=30)
        assert not task.done()
        await transaction.rollback()
        assert (await asyncio.wait_for(task, timeout=10)).decision == Decision.NEW_PERSON
        assert common[0] in core.changes.oversized
        # known: left out, not waited for
        transaction = holder.transaction()
        await transaction.start()
        await Repository(holder).lock([common[0]])
        result = await asyncio.wait_for(core.handle(Register(subject=incoming), B), timeout=10)
        assert result.decision == Decision.NEW_PERSON
        # a usable key held by another transaction is waited for
        await Repository(holder).lock([usable["keys"][0]])
        other = person("HOSPB", "B2", given="Dave", birth_date="1980-06-04")
        task = asyncio.create_task(core.handle(Register(subject=other), B))
        # it waits on the lock the holder keeps (polled, not slept on)
        await asyncio.wait_for(_waiting_backend(holder, [holder.get_server_pid()]), timeout=30)
        assert not task.done()
        await transaction.rollback()
        # ... and then finds B1 (same name and birth date): not a new person
        assert (await asyncio.wait_for(task, timeout=10)).decision != Decision.NEW_PERSON
    finally:
        await holder.close()


async def test_the_database_selects_candidates_as_matching_does(
    mpi: Mpi, db: Database
) -> None:
    """register_candidates selects the candidates in SQL (migrations 0005, 0006) so that their
    persons come in the same call; its selection must be matching.blocking.select_candidates'
    own, for usable and oversized blocks, id: keys, ties, the floor, the margin and the
    smallest-block fallback."""
    import random

    from matching.blocking import select_candidates

    rng = random.Random(7)
    async with db.connection() as conn:
        ids = [
            await conn.fetchval(
                """INSERT INTO source_record (domain_id, identifier, demographics, normalized)
                   VALUES ((SELECT min(id) FROM domain), $1, '{}', '{}') RETURNING id""",
                f"R{i}",
            )
            for i in range(20)
        ]
        keys = [f"k{j}" for j in range(8)] + ["id:1|X", "id:2|Y"]
        members: dict[str, list[int]] = {}
        for key in keys:
            size = rng.choice([0, 1, 3, 5, 9, 12, 20])
            members[key] = sorted(rng.sample(ids, size))
            for record_id in members[key]:
                await conn.execute("INSERT INTO blocking_key VALUES ($1, $2)", key, record_id)
        cut_by: set[tuple[int | None, int | None]] = set()
        for trial in range(150):
            asked = rng.sample(keys, rng.randint(1, len(keys)))
            max_block = rng.choice([2, 4, 8, 15])
            cap = rng.choice([1, 3, 10, 50])
            margin = rng.choice([None, 0, 1, 2, 4])
            min_keys = rng.choice([None, 1, 2, 3])
            rare_block = rng.choice([None, 0, 1, 3])
            selection = CandidateSelection(max_block, cap, margin, min_keys, rare_block)
            row = await conn.fetchrow(
                "SELECT * FROM register_candidates($1::text[], NULL, $2, $3, $4, $5, $6, $7)",
                asked, *selection.params(),
            )
            blocks = {key: members[key][: max_block + 1] for key in asked}
            expected = select_candidates(
                blocks, max_block=max_block, max_candidates=cap, margin=margin,
                min_keys=min_keys, rare_block=rare_block,
            )
            assert list(row["prefetched"]) == expected, (trial, selection)
            assert list(row["oversized"]) == [  # migration 0010
                k for k in asked if len(members[k]) > max_block and not k.startswith("id:")
            ]
            unlimited = select_candidates(blocks, max_block=max_block, max_candidates=10_000)
            assert row["candidates_found"] == len(unlimited)
            if len(expected) < len(select_candidates(blocks, max_block=max_block,
                                                     max_candidates=cap)):
                cut_by.add((margin, min_keys))
        # the floor alone and the margin alone did cut in some trials
        assert {m for m, k in cut_by if k is None} - {None}
        assert {k for m, k in cut_by if m is None} - {None}



async def test_the_floor_leaves_out_a_candidate_sharing_one_weak_key_but_not_a_sparse_records(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    """candidate_min_keys (2): a record that shares only its family name's sound and birth year
    with an indexed one does not make it a candidate (unless that key is rare: here every block
    is, so candidate_rare_block is 0 first); a record with a single usable key (a name and
    nothing else) still does, and so does one sharing an identifier."""
    from identity.model import Address

    mpi = Mpi(db, make_settings(matching={"candidate_rare_block": 0}))
    await mpi.start()

    home = (Address(postal_code="62701"),)
    ssn = ref("NATIONAL", "123456789")
    indexed = await mpi.handle(
        Register(subject=person("HOSPA", "A1", addresses=home, others=(ssn,))), A
    )

    async def candidates(record, mpi: Mpi = mpi) -> set[int]:  # type: ignore[no-untyped-def]
        identifiers = [((await mpi.domains.resolve(record.identifier.authority)).id,
                        record.identifier.value, None)]
        for other in record.other_identifiers:
            identifiers.append(((await mpi.domains.resolve(other.authority)).id, other.value,
                                None))
        keys = mpi.matcher.prepare(record.demographics.as_matching_input(), identifiers).keys
        async with db.connection() as conn:
            return set(await mpi.changes.candidates(Repository(conn), keys, None))

    # same family sound and birth year; another given name, day and postal code: one key
    weak = person("HOSPB", "B1", given="Walter", birth_date="1980-11-02",
                  addresses=(Address(postal_code="10001"),))
    assert await candidates(weak) == set()
    # the same, sharing the national identifier: a candidate
    assert await candidates(weak.model_copy(update={"other_identifiers": (ssn,)})) == {
        indexed.person.id}
    # a name and nothing else: one usable key, so one shared key is enough
    sparse = person("HOSPB", "B2", birth_date=None, sex=None)
    assert await candidates(sparse) == {indexed.person.id}
    # the one key shared is rare (its block holds one record): enough with the default of 10
    default = Mpi(db, make_settings())
    await default.start()
    assert default.matcher.settings.candidate_rare_block == 10
    assert await candidates(weak, default) == {indexed.person.id}


def test_oversized_keys_are_left_out_until_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a new record locks and reads (migration 0010): its keys less the known oversized
    ones (presized); all of them, sized in the database, when every one is known oversized."""
    from identity.mpi import changes

    clock = [100.0]
    monkeypatch.setattr(changes.time, "monotonic", lambda: clock[0])
    known = changes.OversizedKeys(ttl=60, limit=3)
    assert known.split(["a", "b"]) == (["a", "b"], True)  # nothing known: all, presized
    known.learn(["b"])
    assert known.split(["a", "b", "c"]) == (["a", "c"], True)
    assert known.split(["b"]) == (["b"], False)  # only oversized keys: sized in the database
    clock[0] += 61  # forgotten after ttl seconds
    assert known.split(["a", "b"]) == (["a", "b"], True) and len(known) == 0
    known.learn(["a", "b", "c"])
    assert len(known) == 3
    known.learn(["d"])  # over the limit: forgotten
    assert len(known) == 0
