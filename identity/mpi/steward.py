"""The steward's reads: the review queue, one item with everything needed to decide it, a
person with its golden view, search, the decisions log and the dashboard. The steward's
commands (decisions, merges, unlinks, undo) are in identity.mpi.review; the API and CLI that
use both are identity.steward and identity.cli.

Each function runs on the repository given (one connection; :class:`identity.mpi.Mpi` opens a
read-only snapshot for it) and returns the view types of identity.model.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import datetime
from typing import Any

from identity.errors import InvalidInput, NotFound
from identity.model import (
    DEMOGRAPHIC_FIELDS,
    AuthorityRef,
    CrossReference,
    Dashboard,
    DayCount,
    DecisionLog,
    GoldenValue,
    Identifier,
    LinkShare,
    OtherCandidate,
    Person,
    PersonView,
    QueueCounts,
    QueueCountsWanted,
    QueueFilter,
    QueueItem,
    QueuePage,
    QueueSort,
    RecordDetail,
    RecordView,
    ReviewDetail,
    StewardKind,
)
from identity.mpi.core import Core
from identity.store.repository import Repository
from identity.store.state import StoredRecord
from identity.store.steward import QueueKey, QueueTerms

CANDIDATES_SHOWN = 5
CURSOR_VERSION = 1
MAX_POSITION = 10_000_000


# --- the queue's cursors -----------------------------------------------------------------------
# A cursor is base64url (unpadded) JSON: the sort and the sort key of the page's last item
# (its score, opening time and id), or for sort impact the position of the next page. It is
# opaque to clients and not signed: a forged one can only point somewhere else in the queue.


def encode_cursor(sort: QueueSort, last: QueueItem | None = None, position: int = 0) -> str:
    """The cursor of the page after ``last`` (sort impact: at ``position``)."""
    payload: dict[str, Any] = {"v": CURSOR_VERSION, "sort": sort.value}
    if sort == QueueSort.IMPACT:
        payload["pos"] = position
    else:
        assert last is not None
        payload.update(score=last.score, at=last.created_at.isoformat(), id=last.id)
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, sort: QueueSort) -> QueueKey:
    """Where a page after ``cursor`` starts. InvalidInput (field ``after``): not a cursor of
    the queue, or one of another sort."""

    def bad(why: str) -> InvalidInput:
        return InvalidInput(f"after: {why}", field="after")

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad("not a cursor of the review queue") from None
    if not isinstance(payload, dict) or payload.get("v") != CURSOR_VERSION:
        raise bad("not a cursor of the review queue")
    if payload.get("sort") != sort.value:
        raise bad(f"a cursor of sort {payload.get('sort')!r} used with sort {sort.value!r}: "
                  "page by the cursor of a page of the same sort")
    if sort == QueueSort.IMPACT:
        position = payload.get("pos")
        if type(position) is not int or not 0 <= position <= MAX_POSITION:
            raise bad("not a cursor of the review queue")
        return QueueKey(position=position)
    score, at, id_ = payload.get("score"), payload.get("at"), payload.get("id")
    try:
        created_at = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        created_at = None
    if (
        created_at is None or created_at.tzinfo is None
        or type(id_) is not int or not 0 <= id_ < 2**63
        or not (score is None or type(score) in (int, float) and math.isfinite(score))
    ):
        raise bad("not a cursor of the review queue")
    return QueueKey(
        score=None if score is None else float(score), created_at=created_at, id=id_
    )


async def _domain_id(core: Core, name: str | None) -> int | None:
    """The id of a domain named by its namespace or OID."""
    if name is None:
        return None
    authority = (
        AuthorityRef(oid=name) if name.replace(".", "").isdigit() and "." in name
        else AuthorityRef(namespace=name)
    )
    return (await core.domains.resolve(authority)).id


def _namespaces(core: Core) -> dict[int, str]:
    return {d.id: d.namespace for d in core.domains.all()}


async def queue(
    core: Core,
    repo: Repository,
    filters: QueueFilter,
    sort: QueueSort,
    limit: int,
    offset: int,
    counts: QueueCountsWanted = QueueCountsWanted.OPEN,
    after: str | None = None,
) -> QueuePage:
    """A page of the queue from ``offset``, or after the cursor ``after`` (a page's
    ``next``; not with a non-zero offset), with the cursor of the page after it."""
    key = None
    if after is not None:
        if offset:
            raise InvalidInput("after: a page is asked for by offset or by cursor, not both",
                               field="after")
        key = decode_cursor(after, sort)
    if (
        filters.min_probability is not None
        and filters.max_probability is not None
        and filters.min_probability > filters.max_probability
    ):
        raise InvalidInput("min_probability is above max_probability", field="min_probability")
    terms = QueueTerms(
        status=filters.status,
        min_probability=filters.min_probability,
        max_probability=filters.max_probability,
        rule=filters.rule,
        domain_id=await _domain_id(core, filters.domain),
        created_before=filters.created_before,
        created_after=filters.created_after,
        record_id=filters.record_id,
        person_id=filters.person_id,
    )
    namespaces = _namespaces(core)
    items = await repo.review_queue(
        terms, sort=sort, limit=limit + 1, offset=offset, namespaces=namespaces, after=key
    )  # one more: is there a page after this one?
    if sort == QueueSort.IMPACT and key is not None:
        offset = key.position
    following = None
    if len(items) > limit:
        items = items[:limit]
        following = encode_cursor(sort, items[-1], position=offset + limit)
    total = await repo.review_count(terms)
    page = QueuePage(items=tuple(items), total=total, limit=limit, offset=offset, sort=sort,
                     next=following)
    if counts == QueueCountsWanted.NONE:
        return page
    facets = await repo.open_review_facets()
    by_status = None
    if counts == QueueCountsWanted.ALL:
        by_status = await repo.review_counts_by_status(terms)
    return page.model_copy(update={"counts": QueueCounts(
        open=facets.size,
        open_by_rule=facets.by_rule,
        open_by_domain={namespaces.get(k, str(k)): n for k, n in facets.by_domain.items()},
        open_by_age=facets.by_age,
        oldest_open=facets.oldest,
        by_status=by_status,
    )})


def _detail(core: Core, record: StoredRecord) -> RecordDetail:
    return RecordDetail(
        record=record.to_source_record(core.domains.by_id), normalized=record.normalized
    )


async def review_detail(core: Core, repo: Repository, item_id: int) -> ReviewDetail:
    item = await repo.review_item(item_id)
    if item is None:
        raise NotFound(f"review item {item_id} does not exist")
    ids = [item.record_id] + ([item.other_record_id] if item.other_record_id else [])
    stored = {r.id: r for r in await repo.records(ids)}
    record = stored[item.record_id]
    other = stored.get(item.other_record_id) if item.other_record_id else None
    explanation, computed = item.explanation, False
    if other is not None and not (explanation or {}).get("comparisons"):
        explanation, computed = await _explain(core, repo, record, other), True
    person_id = other.person_id if other is not None else item.person_id
    person = None
    if person_id is not None:
        person = await core.person(repo, person_id, with_records=True)
    history = await repo.records_history(ids)
    others = [i for i in await repo.review_item_ids_of_records(ids) if i != item_id]
    return ReviewDetail(
        item=item.model_copy(update={"explanation": None}),
        explanation=explanation,
        explanation_computed=computed,
        record=_detail(core, record),
        other=_detail(core, other) if other is not None else None,
        person=person,
        candidates=tuple(await _candidates(core, repo, record)),
        other_items=tuple(await repo.queue_items(others, _namespaces(core))),
        history=tuple(history),
    )


async def _explain(
    core: Core, repo: Repository, record: StoredRecord, other: StoredRecord
) -> dict[str, Any] | None:
    """The explanation of a pair by the model in service (an item stored without one)."""
    if record.normalized is None or other.normalized is None:
        return None
    matcher, changes = core.matcher, core.changes
    subject, party = changes.party(record), changes.party(other)
    probability = float(matcher.explain(subject, party)["probability"])
    no_match = other.id in await repo.no_match_partners(record.id)
    return matcher.explain(subject, party, matcher.pair(subject, party, probability, no_match))


async def _candidates(core: Core, repo: Repository, record: StoredRecord) -> list[OtherCandidate]:
    """The persons the engine would consider for the record now (its blocking keys as
    stored), its own person left out, best first."""
    if not record.active or record.normalized is None:
        return []
    keys = await repo.blocking_keys_of(record.id)
    if not keys:
        return []
    persons = await core.changes.candidates(repo, keys, record.id)
    persons.pop(record.person_id or 0, None)
    if not persons:
        return []
    no_match = await repo.no_match_partners(record.id)
    verdicts = core.matcher.verdicts(core.changes.party(record), persons, no_match)
    items = await repo.queue_items(
        await repo.open_review_ids_touching([record.id], []), _namespaces(core)
    )

    def item_naming(person_id: int) -> int | None:
        """The open item of the record that names this person (as its candidate, or as the
        person of the item's other record)."""
        for item in items:
            sides = [item.other, item.record if item.record.id != record.id else None]
            if item.person_id == person_id or any(
                side is not None and side.person_id == person_id for side in sides
            ):
                return item.id
        return None

    candidates = []
    for verdict in verdicts[:CANDIDATES_SHOWN]:
        person = await repo.person(verdict.person_id)
        candidates.append(
            OtherCandidate(
                person_id=verdict.person_id,
                enterprise_id=person.enterprise_id if person is not None else None,
                record_id=verdict.best_record_id,
                probability=verdict.probability,
                decision=verdict.decision.value.lower(),
                reason=verdict.reason,
                review_item_id=item_naming(verdict.person_id),
            )
        )
    return candidates


async def record_view(core: Core, repo: Repository, record_id: int) -> RecordView:
    found = await repo.records([record_id])
    if not found:
        raise NotFound(f"record {record_id} does not exist")
    record = found[0]
    items = await repo.review_item_ids_of_records([record_id])
    return RecordView(
        record=record.to_source_record(core.domains.by_id),
        normalized=record.normalized,
        review_items=tuple(await repo.queue_items(items, _namespaces(core))),
        history=tuple(await repo.records_history([record_id])),
    )


def _filled(value: Any) -> bool:
    return value is not None and value != "" and value != () and value != []


async def person_view(core: Core, repo: Repository, person_id: int) -> PersonView:
    person = await core.person(repo, person_id, with_records=True)
    stored = await repo.person_records([person_id])
    enterprise = core.domains.enterprise
    by_id = core.domains.by_id
    identifiers = [
        CrossReference(
            identifier=Identifier(
                domain=enterprise.namespace, value=person.enterprise_id, oid=enterprise.oid
            )
        )
    ]
    for record in stored:
        domain = by_id[record.domain_id]
        identifiers.append(
            CrossReference(
                identifier=Identifier(domain=domain.namespace, value=record.identifier,
                                      oid=domain.oid),
                record_id=record.id,
            )
        )
    for record in stored:
        for domain_id, value, type_code in record.others:
            domain = by_id.get(domain_id)
            if domain is not None:
                identifiers.append(
                    CrossReference(
                        identifier=Identifier(domain=domain.namespace, value=value,
                                              oid=domain.oid, type=type_code),
                        record_id=record.id,
                    )
                )
    golden: dict[str, GoldenValue] = {}
    newest_first = sorted(stored, key=lambda r: (r.updated_at, r.id), reverse=True)
    for name in DEMOGRAPHIC_FIELDS:
        for record in newest_first:
            value = record.demographics_json.get(name)
            if _filled(value):
                golden[name] = GoldenValue(
                    value=value,
                    record_id=record.id,
                    domain=by_id[record.domain_id].namespace,
                    updated_at=record.updated_at,
                )
                break
    every = await repo.person_records([person_id], active_only=False)
    record_ids = [r.id for r in every]
    items = await repo.open_review_ids_touching(record_ids, [person_id])
    return PersonView(
        person=person,
        identifiers=tuple(identifiers),
        golden=golden,
        review_items=tuple(await repo.queue_items(items, _namespaces(core))),
        history=tuple(await repo.person_history(person_id, record_ids)),
    )


async def persons_named(
    core: Core, repo: Repository, identifier: str, limit: int, offset: int
) -> tuple[int, list[Person]]:
    """The persons an identifier names: ``value`` in any domain (and as an enterprise id), or
    ``DOMAIN|value`` in one (a namespace or an OID)."""
    domain_name, sep, value = identifier.rpartition("|")
    value = value.strip()
    if not value:
        raise InvalidInput("identifier: no value", field="identifier")
    domain_ids = None
    enterprise = not sep
    if sep and domain_name:
        domain_id = await _domain_id(core, domain_name)
        assert domain_id is not None
        enterprise = core.domains.by_id[domain_id].is_enterprise
        domain_ids = [domain_id]
    person_ids: list[int] = []
    if enterprise:
        person = await repo.person_by_enterprise_id(value)
        if person is not None:
            person_ids.append(person.id)
    if domain_ids is None or not enterprise:
        for record in await repo.records(await repo.records_named(value, domain_ids)):
            if record.person_id is not None and record.person_id not in person_ids:
                person_ids.append(record.person_id)
    page = person_ids[offset : offset + limit]
    return len(person_ids), [await core.person(repo, p, with_records=True) for p in page]


async def decisions(
    repo: Repository,
    *,
    actor: str | None,
    kind: StewardKind | None,
    since: datetime | None,
    review_item_id: int | None,
    limit: int,
    offset: int,
) -> DecisionLog:
    total, entries = await repo.decisions(
        actor=actor, kind=kind, since=since, review_item_id=review_item_id, limit=limit,
        offset=offset,
    )  # fmt: skip
    return DecisionLog(total=total, entries=tuple(entries))


async def dashboard(repo: Repository, days: int) -> Dashboard:
    facets = await repo.open_review_facets()
    per_day = await repo.decisions_per_day(days)
    joined = await repo.joined_links()
    automatic, manual, verified = (joined.get(k, 0) for k in ("automatic", "manual", "verified"))
    links = automatic + manual + verified
    model = await repo.active_model()
    return Dashboard(
        days=days,
        open=facets.size,
        oldest_open=facets.oldest,
        open_by_age=facets.by_age,
        open_by_rule=facets.by_rule,
        decisions_per_day=tuple(
            DayCount(day=day, actor=actor, kind=StewardKind(kind), count=n)
            for day, actor, kind, n in per_day
        ),
        links=LinkShare(
            automatic=automatic,
            manual=manual,
            verified=verified,
            automatic_share=round(automatic / links, 4) if links else None,
        ),
        undone=sum(n for _, _, kind, n in per_day if kind == StewardKind.UNDO.value),
        model_version=model[0] if model else None,
        model_activated_by=model[1] if model else None,
        model_created_at=model[2] if model else None,
    )
