"""Steward decisions on review items, merges of two persons, unlinks of a record, and undo.

Every decision names the version it was made on (the review item's, or the persons'): when
the current version is another one, someone changed it since the steward read it, and the
decision is refused (StaleVersion) with nothing changed. A decision that makes two records one
person closes the other open review items it settles (both of their records now in one
person: dismissed, with that reason).

Undo works from history: every row that a command wrote carries the entity's state before and
after. Undoing restores the ``before`` states in reverse order, provided nothing else changed
those entities since; the undo is itself a command with its own history rows. Besides steward
decisions, links, unlinks and calibrations, a feed's merge (A40, ITI-104 and PMIR merges), its
change of identifier and a removal can be undone: the retired record is active again (its
blocking keys computed anew), and its person and the moved links are restored (an unmerge).
The survivor's demographics, when the merge message updated them, stay as updated.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from enum import StrEnum

from identity.errors import (
    IdentifierConflict,
    InvalidInput,
    InvalidState,
    NotFound,
    StaleVersion,
)
from identity.model import LinkKind, PersonStatus, RecordStatus, ReviewStatus
from identity.mpi.changes import Changes, record_key
from identity.mpi.uow import CHANGED_TOPIC, UnitOfWork
from identity.store.calibration import CalibrationQueries
from identity.store.registration import LinkWrite
from identity.store.state import StoredRecord

UNDOABLE = {"link", "person", "review_item", "no_match", "match_model", "source_record"}

RECORD_EVENTS_UNDONE = {"record_merged", "identifier_changed", "record_removed"}
"""The changes of a source record that undo reverts (the rest refuse an undo; a merge's update
of the survivor's demographics is kept)."""

SETTLED = "settled: both records are one person now"


class StewardDecision(StrEnum):
    SAME_PERSON = "same_person"  # link the record to the candidate person (manual link)
    DIFFERENT_PERSONS = "different_persons"  # no-match assertion; never auto-link them again
    DISMISS = "dismiss"  # close without a decision


def _check_version(entity: str, entity_id: int, current: int, expected: int | None) -> None:
    if expected is not None and expected != current:
        raise StaleVersion(entity, entity_id, expected, current)


async def decide(
    uow: UnitOfWork,
    changes: Changes,
    item_id: int,
    decision: StewardDecision,
    reason: str | None,
    version: int | None = None,
) -> tuple[list[int], list[int]]:
    """Apply a steward decision; returns the person ids and record ids touched."""
    repo = uow.repo
    item = await repo.review_item(item_id, for_update=True)
    if item is None:
        raise NotFound(f"review item {item_id} does not exist")
    _check_version("review item", item_id, item.version, version)
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
        if not record.active or not others or not others[0].active:
            raise InvalidState("the records of this review item are no longer active")
        target = others[0]
        touched = await changes.link(uow, target, record, LinkKind.MANUAL)
        assert target.person_id is not None
        await repo.touch_person(target.person_id)
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
    if decision == StewardDecision.SAME_PERSON and touched:
        await settle_reviews(uow, touched[0])
    return touched, [record.id, *(o.id for o in others)]


async def settle_reviews(uow: UnitOfWork, person_id: int) -> list[int]:
    """Close (dismissed, reason SETTLED) the open review items whose two records are now both
    records of ``person_id``; their ids."""
    repo = uow.repo
    records = {r.id for r in await repo.person_records([person_id])}
    settled = []
    for item_id in await repo.open_review_ids_touching(sorted(records), [person_id]):
        item = await repo.review_item(item_id, for_update=True)
        if item is None or item.status != ReviewStatus.OPEN:
            continue
        if item.other_record_id is not None:
            together = item.record_id in records and item.other_record_id in records
        else:
            together = item.record_id in records and item.person_id == person_id
        if not together:
            continue
        await repo.set_review_status(item_id, ReviewStatus.DISMISSED, uow.actor)
        uow.record(
            "review_dismissed",
            "review_item",
            item_id,
            before={"status": "open"},
            after={"status": "dismissed", "reason": SETTLED},
            record_id=item.record_id,
            person_id=item.person_id,
        )
        settled.append(item_id)
    return settled


async def _lock_person_records(uow: UnitOfWork, person_ids: list[int]) -> list[StoredRecord]:
    """Take the record keys of the persons' active records (as every command takes its
    records' keys first: identity.mpi.changes) and return those records."""
    repo = uow.repo
    records = await repo.person_records(person_ids)
    await repo.lock(sorted(record_key(r.domain_id, r.identifier) for r in records))
    return records


async def merge_persons(
    uow: UnitOfWork,
    changes: Changes,
    survivor_id: int,
    merged_id: int,
    *,
    survivor_version: int | None,
    merged_version: int | None,
) -> tuple[list[int], list[int]]:
    """Move every active record of ``merged_id`` to ``survivor_id`` (manual links); returns
    the person ids and record ids touched."""
    repo = uow.repo
    if survivor_id == merged_id:
        raise InvalidInput("a person cannot be merged into itself", field="merged")
    await _lock_person_records(uow, [survivor_id, merged_id])
    persons = {}
    for person_id in sorted((survivor_id, merged_id)):  # row locks in id order
        person = await repo.person(person_id, for_update=True)
        if person is None:
            raise NotFound(f"person {person_id} does not exist")
        persons[person_id] = person
    _check_version("person", survivor_id, persons[survivor_id].version, survivor_version)
    _check_version("person", merged_id, persons[merged_id].version, merged_version)
    for person in persons.values():
        if person.status != PersonStatus.ACTIVE:
            raise InvalidState(f"person {person.id} is {person.status.value}, not active")
    survivors = await repo.person_records([survivor_id])
    moving = await repo.person_records([merged_id])
    if not survivors or not moving:
        raise InvalidState("a person without active records cannot be merged")
    ids = [r.id for r in survivors + moving]
    for a, b in await repo.no_match_pairs_within(ids):
        await repo.delete_no_match(a, b)
        uow.record(
            "no_match_removed",
            "no_match",
            b,
            before={"record_a": a, "record_b": b},
            record_id=b,
        )
    moved = await changes.move_person(uow, merged_id, survivor_id, LinkKind.MANUAL)
    await repo.touch_person(survivor_id)
    uow.emit(
        CHANGED_TOPIC,
        {"event": "link", "record_ids": moved, "person_ids": [survivor_id, merged_id]},
    )
    await settle_reviews(uow, survivor_id)
    return [survivor_id, merged_id], moved


async def unlink_record(
    uow: UnitOfWork, changes: Changes, record_id: int, *, version: int | None
) -> tuple[list[int], list[int]]:
    """Make the record a person of its own, asserting it differs from every other active
    record of the person it leaves; returns the person ids and record ids touched."""
    repo = uow.repo
    found = await repo.record(record_id)
    if found is None:
        raise NotFound(f"record {record_id} does not exist")
    await repo.lock([record_key(found.domain_id, found.identifier)])
    record = await repo.record(record_id, for_update=True)
    assert record is not None
    if not record.active or record.person_id is None:
        raise InvalidState(f"record {record_id} is {record.status.value}, not active")
    person = await repo.person(record.person_id, for_update=True)
    assert person is not None
    _check_version("person", person.id, person.version, version)
    others = [r for r in await repo.person_records([person.id]) if r.id != record_id]
    if not others:
        raise InvalidState(f"record {record_id} is the only record of person {person.id}")
    for other in others:
        if await repo.add_no_match(record.id, other.id, actor=uow.actor, reason="unlinked"):
            uow.record(
                "no_match_added",
                "no_match",
                record.id,
                after={"record_a": record.id, "record_b": other.id},
                record_id=record.id,
                person_id=person.id,
            )
    new_person = await changes.new_person(uow, record.id)
    link = await repo.link(record.id)
    await changes.set_link(
        uow, record.id, new_person, kind=LinkKind.MANUAL, score=None, explanation=None,
        before=link,
    )
    await repo.touch_person(person.id)
    uow.emit(
        CHANGED_TOPIC,
        {"event": "unlink", "record_ids": [record.id], "person_ids": [person.id, new_person]},
    )
    return [person.id, new_person], [record.id]


async def undo(uow: UnitOfWork, changes: Changes, command_id: str) -> list[int]:
    """Revert the command ``command_id``; returns the person ids touched."""
    repo = uow.repo
    try:
        uuid.UUID(command_id)
    except ValueError as exc:
        raise InvalidInput(f"not a command id: {command_id!r}") from exc
    events = await repo.history(command_id=command_id)
    if await repo.history_archived(command_id):
        raise InvalidState(
            f"command {command_id} is archived (its history is older than [maintenance] "
            "history_retention_days): it cannot be undone"
        )
    if not events:
        raise NotFound(f"no command {command_id}")
    last_id = max(e.id for e in events)
    merged = any(e.event == "record_merged" for e in events)
    record_keys = set()
    for event in events:
        kept = event.event == "record_updated" and merged
        if event.entity not in UNDOABLE or (
            event.entity == "source_record" and event.event not in RECORD_EVENTS_UNDONE
            and not kept
        ):
            raise InvalidState(
                f"command {command_id} made a change ({event.event}) that cannot be undone: "
                "only steward decisions, links, unlinks, merges, changes of identifier, "
                "removals and calibrations can be"
            )
        if event.entity == "source_record" and not kept:
            before = event.before or {}
            record_keys.add(record_key(before["domain_id"], before["identifier"]))
            if event.after and event.after.get("identifier") != before["identifier"]:
                record_keys.add(record_key(before["domain_id"], event.after["identifier"]))
        if await repo.later_history_exists(event.entity, event.entity_id, last_id):
            raise InvalidState(
                f"{event.entity} {event.entity_id} changed after command {command_id}"
            )
    if record_keys:
        await repo.lock(sorted(record_keys))
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
        elif event.entity == "source_record":
            if event.event == "record_updated":
                continue  # a merge's update of the survivor: kept, nothing to record
            person_id = await _restore_record(uow, changes, event.entity_id, event.before or {})
            if person_id is not None:
                touched.add(person_id)
        uow.record(
            "undo:" + event.event,
            event.entity,
            event.entity_id,
            before=event.after,
            after=event.before,
            person_id=event.person_id,
            record_id=event.record_id,
        )
    for person_id in sorted(touched):
        await repo.touch_person(person_id)
    uow.emit(
        CHANGED_TOPIC,
        {"event": "undo", "undone_command": command_id, "person_ids": sorted(touched)},
    )
    return sorted(touched)


async def _restore_record(
    uow: UnitOfWork, changes: Changes, record_id: int, before: dict[str, object]
) -> int | None:
    """Set a merged, renamed or removed record back to its ``before`` state (status and
    identifier), with its blocking keys; its person's id."""
    repo = uow.repo
    record = await repo.record(record_id, for_update=True)
    if record is None:
        raise NotFound(f"record {record_id} does not exist")
    identifier = str(before.get("identifier", record.identifier))
    if identifier != record.identifier:
        clash = await repo.record_by_identifier(record.domain_id, identifier)
        if clash is not None and clash.id != record.id:
            raise IdentifierConflict(
                f"identifier {identifier!r} belongs to another record now (record {clash.id})"
            )
        await repo.set_record_identifier(record.id, identifier)
        record = replace(record, identifier=identifier)
    status = RecordStatus(str(before.get("status", RecordStatus.ACTIVE.value)))
    if status != record.status:
        await repo.set_record_status(record.id, status, None)
    if status == RecordStatus.ACTIVE:
        prepared = changes.matcher.prepare(
            record.demographics.as_matching_input(),
            [(record.domain_id, identifier, None), *record.others],
        )
        await repo.set_blocking_keys(record.id, prepared.keys)
    return record.person_id
