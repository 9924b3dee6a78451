"""audit_event: records written in one round trip (with their outbox row) and searched."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from identity.audit.record import AUDIT_TOPIC, AuditRecord, cx, records_of_payload
from identity.store.audit import AuditStore
from identity.store.db import Database
from identity.store.outbox import OutboxStore

from .helpers import (
    AT,
    HOSPA,
    feed,
    pdq_query,
    pix_query,
    pixm_feed,
    pixm_query,
    refused_feed,
    refused_query,
    steward_link,
)


def corpus() -> list[AuditRecord]:
    """Records an hour apart, oldest first."""
    records = [feed("C"), feed("U"), pix_query(), *pdq_query(), pixm_query(), pixm_feed("C"),
               refused_feed(), refused_query(), steward_link()]  # fmt: skip
    return [replace(r, recorded=AT + timedelta(hours=i)) for i, r in enumerate(records)]


async def test_insert_returns_ids_in_order_and_stores_the_records(db: Database) -> None:
    records = corpus()
    async with db.transaction() as conn:
        ids = await AuditStore(conn).insert(records)
    assert ids == sorted(ids) and len(ids) == len(records)
    async with db.read() as conn:
        store = AuditStore(conn)
        for record_id, record in zip(ids, records, strict=True):
            stored = await store.get(record_id)
            assert stored is not None and stored.record == record
        assert await store.get(-1) is None
        row = await conn.fetchrow(
            "SELECT transaction, event_id, interaction, subtypes, action, outcome, agent,"
            " requestor, patients FROM audit_event WHERE id = $1", ids[0])  # fmt: skip
        assert dict(row) == {
            "transaction": "ITI-8", "event_id": "110110", "interaction": None,
            "subtypes": ["ITI-8"], "action": "C", "outcome": 0, "agent": "ADT_A|HOSPA",
            "requestor": None,
            "patients": [f"HA1001^^^&{HOSPA}&ISO",
                         "0000000001^^^&1.3.6.1.4.1.21367.2026.1.1&ISO"],
        }  # fmt: skip
        assert await OutboxStore(conn).pending_count(AUDIT_TOPIC) == 0
        assert await AuditStore(conn).insert([]) == []


async def test_insert_with_the_outbox_writes_one_row_of_all_records(db: Database) -> None:
    records = corpus()[:3]
    async with db.transaction() as conn:
        await AuditStore(conn).insert(records, topic=AUDIT_TOPIC)
    async with db.read() as conn:
        entry = await OutboxStore(conn).head(AUDIT_TOPIC)
    assert entry is not None and records_of_payload(entry.payload) == records


async def test_a_rolled_back_transaction_keeps_no_record(db: Database) -> None:
    class Boom(Exception):
        pass

    try:
        async with db.transaction() as conn:
            await AuditStore(conn).insert([feed()], topic=AUDIT_TOPIC)
            raise Boom
    except Boom:
        pass
    async with db.read() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_event") == 0
        assert await OutboxStore(conn).pending_count(AUDIT_TOPIC) == 0


async def test_search(db: Database) -> None:
    records = corpus()
    async with db.transaction() as conn:
        ids = await AuditStore(conn).insert(records)
    by_id = dict(zip(ids, records, strict=True))

    async def found(**criteria: object) -> list[int]:
        async with db.read() as conn:
            return [s.id for s in await AuditStore(conn).search(limit=100, **criteria)]

    newest_first = sorted(ids, reverse=True)
    assert await found() == newest_first
    ha1001 = cx("HA1001", oid=HOSPA)
    assert await found(patient=ha1001) == [
        i for i in newest_first if ha1001 in by_id[i].patients]
    assert len(await found(patient=ha1001)) == 7
    assert await found(patient=cx("B-77001", namespace="HOSPB")) == [ids[9], ids[4]]
    assert await found(patient=cx("nobody", oid=HOSPA)) == []
    # date: [since, until)
    assert await found(since=AT + timedelta(hours=2), until=AT + timedelta(hours=4)) == [
        ids[3], ids[2]]
    # type: the AuditEvent.type code
    assert await found(types=["110110"]) == [ids[9], ids[7], ids[1], ids[0]]
    assert await found(types=["rest"]) == [ids[8], ids[6], ids[5]]
    assert await found(types=["110112", "rest"]) == [ids[8], ids[6], ids[5], ids[4], ids[3],
                                                      ids[2]]  # fmt: skip
    assert await found(types=[]) == []
    # subtype: the transaction, the interaction, a local event type
    assert await found(subtypes=["ITI-9"]) == [ids[2]]
    assert await found(subtypes=["ITI-21", "ITI-83"]) == [ids[5], ids[4], ids[3]]
    assert await found(subtypes=["create"]) == [ids[6]]
    assert await found(subtypes=["steward-link"]) == [ids[9]]
    # outcome
    assert await found(outcomes=[4]) == [ids[8], ids[7]]
    assert await found(outcomes=[0, 4]) == newest_first
    # agent: the source, or a human requestor
    assert await found(agent="ADT_A|HOSPA") == [ids[1], ids[0]]
    assert await found(agent="steward.sue") == [ids[9]]
    assert await found(agent="STEWARD_CONSOLE") == [ids[9]]
    assert await found(agent="dr.who") == [ids[5]]
    # together, and paging
    assert await found(patient=ha1001, outcomes=[0], types=["110110"]) == [ids[9], ids[1],
                                                                           ids[0]]  # fmt: skip
    async with db.read() as conn:
        store = AuditStore(conn)
        page1 = await store.search(limit=4)
        page2 = await store.search(limit=4, after_id=page1[-1].id)
        page3 = await store.search(limit=4, after_id=page2[-1].id)
    assert [s.id for s in page1 + page2 + page3] == newest_first
    assert page1[0].record == by_id[page1[0].id]
