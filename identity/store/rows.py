"""Row mapping: PostgreSQL rows (asyncpg records) to the domain types of identity.model and
identity.store.state, and the column lists the reads share. Nothing else in the core needs to
know a row's shape."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from identity.model import (
    Demographics,
    Domain,
    HistoryEvent,
    Link,
    LinkKind,
    Person,
    PersonStatus,
    RecordStatus,
    ReviewItem,
    ReviewStatus,
)
from identity.store.state import (
    BeganRegistration,
    CandidateParty,
    Candidates,
    IndexRow,
    LinkState,
    ModelVersion,
    OutboxEntry,
    PersonIdentifiers,
    RecordIdentifiers,
    RecordInserted,
    RecordUpdated,
    ResolvedIdentifier,
    StoredRecord,
)

RECORD_COLUMNS = """
    r.id, r.domain_id, r.identifier, r.status, r.merged_into, r.demographics, r.normalized,
    r.version, r.created_at, r.updated_at,
    l.person_id, l.kind AS link_kind, l.score AS link_score, l.actor AS link_actor,
    l.created_at AS link_created_at, p.enterprise_id,
    coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier, coalesce(ri.type_code, '')]
                                ORDER BY ri.domain_id, ri.identifier)
              FROM record_identifier ri WHERE ri.source_record_id = r.id), '{}') AS others
"""
"""A source record with its link, person and other identifiers (``record_from_row``)."""

RECORD_FROM = """
    FROM source_record r
    LEFT JOIN link l ON l.source_record_id = r.id
    LEFT JOIN person p ON p.id = l.person_id
"""


def domain_from_row(row: asyncpg.Record) -> Domain:
    return Domain(
        id=row["id"],
        namespace=row["namespace"],
        oid=row["oid"],
        sources=tuple(row["sources"]),
        identifies_person=row["identifies_person"],
        is_enterprise=row["is_enterprise"],
    )


def others_from_column(others: Iterable[Sequence[str]]) -> tuple[ResolvedIdentifier, ...]:
    """The ``others`` column (text arrays [domain id, value, type code or '']) as resolved
    identifiers."""
    return tuple((int(d), v, t or None) for d, v, t in others)


def record_from_row(row: Mapping[str, Any]) -> StoredRecord:
    """A row of ``RECORD_COLUMNS`` (or of register_begin, which has them too)."""
    person_id = row["person_id"]
    link = None
    if person_id is not None:
        link = Link(
            person_id=person_id,
            kind=LinkKind(row["link_kind"]),
            score=row["link_score"],
            actor=row["link_actor"],
            created_at=row["link_created_at"],
        )
    stored = row["demographics"]
    return StoredRecord(
        id=row["id"],
        domain_id=row["domain_id"],
        identifier=row["identifier"],
        status=RecordStatus(row["status"]),
        merged_into=row["merged_into"],
        demographics=Demographics.model_validate(stored),
        demographics_json=stored,
        normalized=row["normalized"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        link=link,
        enterprise_id=row["enterprise_id"],
        others=others_from_column(row["others"]),
    )


def person_from_row(row: Mapping[str, Any]) -> Person:
    """A ``person`` row, without its records."""
    return Person(
        id=row["id"],
        enterprise_id=row["enterprise_id"],
        status=PersonStatus(row["status"]),
        merged_into=row["merged_into"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _written_person(row: Mapping[str, Any]) -> Person | None:
    """The person columns (``person_*``) register_insert and register_update return."""
    if row["person_id"] is None:
        return None
    return Person(
        id=row["person_id"],
        enterprise_id=row["enterprise_id"],
        status=PersonStatus(row["person_status"]),
        merged_into=row["person_merged_into"],
        version=row["person_version"],
        created_at=row["person_created_at"],
        updated_at=row["person_updated_at"],
    )


def link_from_row(row: Mapping[str, Any]) -> LinkState:
    return LinkState(
        record_id=row["source_record_id"],
        person_id=row["person_id"],
        kind=LinkKind(row["kind"]),
        score=row["score"],
        explanation=row["explanation"],
        actor=row["actor"],
        created_at=row["created_at"],
    )


def review_from_row(row: Mapping[str, Any]) -> ReviewItem:
    return ReviewItem(
        id=row["id"],
        record_id=row["record_id"],
        other_record_id=row["other_record_id"],
        person_id=row["person_id"],
        score=row["score"],
        reason=row["reason"],
        explanation=row["explanation"],
        status=ReviewStatus(row["status"]),
        created_at=row["created_at"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        version=row["version"],
        hard_rules=tuple(row["hard_rules"]),
    )


def history_from_row(row: asyncpg.Record) -> HistoryEvent:
    return HistoryEvent(
        id=row["id"],
        command_id=str(row["command_id"]),
        at=row["at"],
        event=row["event"],
        entity=row["entity"],
        entity_id=row["entity_id"],
        person_id=row["person_id"],
        record_id=row["record_id"],
        before=row["before"],
        after=row["after"],
        actor=row["actor"],
        message_id=row["message_id"],
    )


def outbox_entry_from_row(row: Mapping[str, Any]) -> OutboxEntry:
    return OutboxEntry(row["id"], row["payload"], row["attempts"], row["due"])


# --- the registration functions' results ------------------------------------------------------


def parties_from_column(parties: Iterable[Sequence[Any]] | None) -> tuple[CandidateParty, ...]:
    """[record id, domain id, person id, normalized, version] arrays (register_candidates'
    ``parties``, register_update's ``own_parties``)."""
    if not parties:
        return ()
    make = CandidateParty._make
    return tuple(make(p) for p in parties)


def candidates_from_row(row: Mapping[str, Any]) -> Candidates:
    """The columns of register_candidates (candidates_found, prefetched, parties and, where
    the row has it, oversized)."""
    oversized = row.get("oversized")
    return Candidates(
        found=row["candidates_found"] or 0,
        selected=tuple(row["prefetched"] or ()),
        parties=parties_from_column(row["parties"]),
        oversized=tuple(oversized or ()),
    )


def began_from_row(row: asyncpg.Record) -> BeganRegistration:
    if row["id"] is None:
        return BeganRegistration(record=None, candidates=candidates_from_row(row))
    return BeganRegistration(
        record=record_from_row(row),
        old_keys=tuple(row["old_keys"]),
        no_match=frozenset(row["no_match"]),
    )


def inserted_from_row(row: asyncpg.Record) -> RecordInserted:
    person = _written_person(row)
    assert person is not None  # register_insert always links the record to a person
    return RecordInserted(
        record_id=row["record_id"],
        at=row["tx_now"],
        others=others_from_column(row["others"]),
        person=person,
        review_ids=tuple(row["review_ids"]),
        review_explanations=tuple(row["review_explanations"]),
    )


def updated_from_row(row: asyncpg.Record) -> RecordUpdated:
    own = row["own_parties"]
    return RecordUpdated(
        version=row["version"],
        updated_at=row["updated_at"],
        others=others_from_column(row["others"]),
        person=_written_person(row),
        own_parties=None if own is None else parties_from_column(own),
        candidates=None if row["prefetched"] is None else candidates_from_row(row),
    )


# --- PIX ---------------------------------------------------------------------------------------


def person_identifiers_from_rows(rows: Sequence[asyncpg.Record]) -> PersonIdentifiers | None:
    """The rows of a cross-reference read (one per active record of the person)."""
    if not rows:
        return None
    first = rows[0]
    return PersonIdentifiers(
        person_id=first["person_id"],
        enterprise_id=first["enterprise_id"],
        status=PersonStatus(first["person_status"]),
        record_id=first["hit_id"],
        records=tuple(
            RecordIdentifiers(
                id=r["id"],
                domain_id=r["domain_id"],
                identifier=r["identifier"],
                others=others_from_column(r["others"]),
            )
            for r in rows
        ),
    )


# --- calibration -------------------------------------------------------------------------------


def _jsonb(value: Any) -> Any:
    """jsonb as the pool's codec decodes it; a plain connection (no codec) gives text."""
    return json.loads(value) if isinstance(value, str) else value


def index_row_from_row(row: asyncpg.Record) -> IndexRow:
    return IndexRow(
        record_id=row["id"],
        namespace=row["namespace"],
        person_id=row["person_id"],
        link_kind=row["kind"],
        normalized=_jsonb(row["normalized"]),
    )


def model_version_from_row(row: asyncpg.Record) -> ModelVersion:
    return ModelVersion(
        version=row["version"],
        model=_jsonb(row["model"]),
        auto_link=row["auto_link"],
        review=row["review"],
        active=row["active"],
        created_by=row["created_by"],
        report=_jsonb(row["report"]),
    )
