"""Domain types of the MPI, shared by the core and every front door.

Demographics serialise (``Demographics.as_matching_input()``) to the plain-dict shape that the
pure matching library takes; see matching/normalize.py.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- assigning authorities -------------------------------------------------------------------


class Domain(_Model):
    """An assigning authority: namespace (HD-1) and ISO OID (HD-2 with HD-3 = ISO)."""

    id: int
    namespace: str
    oid: str | None = None
    sources: tuple[str, ...] = ()
    identifies_person: bool = False
    is_enterprise: bool = False

    def allows(self, source: str | None) -> bool:
        """May ``source`` (MSH-3 or FHIR client id) assign identifiers in this domain?"""
        return not self.sources or (source is not None and source in self.sources)

    @property
    def system(self) -> str:
        """FHIR identifier system: urn:oid:<oid>, else the namespace."""
        return f"urn:oid:{self.oid}" if self.oid else self.namespace


class AuthorityRef(_Model):
    """An assigning authority as a message names it: namespace and/or OID (either may be absent)."""

    namespace: str | None = None
    oid: str | None = None

    def __str__(self) -> str:
        return "&".join(
            part or "" for part in (self.namespace, self.oid, "ISO" if self.oid else "")
        )


class IdentifierRef(_Model):
    """An identifier as received: the value and its (unresolved) assigning authority."""

    value: str = Field(min_length=1)
    authority: AuthorityRef = AuthorityRef()
    type: str | None = None  # identifier type code, HL7 table 0203 (MR, SS, NI, PI, ...)


class Identifier(_Model):
    """An identifier in a resolved domain."""

    domain: str  # namespace
    value: str
    oid: str | None = None
    type: str | None = None


# --- demographics ----------------------------------------------------------------------------


class Name(_Model):
    family: str | None = None
    given: tuple[str, ...] = ()
    prefix: str | None = None
    suffix: str | None = None
    use: str | None = None  # HL7 table 0200: L legal, M maiden, B birth, A alias, N nickname, D


class Address(_Model):
    lines: tuple[str, ...] = ()
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    use: str | None = None


class Phone(_Model):
    value: str
    use: str | None = None


DEMOGRAPHIC_FIELDS = (
    "names",
    "birth_date",
    "sex",
    "addresses",
    "phones",
    "mothers_maiden_name",
    "multiple_birth",
    "account_number",
    "mothers_identifier",
)


class Demographics(_Model):
    """Demographics as received. ``None`` means "not sent" (no change on a merge update)."""

    names: tuple[Name, ...] | None = None
    birth_date: str | None = None  # ISO partial date: YYYY, YYYY-MM or YYYY-MM-DD
    sex: str | None = None  # M F O U A N (HL7 0001)
    addresses: tuple[Address, ...] | None = None
    phones: tuple[Phone, ...] | None = None
    mothers_maiden_name: str | None = None
    multiple_birth: bool | int | None = None
    account_number: str | None = None  # PID-18 CX.1
    mothers_identifier: IdentifierRef | None = None  # PID-21, authority as received

    @field_validator("birth_date")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = value.split("-")
        lengths = [len(p) for p in parts]
        if lengths not in ([4], [4, 2], [4, 2, 2]) or not all(p.isdigit() for p in parts):
            raise ValueError(f"not a YYYY, YYYY-MM or YYYY-MM-DD date: {value!r}")
        return value

    def merged_with(
        self, update: Demographics, cleared: frozenset[str] = frozenset()
    ) -> Demographics:
        """This record's demographics after a partial update (HL7 v2 semantics: an empty field
        changes nothing, an explicit null ``""`` clears the value)."""
        values = self.model_dump()
        for key in DEMOGRAPHIC_FIELDS:
            new = getattr(update, key)
            if key in cleared:
                values[key] = None
            elif new is not None:
                values[key] = update.model_dump()[key]
        return Demographics.model_validate(values)

    def as_matching_input(self) -> dict[str, Any]:
        """The plain-dict shape matching/ takes (no None values)."""
        return self.model_dump(mode="json", exclude_none=True)


# --- core entities ---------------------------------------------------------------------------


class RecordStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"
    REMOVED = "removed"


class PersonStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"  # its records moved to another person (merged_into)
    RETIRED = "retired"  # no records left


class LinkKind(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"
    VERIFIED = "verified"


class Decision(StrEnum):
    """What a registration did with the record."""

    NEW_PERSON = "new_person"
    LINKED = "linked"
    REVIEW = "review"  # a new person was created and a possible duplicate queued for a steward
    UNCHANGED_LINK = "unchanged_link"  # an update that kept the record's existing link


class RecordInput(_Model):
    """A source record as a feed sends it (PID segment, FHIR Patient)."""

    identifier: IdentifierRef
    demographics: Demographics = Demographics()
    other_identifiers: tuple[IdentifierRef, ...] = ()
    cleared: frozenset[str] = frozenset()  # demographic fields explicitly deleted ("")


class Link(_Model):
    person_id: int
    kind: LinkKind
    score: float | None = None
    actor: str
    created_at: datetime


class SourceRecord(_Model):
    id: int
    domain: Domain
    identifier: str
    status: RecordStatus
    demographics: Demographics
    other_identifiers: tuple[Identifier, ...] = ()
    version: int
    merged_into: int | None = None
    person_id: int | None = None
    enterprise_id: str | None = None
    link: Link | None = None
    created_at: datetime
    updated_at: datetime


class Person(_Model):
    id: int
    enterprise_id: str
    status: PersonStatus
    merged_into: int | None = None
    version: int
    records: tuple[SourceRecord, ...] = ()
    created_at: datetime
    updated_at: datetime


class ReviewStatus(StrEnum):
    OPEN = "open"
    LINKED = "linked"  # steward said: same person
    REJECTED = "rejected"  # steward said: different people (a no-match assertion)
    DISMISSED = "dismissed"  # no longer relevant


class ReviewItem(_Model):
    id: int
    record_id: int
    other_record_id: int | None = None
    person_id: int | None = None
    score: float | None = None
    reason: str
    explanation: dict[str, Any] | None = None
    status: ReviewStatus
    created_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None


class HistoryEvent(_Model):
    id: int
    command_id: str
    at: datetime
    event: str
    entity: str
    entity_id: int
    person_id: int | None = None
    record_id: int | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    actor: str
    message_id: str | None = None


class RegisterResult(_Model):
    decision: Decision
    record: SourceRecord
    person: Person
    created: bool  # the source record was new
    review_items: tuple[ReviewItem, ...] = ()
    command_id: str


class CommandResult(_Model):
    """Outcome of merge, change-identifier, link, unlink and steward decisions."""

    command_id: str
    applied: bool = True  # False: nothing to do (e.g. A40 with an unknown retired identifier)
    records: tuple[SourceRecord, ...] = ()
    persons: tuple[Person, ...] = ()
    note: str | None = None


class SearchCriteria(_Model):
    """Demographic search (PDQ, PDQm). Name fields accept a trailing ``*`` for prefix search."""

    family: str | None = None
    given: str | None = None
    name_mode: str = "exact"  # exact | prefix | phonetic
    birth_date: str | None = None  # YYYY, YYYY-MM or YYYY-MM-DD: matches at that precision
    birth_date_from: str | None = None  # inclusive, YYYY-MM-DD
    birth_date_to: str | None = None  # inclusive, YYYY-MM-DD
    sex: str | None = None
    identifier: IdentifierRef | None = None
    mothers_maiden_name: str | None = None
    account_number: str | None = None  # PID-18 CX.1, exact
    mothers_identifier: IdentifierRef | None = None  # PID-21, in a known domain
    address_line: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    phone: str | None = None
    include_inactive: bool = False
    limit: int = Field(100, ge=1, le=10_000)
    offset: int = Field(0, ge=0)

    @field_validator("name_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if value not in {"exact", "prefix", "phonetic"}:
            raise ValueError("name_mode must be exact, prefix or phonetic")
        return value


class SearchResult(_Model):
    total: int
    records: tuple[SourceRecord, ...]


class CrossReference(_Model):
    identifier: Identifier
    record_id: int | None = None  # None for the enterprise ID and for other identifiers


class CrossReferences(_Model):
    """The identifiers of one person in the requested domains (the queried one excluded)."""

    person_id: int
    enterprise_id: str
    source_record_id: int | None
    references: tuple[CrossReference, ...]


class MatchGrade(StrEnum):
    """FHIR match-grade (http://hl7.org/fhir/StructureDefinition/match-grade)."""

    CERTAIN = "certain"  # at or above the auto-link threshold
    PROBABLE = "probable"  # at or above the review threshold
    POSSIBLE = "possible"  # scored, below review
    CERTAINLY_NOT = "certainly-not"  # a hard rule excludes it


class MatchCandidate(_Model):
    """One source record scored against query demographics (PDQ approximate search, $match)."""

    record: SourceRecord
    person_id: int | None
    weight: float  # match weight, log2 odds
    probability: float  # 0..1
    grade: MatchGrade
    explanation: dict[str, Any]
