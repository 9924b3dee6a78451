"""Two feeds of the same person at the same moment must end with one person.

The registrations run on separate connections of separate pools (as separate processes
would); only the advisory locks on blocking keys serialise them. Remove ``Repository.lock``
and these tests fail: every registration then creates its own person.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from identity.config import Settings
from identity.mpi import Mpi
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
                    core.register(
                        person(f"SITE{i}", f"R{round_}", family=family), source="X", actor="t"
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
                core.register(
                    person(
                        f"SITE{i}",
                        "N1",
                        family=f"Name{i}",
                        given=f"Given{i}",
                        others=(ref("NATIONAL", "555"),),
                    ),
                    source="X",
                    actor="t",
                )
                for i, (_, core) in enumerate(cores)
            )
        )
        assert len({r.person.id for r in results}) == 1
    finally:
        for db, _ in cores:
            await db.close()
