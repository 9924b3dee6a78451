"""Steward decisions on review items, and undo of any steward command.

Undo works from history: every row that a command wrote carries the entity's state before and
after. Undoing restores the ``before`` states in reverse order, provided nothing else changed
those entities since; the undo is itself a command with its own history rows.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from identity.errors import InvalidInput, InvalidState, NotFound
from identity.model import LinkKind, PersonStatus, ReviewStatus
from identity.mpi.changes import Changes
from identity.mpi.uow import CHANGED_TOPIC, UnitOfWork
from identity.store.calibration import CalibrationQueries
from identity.store.registration import LinkWrite

UNDOABLE = {"link", "person", "review_item", "no_match", "match_model"}


class StewardDecision(StrEnum):
    SAME_PERSON = "same_person"  # link the record to the candidate person (manual link)
    DIFFERENT_PERSONS = "different_persons"  # no-match assertion; never auto-link them again
    DISMISS = "dismiss"  # close without a decision


async def decide(
    uow: UnitOfWork, changes: Changes, item_id: int, decision: StewardDecision, reason: str | None
) -> list[int]:
    """Apply a steward decision; returns the person ids touched."""
    repo = uow.repo
    item = await repo.review_item(item_id, for_update=True)
    if item is None:
        raise NotFound(f"review item {item_id} does not exist")
    if item.status != ReviewStatus.OPEN:
        raise InvalidState(f"review item {item_id} is already {item.status.value}")
    record = await repo.record(item.record_id, for_update=True)
    assert record is not None
    other_ids = [item.other_record_id] if item.other_record_id else []
    if item.person_id and not other_ids:
        other_ids = [r.id for r in await repo.person_records([item.person_id])]
    others = await repo.records(other_ids) if other_ids else []
    touched: list[int] = []
    if decision == StewardDecision.SAME_PERSON:
        if not record.active or not others:
            raise InvalidState("the records of this review item are no longer active")
        target = others[0]
        touched = await changes.link(uow, target, record, LinkKind.MANUAL)
        status = ReviewStatus.LINKED
    elif decision == StewardDecision.DIFFERENT_PERSONS:
        for other in others:
            if await repo.add_no_match(record.id, other.id, actor=uow.actor, reason=reason):
                uow.record(
                    "no_match_added",
                    "no_match",
                    record.id,
                    after={"record_a": record.id, "record_b": other.id},
                    record_id=record.id,
                    person_id=other.person_id,
                )
            if other.person_id == record.person_id:
                touched = await changes.unlink(uow, other, record, reason)
        status = ReviewStatus.REJECTED
    elif decision == StewardDecision.DISMISS:
        status = ReviewStatus.DISMISSED
    else:  # pragma: no cover - StrEnum exhausts the cases
        raise InvalidInput(f"unknown decision {decision!r}")
    await repo.set_review_status(item_id, status, uow.actor)
    uow.record(
        "review_" + status.value,
        "review_item",
        item_id,
        before={"status": "open"},
        after={"status": status.value, "reason": reason},
        record_id=record.id,
        person_id=item.person_id,
    )
    return touched


async def undo(uow: UnitOfWork, changes: Changes, command_id: str) -> list[int]:
    """Revert the command ``command_id``; returns the person ids touched."""
    repo = uow.repo
    try:
        uuid.UUID(command_id)
    except ValueError as exc:
        raise InvalidInput(f"not a command id: {command_id!r}") from exc
    events = await repo.history(command_id=command_id)
    if not events:
        raise NotFound(f"no command {command_id}")
    last_id = max(e.id for e in events)
    for event in events:
        if event.entity not in UNDOABLE:
            raise InvalidState(
                f"command {command_id} changed a {event.entity}; only steward decisions, "
                "links, unlinks and calibrations can be undone"
            )
        if await repo.later_history_exists(event.entity, event.entity_id, last_id):
            raise InvalidState(
                f"{event.entity} {event.entity_id} changed after command {command_id}"
            )
    touched: set[int] = set()
    for event in reversed(events):
        if event.entity == "link":
            current = await repo.link(event.entity_id)
            if event.before is None:
                await repo.delete_link(event.entity_id)
            else:
                b = event.before  # a link_snapshot
                await repo.set_link(
                    event.entity_id,
                    b["person_id"],
                    LinkWrite(
                        kind=LinkKind(b["kind"]),
                        score=b["score"],
                        explanation=b["explanation"],
                        actor=b["actor"],
                    ),
                )
                touched.add(b["person_id"])
            if current is not None:
                touched.add(current.person_id)
        elif event.entity == "person":
            before = event.before or {"status": PersonStatus.RETIRED.value, "merged_into": None}
            await repo.set_person_status(
                event.entity_id, PersonStatus(before["status"]), before.get("merged_into")
            )
            touched.add(event.entity_id)
        elif event.entity == "review_item":
            before = event.before or {"status": ReviewStatus.DISMISSED.value}
            await repo.set_review_status(event.entity_id, ReviewStatus(before["status"]), uow.actor)
        elif event.entity == "match_model":  # identity calibrate --apply
            before = event.before or {}
            await CalibrationQueries(uow.repo.conn).activate(before.get("active_version"))
        elif event.entity == "no_match":
            pair = event.after or event.before or {}
            if event.before is None:
                await repo.delete_no_match(pair["record_a"], pair["record_b"])
            else:
                await repo.add_no_match(
                    pair["record_a"], pair["record_b"], actor=uow.actor, reason="undo"
                )
        uow.record(
            "undo:" + event.event,
            event.entity,
            event.entity_id,
            before=event.after,
            after=event.before,
            person_id=event.person_id,
            record_id=event.record_id,
        )
    uow.emit(
        CHANGED_TOPIC,
        {"event": "undo", "undone_command": command_id, "person_ids": sorted(touched)},
    )
    return sorted(touched)
