"""A replacing registration (FHIR PUT) reads and writes a known record in one call (migration
0011, register_replace); it must leave the index exactly as register_begin then
register_update leave it. Each scenario runs on two cores over two schemas, one of each way,
and the stored state is compared row by row."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from identity.config import Settings
from identity.errors import InvalidState
from identity.model import AuthorityRef, Decision, IdentifierRef, LinkKind, Phone
from identity.mpi import Mpi
from identity.mpi.uow import UPDATED_TOPIC
from identity.store.db import Database
from identity.store.migrate import migrate
from identity.store.repository import key_hash

from .helpers import person, ref

A = {"source": "ADT_A", "actor": "fhir:client-a"}
B = {"source": "ADT_B", "actor": "fhir:client-b"}
SSN = IdentifierRef(value="123-45-6789", authority=AuthorityRef(namespace="NATIONAL"))


async def _core(url: str, settings: Settings, one_call: bool) -> tuple[Mpi, Database, str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        await conn.execute(f'SET search_path TO "{name}"')
        await migrate(conn)
    finally:
        await conn.close()
    db = await Database.connect(url, min_size=1, max_size=4, server_settings={"search_path": name})
    mpi = Mpi(db, settings)
    await mpi.start()
    mpi.feed.replace_in_one_call = one_call
    mpi.fanout[UPDATED_TOPIC] = ("subscriber",)  # the update's outbox rows go to both topics
    return mpi, db, name


@pytest.fixture
async def cores(
    run_database_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[Mpi, Mpi]]:
    made = [await _core(run_database_url, make_settings(), one) for one in (True, False)]
    yield made[0][0], made[1][0]
    conn = await asyncpg.connect(run_database_url)
    try:
        for _, db, name in made:
            await db.close()
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        await conn.close()


def _plain(value: Any) -> Any:
    """JSON without what differs between two runs of the same commands: generated enterprise
    ids and times."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()
                if k not in ("enterprise_id", "created_at", "updated_at")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def _state(mpi: Mpi) -> dict[str, list[Any]]:
    queries = {
        "records": "SELECT id, domain_id, identifier, status, merged_into, demographics, "
                   "normalized, version, last_source FROM source_record ORDER BY id",
        "identifiers": "SELECT * FROM record_identifier ORDER BY 1, 2, 3",
        "keys": "SELECT key, source_record_id FROM blocking_key ORDER BY 2, 1",
        "links": "SELECT source_record_id, person_id, kind, score, explanation, actor "
                 "FROM link ORDER BY 1",
        "persons": "SELECT id, status, merged_into, version FROM person ORDER BY id",
        "reviews": "SELECT id, record_id, other_record_id, person_id, score, reason, status "
                   "FROM review_item ORDER BY id",
        "history": "SELECT id, event, entity, entity_id, person_id, record_id, before, after, "
                   "actor, message_id FROM history ORDER BY id",
        "outbox": "SELECT id, topic, payload FROM outbox ORDER BY id",
    }
    async with mpi.db.connection() as conn:
        return {
            name: [_plain(dict(r)) for r in await conn.fetch(sql)]
            for name, sql in queries.items()
        }


async def _both(cores: tuple[Mpi, Mpi], call: Callable[[Mpi], Any]) -> list[Any]:
    """The same command on both cores: their results (or errors) as comparable tuples."""
    results = []
    for mpi in cores:
        try:
            result = await call(mpi)
        except InvalidState as exc:
            results.append(("error", type(exc).__name__, str(exc)))
            continue
        record = getattr(result, "record", None)
        results.append((
            getattr(result, "decision", None),
            getattr(result, "created", None),
            None if record is None else (record.id, record.version, record.status,
                                         record.person_id, record.other_identifiers,
                                         record.demographics),
            [(i.record_id, i.other_record_id, i.reason) for i in
             getattr(result, "review_items", ())],
        ))
    assert results[0] == results[1]
    return results


async def test_one_call_replace_leaves_the_same_index_as_two_calls(
    cores: tuple[Mpi, Mpi],
) -> None:
    put: dict[str, Any] = {"replace": True, **A}

    # new records: a person with a national ID, the same person from another hospital
    assert (await _both(cores, lambda m: m.register(person("HOSPA", "A1", others=(SSN,)), **put)
                        ))[0][0] == Decision.NEW_PERSON
    assert (await _both(cores, lambda m: m.register(person("HOSPB", "B1", others=(SSN,)),
                                                    replace=True, **B)))[0][0] == Decision.LINKED
    # a new telephone number: written, the link to B1's person still holds
    phone = person("HOSPA", "A1", others=(SSN,), phones=(Phone(value="555-0101"),))
    done = await _both(cores, lambda m: m.register(phone, message_id="M3", **put))
    assert done[0][0] == Decision.UNCHANGED_LINK and done[0][2][1] == 2
    # the same PUT again: nothing written
    done = await _both(cores, lambda m: m.register(phone, **put))
    assert done[0][2][1] == 2
    # the national ID dropped and other demographics: the link no longer holds, a review
    other = person("HOSPA", "A1", family="Jones", given="Mary", birth_date="1990-01-01", sex="F")
    done = await _both(cores, lambda m: m.register(other, **put))
    assert done[0][0] == Decision.REVIEW and done[0][2][4] == ()
    # a record alone in its person, updated: matched again against its candidates
    await _both(cores, lambda m: m.register(person("HOSPA", "C1", family="Brown"), **put))
    await _both(cores, lambda m: m.register(
        person("HOSPA", "C1", family="Brown", given="Jon"), **put))
    # removed, then sent again: matched like a new record
    await _both(cores, lambda m: m.remove(ref("HOSPA", "C1"), source="ADT_A", actor="x"))
    done = await _both(cores, lambda m: m.register(person("HOSPA", "C1", family="Brown"), **put))
    assert done[0][2][2] == "active"
    # a manual link (E1's, to D1's person) is kept as it is through an update
    await _both(cores, lambda m: m.link(person("HOSPA", "D1", family="White"),
                                        person("HOSPA", "E1", family="Green", given="Ann"),
                                        source="ADT_A", actor="steward:s"))
    done = await _both(cores, lambda m: m.register(
        person("HOSPA", "E1", family="Green", given="Anne"), **put))
    assert done[0][0] == Decision.UNCHANGED_LINK
    # a merged identifier cannot be fed again
    await _both(cores, lambda m: m.register(person("HOSPA", "X1", family="Grey"), **put))
    await _both(cores, lambda m: m.merge(AuthorityRef(namespace="HOSPA"), "X1", "D1",
                                         source="ADT_A", actor="x"))
    done = await _both(cores, lambda m: m.register(person("HOSPA", "X1", family="Grey"), **put))
    assert done[0][0] == "error"

    one, two = [await _state(mpi) for mpi in cores]
    assert one == two
    events = [h["event"] for h in one["history"]]
    assert events.count("record_updated") == 5
    assert [o["topic"] for o in one["outbox"]].count("subscriber") == 4  # linked updates
    assert any(r["kind"] == LinkKind.MANUAL for r in one["links"])


async def test_sql_lock_ids_are_the_services(db: Database) -> None:
    """The database makes the lock ids of the blocking keys it reads (key_lock) as the service
    makes the others (key_hash): a key locked by both must be one lock."""
    keys = ["record:1|A1", "fam:SMITH|1980", "zip:K1A 0B1", "given:ÉLODIE", "", "x" * 300]
    async with db.connection() as conn:
        made = await conn.fetch("SELECT k, key_lock(k) AS id FROM unnest($1::text[]) AS k", keys)
    assert {r["k"]: r["id"] for r in made} == {k: key_hash(k) for k in keys}
    assert len({key_hash(k) for k in keys}) == len(keys)
