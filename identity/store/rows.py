"""Row mapping: PostgreSQL rows (asyncpg records) to the domain types of identity.model, and
the column lists the reads share. Nothing else in the core needs to know a row's shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from identity.model import (
    Demographics,
    Domain,
    HistoryEvent,
    Identifier,
    Link,
    LinkKind,
    Person,
    PersonStatus,
    RecordStatus,
    ReviewItem,
    ReviewStatus,
    SourceRecord,
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


def search_values(search: dict[str, Any]) -> tuple[Any, ...]:
    return (
        search.get("family_norm") or None,
        search.get("given_norm") or None,
        search.get("family_phon") or None,
        search.get("given_phon") or None,
        search.get("birth_date") or None,
        search.get("sex") or None,
        search.get("postal_code") or None,
        search.get("city_norm") or None,
        list(search.get("phone_digits") or []),
        search.get("mothers_maiden_norm") or None,
    )



def record_from_row(row: Mapping[str, Any], domains_by_id: dict[int, Domain]) -> SourceRecord:
    others = []
    for domain_id, value, type_code in row["others"]:
        domain = domains_by_id.get(int(domain_id))
        if domain is not None:
            others.append(
                Identifier(
                    domain=domain.namespace, value=value, oid=domain.oid, type=type_code or None
                )
            )
    link = None
    if row["person_id"] is not None:
        link = Link(
            person_id=row["person_id"],
            kind=LinkKind(row["link_kind"]),
            score=row["link_score"],
            actor=row["link_actor"],
            created_at=row["link_created_at"],
        )
    return SourceRecord(
        id=row["id"],
        domain=domains_by_id[row["domain_id"]],
        identifier=row["identifier"],
        status=RecordStatus(row["status"]),
        demographics=Demographics.model_validate(row["demographics"]),
        other_identifiers=tuple(others),
        version=row["version"],
        merged_into=row["merged_into"],
        person_id=row["person_id"],
        enterprise_id=row["enterprise_id"],
        link=link,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def person_from_row(row: Mapping[str, Any], records: Sequence[SourceRecord] = ()) -> Person:
    return Person(
        id=row["id"],
        enterprise_id=row["enterprise_id"],
        status=PersonStatus(row["status"]),
        merged_into=row["merged_into"],
        version=row["version"],
        records=tuple(records),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
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

