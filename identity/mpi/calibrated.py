"""The core's side of ``identity calibrate --apply``: a stored model version goes in service
and the changes its dry run planned are made, in one unit of work (one command id)."""

from __future__ import annotations

import logging

from identity.errors import NotFound
from identity.model import LinkKind, ReviewStatus
from identity.mpi.changes import Changes, record_key
from identity.mpi.commands import ApplyModel
from identity.mpi.uow import UnitOfWork
from identity.store.calibration import CalibrationQueries
from identity.store.registration import ReviewWrite

log = logging.getLogger("identity.mpi.calibrated")

#: The reason of a review item a calibration opens.
REVIEW_REASON = "possible match under match model version {version}"


async def activate(uow: UnitOfWork, version: int | None) -> int | None:
    """Make ``version`` the model in service (None: the configured file); history records the
    version before, so that undo restores it. Returns the version that was active."""
    queries = CalibrationQueries(uow.repo.conn)
    if version is not None and await queries.model(version) is None:
        raise NotFound(f"match model version {version} does not exist")
    before = await queries.activate(version)
    uow.record(
        "model_activated",
        "match_model",
        0,  # one entity, the model in service: a later activation blocks undoing this one
        before={"active_version": before},
        after={"active_version": version},
    )
    return before


async def apply_model(uow: UnitOfWork, changes: Changes, cmd: ApplyModel) -> list[int]:
    """Handle :class:`ApplyModel`; returns the person ids touched."""
    repo = uow.repo
    await activate(uow, cmd.version)
    # the record keys of every record a link names, in one sorted call, as every command
    # takes them (identity.mpi.changes): a feed touching one of them waits for this command
    named = await repo.records(sorted({x for p in cmd.links for x in (p.a, p.b)}))
    await repo.lock(sorted(record_key(r.domain_id, r.identifier) for r in named))
    touched: set[int] = set()
    skipped = 0
    for planned in cmd.links:
        a = await repo.record(planned.a, for_update=True)
        b = await repo.record(planned.b, for_update=True)
        if (a is None or b is None or not a.active or not b.active or a.link is None
                or b.link is None or a.person_id == b.person_id
                or a.link.kind != LinkKind.AUTOMATIC or b.link.kind != LinkKind.AUTOMATIC):
            skipped += 1  # changed since the plan, or a steward's link: left as it is
            continue
        touched.update(await changes.link(uow, a, b, LinkKind.AUTOMATIC))
    reason = REVIEW_REASON.format(version=cmd.version)
    for planned in cmd.reviews:
        other = await repo.record(planned.other_record_id)
        if other is None or not other.active:
            continue
        item = await repo.insert_review_item(planned.record_id, ReviewWrite(
            other_record_id=other.id, person_id=other.person_id, score=planned.probability,
            reason=reason, explanation=planned.explanation or {
                "model_version": cmd.version, "probability": planned.probability},
        ))
        if item is not None:
            uow.record("review_opened", "review_item", item.id,
                       after={"status": "open", "reason": reason},
                       record_id=planned.record_id, person_id=other.person_id)
    for status, items in ((ReviewStatus.LINKED, cmd.linked),
                          (ReviewStatus.DISMISSED, cmd.dismissed)):
        for item_id in items:
            item = await repo.review_item(item_id, for_update=True)
            if item is None or item.status != ReviewStatus.OPEN:
                continue
            await repo.set_review_status(item_id, status, uow.actor)
            uow.record("review_" + status.value, "review_item", item_id,
                       before={"status": "open"}, after={"status": status.value},
                       record_id=item.record_id, person_id=item.person_id)
    log.info("event=model_applied version=%d links=%d skipped=%d reviews=%d closed=%d",
             cmd.version, len(cmd.links) - skipped, skipped, len(cmd.reviews),
             len(cmd.linked) + len(cmd.dismissed))
    return sorted(touched)
