"""Bulk import (ImportRecords, identity.mpi.bulk): a generated population loaded by the set
path, a chunk per transaction, into an empty or a populated index."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from identity.batch import record_input
from identity.config import Settings
from identity.model import Decision, PersonStatus, ReviewStatus
from identity.mpi import Envelope, ImportRecords, Mpi, Register
from identity.store.db import Database
from matching.evaluate import pairwise_figures
from matching.synth import SOURCE_DOMAINS, SSN_DOMAIN, generate

DOMAINS = [{"namespace": ns, "oid": oid} for ns, oid in SOURCE_DOMAINS.items()] + [
    {"namespace": "SSN", "oid": SSN_DOMAIN, "identifies_person": True}
]


@pytest.fixture
async def core(db: Database, make_settings: Callable[..., Settings]) -> Mpi:
    mpi = Mpi(db, make_settings(domains=DOMAINS))
    await mpi.start()
    return mpi


async def test_bulk_import_matches_the_population(core: Mpi) -> None:
    population = generate(500, 0.25, seed=21, hard=True)
    report = await core.handle(
        ImportRecords(records=[record_input(r) for r in population], workers=1),
        Envelope(actor="import:test"),
    )
    assert report.records == len(population)
    assert report.persons < report.records
    final = [(await core.find_record(record_input(r).identifier)).person_id for r in population]
    figures = pairwise_figures([r.person_id for r in population], final)
    assert figures["pairwise_precision"] >= 0.999, figures
    assert figures["pairwise_f1"] >= 0.95, figures
    # twins and Jr/Sr pairs stay apart
    groups: dict[tuple[str, str], dict[str, set[int | None]]] = {}
    for record, person in zip(population, final, strict=True):
        for relation in ("twin", "jr_sr"):
            if (group := record.relations.get(relation)) is not None:
                groups.setdefault((relation, group), {}).setdefault(record.person_id, set()).add(
                    person
                )
    compared = 0
    for members in groups.values():
        sets = list(members.values())
        for i, first in enumerate(sets):
            for second in sets[i + 1 :]:
                assert not first & second
                compared += 1
    assert compared > 20
    # what was written is the same shape the feed writes
    sample = await core.find_record(record_input(population[0]).identifier)
    assert sample.link is not None and sample.enterprise_id is not None
    # what was loaded is VACUUMed before the service works on it (the visibility map set,
    # so that the candidate search reads blocking keys from the index alone)
    async with core.db.connection() as conn:
        vacuumed = await conn.fetch(
            "SELECT relname FROM pg_stat_user_tables WHERE last_vacuum IS NOT NULL"
        )
    assert {"source_record", "blocking_key", "history"} <= {r["relname"] for r in vacuumed}
    person = await core.get_person(sample.person_id)  # type: ignore[arg-type]
    assert person.status == PersonStatus.ACTIVE and sample.id in {r.id for r in person.records}
    # the history a feed writes for a new record
    events = {e.event for e in await core.history(record_id=sample.id)}
    assert {"record_created", "link_set"} <= events
    items = await core.review_items(limit=1000)
    assert len(items) == report.review_items
    assert all(i.status == ReviewStatus.OPEN for i in items)


async def test_feed_after_import_links_to_imported_persons(core: Mpi) -> None:
    population = generate(200, 0.0, seed=5)
    await core.handle(
        ImportRecords(records=[record_input(r) for r in population], workers=1),
        Envelope(actor="import:test"),
    )
    first = population[0]
    again = record_input(first).model_copy(
        update={"identifier": record_input(first).identifier.model_copy(update={"value": "NEW1"})}
    )
    other_domain = next(ns for ns in SOURCE_DOMAINS if ns != first.source_domain)
    moved = again.model_copy(
        update={"identifier": again.identifier.model_copy(
            update={"authority": again.identifier.authority.model_copy(
                update={"namespace": other_domain})})}
    )
    result = await core.handle(Register(subject=moved), Envelope(actor="t", source=other_domain))
    imported = await core.find_record(record_input(first).identifier)
    assert result.decision == Decision.LINKED
    assert result.person.id == imported.person_id


async def test_bulk_import_into_a_populated_index_in_small_chunks(core: Mpi) -> None:
    """Loaded in two runs, the second a chunk of 50 records at a time: the second run's
    records find the first run's persons (through the index's blocking keys) and those of
    earlier chunks; as precise as one run."""
    population = generate(300, 0.3, seed=33, hard=True)
    inputs = [record_input(r) for r in population]
    half = len(inputs) // 2
    await core.handle(ImportRecords(records=inputs[:half], workers=1),
                      Envelope(actor="import:test"))
    report = await core.handle(ImportRecords(records=inputs[half:], workers=1, chunk=50),
                               Envelope(actor="import:test"))
    assert report.records == len(inputs) - half
    assert report.linked_records > 0
    final = [(await core.find_record(r.identifier)).person_id for r in inputs]
    figures = pairwise_figures([r.person_id for r in population], final)
    assert figures["pairwise_precision"] >= 0.999, figures
    # persons that span both runs: the second run linked to what the first made
    first_run = set(final[:half])
    assert any(person in first_run for person in final[half:])
    again = await core.handle(ImportRecords(records=inputs[:10], workers=1),
                              Envelope(actor="import:test"))
    assert again.records == 0 and again.duplicates_skipped == 10  # in the index: registered


async def test_repeated_identifier_in_file_keeps_the_last(core: Mpi) -> None:
    population = [record_input(r) for r in generate(5, 0.0, seed=9)]
    changed = population[0].model_copy(
        update={"demographics": population[0].demographics.model_copy(update={"sex": "F"})}
    )
    report = await core.handle(
        ImportRecords(records=[*population, changed], workers=1),
        Envelope(actor="import:test"),
    )
    assert report.duplicates_skipped == 1 and report.records == 5
    assert (await core.find_record(changed.identifier)).demographics.sex == "F"
