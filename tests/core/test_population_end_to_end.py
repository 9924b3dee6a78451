"""A generated population fed through the MPI core, one registration at a time, scored
against its ground truth (the figures of the matching issue, at a smaller size)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from identity.batch import record_input
from identity.config import Settings
from identity.model import Decision
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database
from matching.evaluate import pairwise_figures
from matching.synth import SOURCE_DOMAINS, SSN_DOMAIN, generate

DOMAINS = [{"namespace": ns, "oid": oid} for ns, oid in SOURCE_DOMAINS.items()] + [
    {"namespace": "SSN", "oid": SSN_DOMAIN, "identifies_person": True}
]


@pytest.mark.slow
async def test_generated_population_through_the_core(
    db: Database, make_settings: Callable[..., Settings]
) -> None:
    core = Mpi(db, make_settings(domains=DOMAINS))
    await core.start()
    records = generate(400, 0.25, seed=11, hard=True)
    reviewed = 0
    for record in records:
        result = await core.handle(
            Register(subject=record_input(record)),
            Envelope(actor="test:population", source=record.source_domain),
        )
        reviewed += result.decision == Decision.REVIEW
    # Persons as they stand at the end (later links may have merged earlier persons).
    final = {}
    for record in records:
        found = await core.find_record(record_input(record).identifier)
        assert found.person_id is not None
        final[record.record_id] = found.person_id

    truth = [r.person_id for r in records]
    predicted = [final[r.record_id] for r in records]
    figures = pairwise_figures(truth, predicted)
    assert figures["true_pairs"] > 50
    assert figures["pairwise_precision"] >= 0.999, figures
    assert figures["pairwise_f1"] >= 0.95, figures
    assert reviewed / len(records) <= 0.03, reviewed

    # Twins and Jr/Sr pairs are never merged: within each twin (Jr/Sr) group, records of
    # different true persons end in different persons of the MPI.
    groups: dict[tuple[str, str], dict[str, set[int]]] = {}
    for record in records:
        for relation in ("twin", "jr_sr"):
            group = record.relations.get(relation)
            if group is not None:
                members = groups.setdefault((relation, group), {})
                members.setdefault(record.person_id, set()).add(final[record.record_id])
    compared = 0
    for (relation, group), members in groups.items():
        persons = list(members.values())
        for i, first in enumerate(persons):
            for second in persons[i + 1 :]:
                assert not first & second, (relation, group, members)
                compared += 1
    assert compared > 20  # the hard population does hold twins and Jr/Sr pairs
