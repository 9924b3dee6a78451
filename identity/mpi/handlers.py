"""One handler per command: ``async def handler(command, uow, core) -> result``.

Each runs inside the unit of work that :meth:`identity.mpi.Mpi.handle` opened for the
command (one transaction; history, outbox rows and the stored reply are written when it
ends). The steps that change the index live in :mod:`identity.mpi.changes` (register, merge,
link, ...) and :mod:`identity.mpi.review` (steward decisions, undo); a handler resolves what
the command names, checks the caller may do it, calls those steps and assembles the result.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from identity.audit.record import cx, human_requestor
from identity.errors import InvalidInput, NotFound, UnknownIdentifier
from identity.model import (
    CommandResult,
    Domain,
    RecordInput,
    RegisterResult,
    ReviewItem,
    StewardKind,
)
from identity.mpi import calibrated, review
from identity.mpi.changes import record_key
from identity.mpi.commands import (
    ApplyModel,
    ChangeIdentifier,
    Command,
    DecideReview,
    Link,
    Merge,
    MergePersons,
    Register,
    Remove,
    Subject,
    Undo,
    Unlink,
    UnlinkRecord,
)
from identity.mpi.core import Core
from identity.mpi.uow import UnitOfWork
from identity.store.repository import Repository
from identity.store.state import StoredRecord

log = logging.getLogger("identity.mpi")

Handler = Callable[[Any, UnitOfWork, Core], Awaitable[Any]]


async def register(cmd: Register, uow: UnitOfWork, core: Core) -> RegisterResult:
    source = uow.envelope.source
    domain, record = await core.resolve_subject(cmd.subject, source)
    if isinstance(cmd.subject, RecordInput):  # Received: chosen among those it may assign in
        core.check_source(domain, source)
    others = await core.other_identifiers(
        record.other_identifiers, domain, record.identifier.value
    )
    done = await core.changes.register_record(
        uow, domain, record, others, source, replace=cmd.replace
    )
    repo = uow.repo
    result = RegisterResult(
        decision=done.decision,
        record=(
            done.record.to_source_record(core.domains.by_id)
            if done.record is not None
            else await core.record(repo, done.record_id)
        ),
        person=(
            done.person
            if done.person is not None
            else await core.person(repo, done.person_id, with_records=False)
        ),
        created=done.created,
        review_items=(
            done.reviews
            if done.reviews is not None
            else await _review_items(repo, done.review_ids)
        ),
        command_id=str(uow.command_id),
        changed=done.changed,
    )
    log.info(
        "event=record_registered decision=%s record=%d person=%d domain=%s actor=%s",
        done.decision.value,
        done.record_id,
        done.person_id,
        domain.namespace,
        uow.actor,
    )
    return result


async def merge(cmd: Merge, uow: UnitOfWork, core: Core) -> CommandResult:
    source = uow.envelope.source
    domain, survivor = await core.resolve_subject(cmd.survivor, source)
    core.check_source(domain, source)
    retired = await core.prior_in_domain(survivor, domain, cmd.retired)
    applied, note, record_ids, person_ids = await core.changes.merge(
        uow, domain, retired, survivor.identifier.value
    )
    if applied and (survivor.demographics.model_dump(exclude_none=True) or survivor.cleared):
        others = await core.other_identifiers(
            survivor.other_identifiers, domain, survivor.identifier.value
        )
        await core.changes.register_record(
            uow, domain, survivor, others, source, replace=False
        )
    result = await core.command_result(uow, applied, record_ids, person_ids, note)
    log.info("event=merge applied=%s domain=%s actor=%s", applied, domain.namespace, uow.actor)
    return result


async def change_identifier(cmd: ChangeIdentifier, uow: UnitOfWork, core: Core) -> CommandResult:
    source = uow.envelope.source
    domain, record = await core.resolve_subject(cmd.subject, source)
    core.check_source(domain, source)
    old_value = await core.prior_in_domain(record, domain, cmd.prior)
    record_id, person_id = await core.changes.change_identifier(
        uow, domain, old_value, record.identifier.value
    )
    return await core.command_result(uow, True, [record_id], [person_id], None)


async def link(cmd: Link, uow: UnitOfWork, core: Core) -> CommandResult:
    a, b = await _ensure_records(uow, core, [cmd.a, cmd.b])
    persons = await core.changes.link(uow, a, b, cmd.kind)
    return await core.command_result(uow, True, [a.id, b.id], persons, None)


async def unlink(cmd: Unlink, uow: UnitOfWork, core: Core) -> CommandResult:
    a, b = await _lookup_records(uow, core, [cmd.a, cmd.b])
    if a.id == b.id:
        raise InvalidInput("both identifiers name one record: it cannot be unlinked from itself")
    persons = await core.changes.unlink(uow, a, b, cmd.reason)
    note = None if persons else "records were not linked"
    return await core.command_result(uow, bool(persons), [a.id, b.id], persons, note)


async def remove(cmd: Remove, uow: UnitOfWork, core: Core) -> CommandResult:
    source = uow.envelope.source
    domain = await core.domains.resolve_for_feed(cmd.identifier.authority, source)
    core.check_source(domain, source)
    record_id, person_id = await core.changes.remove(uow, domain, cmd.identifier.value)
    persons = [person_id] if person_id else []
    return await core.command_result(uow, True, [record_id], persons, None)


async def decide_review(cmd: DecideReview, uow: UnitOfWork, core: Core) -> CommandResult:
    persons, records = await review.decide(
        uow, core.changes, cmd.item_id, cmd.decision, cmd.reason, cmd.version
    )
    result = await core.command_result(uow, True, records, persons, cmd.decision.value)
    await uow.repo.log_steward_command(
        uow.command_id, actor=uow.actor, kind=StewardKind(cmd.decision.value),
        review_item_id=cmd.item_id, person_ids=persons, record_ids=records, reason=cmd.reason,
    )  # fmt: skip
    _audit_steward(uow, core, _STEWARD_AUDIT[cmd.decision], result, cmd.reason)
    return result


async def merge_persons(cmd: MergePersons, uow: UnitOfWork, core: Core) -> CommandResult:
    persons, records = await review.merge_persons(
        uow, core.changes, cmd.survivor, cmd.merged,
        survivor_version=cmd.survivor_version, merged_version=cmd.merged_version,
    )  # fmt: skip
    result = await core.command_result(uow, True, records, persons, "merged")
    await uow.repo.log_steward_command(
        uow.command_id, actor=uow.actor, kind=StewardKind.MERGE, person_ids=persons,
        record_ids=records, reason=cmd.reason,
    )  # fmt: skip
    _audit_steward(uow, core, "merge", result, cmd.reason)
    log.info("event=persons_merged survivor=%d merged=%d actor=%s",
             cmd.survivor, cmd.merged, uow.actor)
    return result


async def unlink_record(cmd: UnlinkRecord, uow: UnitOfWork, core: Core) -> CommandResult:
    persons, records = await review.unlink_record(
        uow, core.changes, cmd.record_id, version=cmd.version
    )
    result = await core.command_result(uow, True, records, persons, "unlinked")
    await uow.repo.log_steward_command(
        uow.command_id, actor=uow.actor, kind=StewardKind.UNLINK, person_ids=persons,
        record_ids=records, reason=cmd.reason,
    )  # fmt: skip
    _audit_steward(uow, core, "unlink", result, cmd.reason)
    log.info("event=record_unlinked record=%d actor=%s", cmd.record_id, uow.actor)
    return result


async def undo(cmd: Undo, uow: UnitOfWork, core: Core) -> CommandResult:
    persons = await review.undo(uow, core.changes, cmd.command_id)
    result = await core.command_result(uow, True, [], persons, f"undid {cmd.command_id}")
    await uow.repo.log_steward_command(
        uow.command_id, actor=uow.actor, kind=StewardKind.UNDO, person_ids=persons,
        reason=f"undid command {cmd.command_id}", undoes=cmd.command_id,
    )  # fmt: skip
    _audit_steward(uow, core, "undo", result, f"undid command {cmd.command_id}")
    return result


_STEWARD_AUDIT = {
    review.StewardDecision.SAME_PERSON: "link",
    review.StewardDecision.DIFFERENT_PERSONS: "no-match",
    review.StewardDecision.DISMISS: "dismiss",
}


def _audit_steward(
    uow: UnitOfWork, core: Core, decision: str, result: CommandResult, reason: str | None
) -> None:
    """One audit record per person the decision leaves (ITI-20: one per patient), naming the
    person by its enterprise identifier and its records' identifiers, the steward (the
    envelope's actor) as the human requestor."""
    if core.audit is None:
        return
    auditor = core.audit.auditor
    enterprise = core.domains.enterprise
    actor = uow.envelope.actor
    steward = human_requestor(actor.removeprefix("steward:"))
    for person in result.persons or ():
        if not person.records:  # merged away by the decision: its records are the survivor's
            continue
        patient = [cx(person.enterprise_id, oid=enterprise.oid, namespace=enterprise.namespace)]
        patient += [
            cx(r.identifier, oid=r.domain.oid, namespace=r.domain.namespace)
            for r in person.records
        ]
        uow.audit_record(auditor.steward_decision(
            decision, steward=steward, patient=patient, description=reason,
            message_id=uow.envelope.message_id,
        ))  # fmt: skip


async def apply_model(cmd: ApplyModel, uow: UnitOfWork, core: Core) -> CommandResult:
    persons = await calibrated.apply_model(uow, core.changes, cmd)
    return await core.command_result(uow, True, [], persons, f"model version {cmd.version}")


# --- the two records of a link or an unlink ---------------------------------------------------


async def _ensure_records(
    uow: UnitOfWork, core: Core, subjects: Sequence[Subject]
) -> list[StoredRecord]:
    """The active records the subjects name; an unknown one is registered first (TF2 ITI-30:
    A24 links even when a record is unknown)."""
    source = uow.envelope.source
    resolved = [await core.resolve_subject(s, source, strict=False) for s in subjects]
    _check_sources(core, source, resolved)
    await uow.repo.lock(sorted(record_key(d.id, r.identifier.value) for d, r in resolved))
    records = []
    for domain, record in resolved:
        value = record.identifier.value
        stored = await uow.repo.record_by_identifier(domain.id, value)
        if stored is None:
            core.check_source(domain, source)
            others = await core.other_identifiers(record.other_identifiers, domain, value)
            await core.changes.register_record(
                uow, domain, record, others, source, replace=False
            )
            stored = await uow.repo.record_by_identifier(domain.id, value)
        if stored is None or not stored.active:
            raise NotFound(f"record {value!r} is not active")
        records.append(stored)
    return records


async def _lookup_records(
    uow: UnitOfWork, core: Core, subjects: Sequence[Subject]
) -> list[StoredRecord]:
    """The active records the subjects name, row-locked; an unknown one is refused. A record
    is named by an identifier with its assigning authority (one without is refused: only a
    command that may register the record, as A24 does, completes it from the source)."""
    source = uow.envelope.source
    resolved = [await core.resolve_subject(s, source, strict=False) for s in subjects]
    for _, record in resolved:
        authority = record.identifier.authority
        if not authority.namespace and not authority.oid:
            raise InvalidInput("identifier has no assigning authority", field="authority")
    _check_sources(core, source, resolved)
    await uow.repo.lock(sorted(record_key(d.id, r.identifier.value) for d, r in resolved))
    records = []
    for domain, record in resolved:
        value = record.identifier.value
        stored = await uow.repo.record_by_identifier(domain.id, value, for_update=True)
        if stored is None or not stored.active:
            raise UnknownIdentifier(domain.namespace, value)
        records.append(stored)
    return records


def _check_sources(
    core: Core, source: str | None, resolved: Sequence[tuple[Domain, RecordInput]]
) -> None:
    """A link or an unlink changes the records of every domain it names: a sender (MSH-3, a
    FHIR client) must be allowed to write in each, before anything is read or locked. A
    command without a source comes from inside (a steward decision, a calibration), which
    its own door authorises."""
    if source is None:
        return
    for domain, _ in resolved:
        core.check_source(domain, source)


async def _review_items(repo: Repository, item_ids: Sequence[int]) -> tuple[ReviewItem, ...]:
    items = []
    for item_id in item_ids:
        item = await repo.review_item(item_id)
        assert item is not None  # opened by this command
        items.append(item)
    return tuple(items)


HANDLERS: dict[type[Command[Any]], Handler] = {
    Register: register,
    Merge: merge,
    ChangeIdentifier: change_identifier,
    Link: link,
    Unlink: unlink,
    Remove: remove,
    DecideReview: decide_review,
    MergePersons: merge_persons,
    UnlinkRecord: unlink_record,
    Undo: undo,
    ApplyModel: apply_model,
}
"""Which function handles which command (ImportRecords runs its own transaction: bulk.py)."""
