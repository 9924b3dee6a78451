"""What the store hands the core where identity.model's public types do not fit: a source
record as stored (with the ids, the normalised form and the JSON the core needs), a record's
link with its explanation, and the results of the registration functions. Small frozen
dataclasses; :mod:`identity.store.rows` makes them from rows, nothing else in the core reads a
row."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from identity.model import (
    Demographics,
    Domain,
    Identifier,
    Link,
    LinkKind,
    Person,
    PersonStatus,
    RecordStatus,
    SourceRecord,
)

ResolvedIdentifier = tuple[int, str, str | None]
"""An identifier resolved to its domain: (domain id, value, HL7 0203 type code or None)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredRecord:
    """A source record as stored, with its link and its person's enterprise id.

    ``demographics_json`` is the JSON the record holds, which history snapshots copy as they
    are; ``demographics`` the same, read. ``others``: the other identifiers the record carries,
    by domain id and value. ``normalized`` is None where the read did not ask for it."""

    id: int
    domain_id: int
    identifier: str
    status: RecordStatus
    merged_into: int | None
    demographics: Demographics
    demographics_json: dict[str, Any]
    normalized: dict[str, Any] | None
    version: int
    created_at: datetime
    updated_at: datetime
    link: Link | None
    enterprise_id: str | None
    others: tuple[ResolvedIdentifier, ...]

    @property
    def person_id(self) -> int | None:
        return self.link.person_id if self.link is not None else None

    @property
    def active(self) -> bool:
        return self.status == RecordStatus.ACTIVE

    def to_source_record(self, domains_by_id: Mapping[int, Domain]) -> SourceRecord:
        """The public form: domains resolved (other identifiers in domains not known are
        left out)."""
        others = []
        for domain_id, value, type_code in self.others:
            domain = domains_by_id.get(domain_id)
            if domain is not None:
                others.append(
                    Identifier(domain=domain.namespace, value=value, oid=domain.oid, type=type_code)
                )
        return SourceRecord(
            id=self.id,
            domain=domains_by_id[self.domain_id],
            identifier=self.identifier,
            status=self.status,
            demographics=self.demographics,
            other_identifiers=tuple(others),
            version=self.version,
            merged_into=self.merged_into,
            person_id=self.person_id,
            enterprise_id=self.enterprise_id,
            link=self.link,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkState:
    """A record's link to its person, with the explanation of its score."""

    record_id: int
    person_id: int
    kind: LinkKind
    score: float | None
    explanation: dict[str, Any] | None
    actor: str
    created_at: datetime


class CandidateParty(NamedTuple):
    """An active record of a candidate person, as the matcher scores it."""

    record_id: int
    domain_id: int
    person_id: int
    normalized: dict[str, Any]
    version: int


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidates:
    """A record's candidates (the SQL function register_candidates): how many distinct records
    its usable blocks held (``found``), the ids kept by the floor, margin and cap
    (``selected``), every active record of their persons (``parties``, by record id), and the
    keys whose blocks were too large to read (``oversized``)."""

    found: int
    selected: tuple[int, ...]
    parties: tuple[CandidateParty, ...]
    oversized: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class BeganRegistration:
    """What register_begin found: the record, row-locked, with its blocking keys and no-match
    partners; or, for a record not known (``record`` None), its candidates."""

    record: StoredRecord | None
    old_keys: tuple[str, ...] = ()
    no_match: frozenset[int] = frozenset()
    candidates: Candidates | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordInserted:
    """What register_insert wrote and the database assigned: the record's id, the
    transaction's time (the record's and link's timestamps), its other identifiers as stored,
    its person, and per review item asked for the id and explanation of the one opened (None:
    one was open already)."""

    record_id: int
    at: datetime
    others: tuple[ResolvedIdentifier, ...]
    person: Person
    review_ids: tuple[int | None, ...]
    review_explanations: tuple[dict[str, Any] | None, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordUpdated:
    """What register_update wrote: the record's new version and time, its other identifiers
    as stored, its person as touched (None: none was), the other active records of its own
    person (None: not asked for) and, when it has none, its candidates."""

    version: int
    updated_at: datetime
    others: tuple[ResolvedIdentifier, ...]
    person: Person | None
    own_parties: tuple[CandidateParty, ...] | None
    candidates: Candidates | None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One outbox row to deliver: its payload, how often delivery failed, and whether it is
    due (a failed row waits for its retry time)."""

    id: int
    payload: dict[str, Any]
    attempts: int
    due: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordIdentifiers:
    """An active record's identifiers: its own and the others it carries."""

    id: int
    domain_id: int
    identifier: str
    others: tuple[ResolvedIdentifier, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class PersonIdentifiers:
    """A person named by an identifier (a PIX query), with its active records' identifiers:
    ``record_id`` is the record whose own identifier named it (None: the enterprise id did)."""

    person_id: int
    enterprise_id: str
    status: PersonStatus
    record_id: int | None
    records: tuple[RecordIdentifiers, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexRow:
    """An active record as calibration (and `identity train`) reads it: its source domain, its
    person and link kind (None: not linked), and its normalised form."""

    record_id: int
    namespace: str
    person_id: int | None
    link_kind: str | None
    normalized: dict[str, Any]


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelVersion:
    """A stored match model version (table match_model)."""

    version: int
    model: dict[str, Any]
    auto_link: float
    review: float
    active: bool
    created_by: str
    report: dict[str, Any]
