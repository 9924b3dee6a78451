"""Two feeds of the same person at the same moment must end with one person.

The registrations run on separate connections of separate pools (as separate processes
would); only the advisory locks on blocking keys serialise them. Remove ``Repository.lock``
and these tests fail: every registration then creates its own person.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from identity.config import Settings
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database

from .helpers import person, ref

DOMAINS = [{"namespace": f"SITE{i}", "oid": f"1.2.3.9.{i}", "sources": []} for i in range(8)] + [
    {"namespace": "NATIONAL", "oid": "2.16.840.1.113883.4.1", "identifies_person": True}
]


async def _cores(url: str, schema: str, settings: Settings, n: int) -> list[tuple[Database, Mpi]]:
    cores = []
    for _ in range(n):
        db = await Database.connect(
            url, min_size=1, max_size=2, server_settings={"search_path": schema}
        )
        core = Mpi(db, settings)
        await core.start()
        cores.append((db, core))
    return cores


async def test_concurrent_registrations_of_one_person_create_one_person(
    run_database_url: str, schema: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(domains=DOMAINS)
    cores = await _cores(run_database_url, schema, settings, 8)
    try:
        for round_ in range(5):
            family = f"Concurrent{round_}"
            results = await asyncio.gather(
                *(
                    core.handle(
                        Register(subject=person(f"SITE{i}", f"R{round_}", family=family)),
                        Envelope(actor="t", source="X"),
                    )
                    for i, (_, core) in enumerate(cores)
                )
            )
            assert len({r.person.id for r in results}) == 1, f"round {round_}"
    finally:
        for db, _ in cores:
            await db.close()


async def test_concurrent_registrations_sharing_a_national_id_create_one_person(
    run_database_url: str, schema: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(domains=DOMAINS)
    cores = await _cores(run_database_url, schema, settings, 8)
    try:
        results = await asyncio.gather(
            *(
                core.handle(Register(subject=person(
                        f"SITE{i}",
                        "N1",
                        family=f"Name{i}",
                        given=f"Given{i}",
                        others=(ref("NATIONAL", "555"),),
                    )), Envelope(actor="t", source="X"))
                for i, (_, core) in enumerate(cores)
            )
        )
        assert len({r.person.id for r in results}) == 1
    finally:
        for db, _ in cores:
            await db.close()


async def test_row_locks_of_a_feed_do_not_block_references_to_the_record(
    mpi: Mpi, db: Database
) -> None:
    """A command holds its record's row while it waits for blocking-key locks; another command
    that references that record (a link, a review item: a foreign-key check) must not wait for
    it, or the two deadlock. The row lock is therefore FOR NO KEY UPDATE, which a foreign-key
    check does not conflict with."""
    from identity.store.repository import Repository

    first = await mpi.handle(
        Register(subject=person("HOSPA", "A1")), Envelope(actor="t", source="ADT_A")
    )
    async with db.transaction() as conn:
        held = await Repository(conn).record(first.record.id, for_update=True)
        assert held is not None
        # the same person again from the same source: a review item pointing at A1
        second = await asyncio.wait_for(
            mpi.handle(
                Register(subject=person("HOSPA", "A2")), Envelope(actor="t", source="ADT_A")
            ),
            timeout=10,
        )
    assert second.review_items and second.review_items[0].other_record_id == first.record.id


async def test_same_message_delivered_twice_at_once_is_applied_once(
    run_database_url: str, schema: str, make_settings: Callable[..., Settings]
) -> None:
    from identity.errors import AlreadyProcessed

    settings = make_settings(domains=DOMAINS)
    cores = await _cores(run_database_url, schema, settings, 2)
    try:
        outcomes = await asyncio.gather(
            *(
                core.handle(
                    Register(subject=person("SITE0", "M1")),
                    Envelope(actor="t", source="X", sender="APP|FAC", message_id="MSG-1",
                             reply=lambda r: f"ACK {r.record.id}"),
                )
                for _, core in cores
            ),
            return_exceptions=True,
        )
        applied = [o for o in outcomes if not isinstance(o, BaseException)]
        repeated = [o for o in outcomes if isinstance(o, AlreadyProcessed)]
        assert len(applied) == 1 and len(repeated) == 1, outcomes
        assert repeated[0].reply == f"ACK {applied[0].record.id}"
        history = await cores[0][1].history(record_id=applied[0].record.id)
        assert [e.event for e in history].count("record_created") == 1
    finally:
        for db, _ in cores:
            await db.close()
