"""Steward decisions on the review queue, and undo."""

from __future__ import annotations

import pytest

from identity.errors import InvalidState, NotFound
from identity.model import Decision, LinkKind, PersonStatus, ReviewStatus
from identity.mpi import DecideReview, Envelope, Mpi, Register, StewardDecision, Undo

from .helpers import person

A = Envelope(source="ADT_A", actor="hl7:ADT_A")


async def _duplicate_pair(mpi: Mpi):  # type: ignore[no-untyped-def]
    first = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    second = await mpi.handle(Register(subject=person("HOSPA", "A2")), A)
    assert second.decision == Decision.REVIEW
    return first, second, second.review_items[0]


async def test_review_queue_lists_open_items(mpi: Mpi) -> None:
    _, second, item = await _duplicate_pair(mpi)
    items = await mpi.review_items()
    assert [i.id for i in items] == [item.id]
    assert items[0].record_id == second.record.id
    explanation = items[0].explanation
    assert explanation is not None
    assert {c["comparison"] for c in explanation["comparisons"]} >= {"family_name", "birth_date"}
    assert explanation["decision"]["hard_rules"] == ["same_source_duplicate"]


async def test_same_person_decision_links_manually(mpi: Mpi) -> None:
    first, second, item = await _duplicate_pair(mpi)
    await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON),
        Envelope(actor="steward:ann"),
    )
    record = await mpi.get_record(second.record.id)
    assert record.person_id == first.person.id
    assert record.link is not None and record.link.kind == LinkKind.MANUAL
    assert record.link.actor == "steward:ann"
    assert (await mpi.get_person(second.person.id)).status == PersonStatus.MERGED
    assert await mpi.review_items() == []
    (closed,) = await mpi.review_items(status="linked")
    assert closed.resolved_by == "steward:ann"


async def test_different_persons_decision_is_remembered(mpi: Mpi) -> None:
    _, second, item = await _duplicate_pair(mpi)
    await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.DIFFERENT_PERSONS, reason="twins"),
        Envelope(actor="steward:ann"),
    )
    (closed,) = await mpi.review_items(status="rejected")
    assert closed.id == item.id
    # A third record identical to both, from another domain, must not be linked to A1's person
    # through A2: the steward said they differ, so it goes to review.
    lab = await mpi.handle(
        Register(subject=person("LAB", "L1")), Envelope(actor="lis", source="LIS")
    )
    assert lab.decision == Decision.REVIEW


async def test_decided_item_cannot_be_decided_again(mpi: Mpi) -> None:
    _, _, item = await _duplicate_pair(mpi)
    await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.DISMISS),
        Envelope(actor="steward:ann"),
    )
    with pytest.raises(InvalidState):
        await mpi.handle(
            DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON),
            Envelope(actor="steward:ann"),
        )
    with pytest.raises(NotFound):
        await mpi.handle(
            DecideReview(item_id=999999, decision=StewardDecision.DISMISS),
            Envelope(actor="steward:ann"),
        )


async def test_undo_of_a_link_decision_restores_everything(mpi: Mpi) -> None:
    first, second, item = await _duplicate_pair(mpi)
    decided = await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON),
        Envelope(actor="steward:ann"),
    )
    await mpi.handle(Undo(command_id=decided.command_id), Envelope(actor="steward:ann"))
    record = await mpi.get_record(second.record.id)
    assert record.person_id == second.person.id
    assert record.link is not None and record.link.kind == LinkKind.AUTOMATIC
    assert (await mpi.get_person(second.person.id)).status == PersonStatus.ACTIVE
    (reopened,) = await mpi.review_items()
    assert reopened.id == item.id and reopened.status == ReviewStatus.OPEN
    events = await mpi.history(record_id=second.record.id)
    assert any(e.event == "undo:link_set" and e.actor == "steward:ann" for e in events)


async def test_undo_is_refused_when_something_changed_since(mpi: Mpi) -> None:
    first, second, item = await _duplicate_pair(mpi)
    decided = await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON),
        Envelope(actor="steward:ann"),
    )
    undone = await mpi.handle(Undo(command_id=decided.command_id), Envelope(actor="steward:ann"))
    with pytest.raises(InvalidState):
        await mpi.handle(
            Undo(command_id=decided.command_id), Envelope(actor="steward:ann")
        )  # already undone
    # the undo itself can be undone (redo)
    await mpi.handle(Undo(command_id=undone.command_id), Envelope(actor="steward:ann"))
    assert (await mpi.get_record(second.record.id)).person_id == first.person.id


async def test_feed_commands_are_not_undoable(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    with pytest.raises(InvalidState):
        await mpi.handle(Undo(command_id=first.command_id), Envelope(actor="steward:ann"))
    with pytest.raises(NotFound):
        await mpi.handle(
            Undo(command_id="00000000-0000-0000-0000-000000000000"), Envelope(actor="steward:ann")
        )


async def test_steward_decisions_are_audited_with_the_decision(mpi: Mpi) -> None:
    first, second, item = await _duplicate_pair(mpi)
    decided = await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON, reason="same SSN"),
        Envelope(actor="steward:ann", message_id="req-1"),
    )
    await mpi.handle(Undo(command_id=decided.command_id), Envelope(actor="steward:ann"))
    async with mpi.db.read() as conn:
        rows = await conn.fetch(
            "SELECT transaction, subtypes, requestor, patients, outcome FROM audit_event "
            "WHERE transaction = 'steward' ORDER BY id"
        )
    assert [(r["subtypes"], r["requestor"], r["outcome"]) for r in rows] == [
        (["steward-link"], "ann", 0),   # one person afterwards: one record
        (["steward-undo"], "ann", 0),   # two persons again: one record each
        (["steward-undo"], "ann", 0),
    ]
    linked = set(rows[0]["patients"])
    assert {"A1^^^&1.2.3.4.5.1&ISO", "A2^^^&1.2.3.4.5.1&ISO"} <= linked  # and the enterprise id
    assert len(linked) == 3
    assert {p.split("^")[0] for r in rows[1:] for p in r["patients"]} >= {"A1", "A2"}
