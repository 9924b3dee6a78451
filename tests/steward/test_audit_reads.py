"""What a steward looks at is audited (docs/audit.md): each view of patients' records through
the steward API or the console names the steward as the human requestor and the patients
shown by identifier only, the request redacted like a PDQ query."""

from __future__ import annotations

from identity.audit.record import Action
from identity.mpi import Mpi
from tests.steward.conftest import PEOPLE, Api, Console, duplicate_pair


async def _records(mpi: Mpi, subtype: str) -> list:  # type: ignore[type-arg]
    await mpi.audit.flush()
    return [s.record for s in await mpi.audit.search(subtypes=[subtype])]


async def test_api_reads_are_audited_per_patient_shown(api: Api) -> None:
    one, two, item = await duplicate_pair(api.mpi, **PEOPLE[0])
    await api.get(f"/review/{item.id}")
    views = await _records(api.mpi, "steward-view")
    assert len(views) == 2  # two records, two persons: one record per patient
    for record in views:
        assert record.action == Action.READ
        assert record.requestor == "ann"
        assert record.query is not None and record.query.startswith(b"GET /api/review/")
    shown = sorted(tuple(r.patients) for r in views)
    enterprise = api.mpi.domains.enterprise.oid
    assert any(cx.startswith(f"{one.record.identifier}^^^") for group in shown for cx in group)
    assert any(cx.startswith(f"{two.record.identifier}^^^") for group in shown for cx in group)
    assert all(any(f"&{enterprise}&ISO" in cx for cx in group) for group in shown)

    await api.get(f"/persons/{one.person.id}")
    await api.get(f"/records/{two.record.id}")
    assert len(await _records(api.mpi, "steward-view")) == 4


async def test_a_search_is_audited_with_its_demographics_redacted(api: Api) -> None:
    await duplicate_pair(api.mpi, **PEOPLE[1])
    await api.get("/search", family="Okafor", birth_date="1971-06-02")
    searches = await _records(api.mpi, "steward-search")
    assert searches and all(r.action == Action.EXECUTE for r in searches)
    query = searches[0].query or b""
    assert b"Okafor" not in query and b"1971" not in query
    assert b"family=*" in query and b"birth_date=*" in query


async def test_console_pages_are_audited_too(console: Console) -> None:
    _, _, item = await duplicate_pair(console.mpi, **PEOPLE[2])
    status, _, _ = await console.page("/steward/")
    assert status == 200
    status, _, _ = await console.page(f"/steward/review/{item.id}")
    assert status == 200
    queue = await _records(console.mpi, "steward-search")
    assert queue and queue[0].query is not None and queue[0].query.startswith(b"GET /steward/")
    views = await _records(console.mpi, "steward-view")
    assert views and all(r.requestor == "anonymous" for r in views)
