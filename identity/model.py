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
    """A telecom contact point as received: an HL7 v2 XTN (PID-13, PID-14) or a FHIR
    ContactPoint. Records stored before the structured fields existed hold ``value`` and
    ``use`` only, and read as a number sent in XTN.1.

    ``value`` is the contact point as text: the number as the sender formatted it (XTN.1, a
    FHIR ``value``), else XTN.12, else the number built from XTN.5–8 (:meth:`composed`); the
    address of an e-mail. ``formatted`` says whether ``value`` is what the sender wrote as the
    number (XTN.1 or a FHIR phone's ``value``): False when it was taken from another component,
    so that a reply writes XTN.1 only when one was received."""

    value: str
    use: str | None = None  # XTN.2, HL7 table 0201 (PRN, WPN, ORN, VHN, PRS, NET, BPN, ...)
    equipment: str | None = None  # XTN.3, HL7 table 0202 (PH, FX, CP, BP, Internet, X.400, ...)
    email: str | None = None  # XTN.4: the Internet (e-mail) address
    country_code: str | None = None  # XTN.5
    area_code: str | None = None  # XTN.6 area/city code
    local_number: str | None = None  # XTN.7
    extension: str | None = None  # XTN.8
    unformatted: str | None = None  # XTN.12 unformatted telephone number
    formatted: bool = True
    system: str | None = None  # FHIR ContactPoint.system as received (phone, email, sms, ...)
    purpose: str | None = None
    """FHIR ContactPoint.use (home, work, temp, old, mobile) as a FHIR client sent it; ``work``
    for a PID-14 repetition whose XTN.2 is not WPN (the field said so)."""
    rank: int | None = None  # FHIR ContactPoint.rank

    def composed(self) -> str | None:
        """The number built from XTN.5–8 (:func:`compose_number`)."""
        return compose_number(self.country_code, self.area_code, self.local_number,
                              self.extension)


def compose_number(
    country: str | None, area: str | None, local: str | None, extension: str | None
) -> str | None:
    """A number written from its parts (XTN.5–8): ``+1 617 5550101 ext. 22``; None without a
    local number."""
    if not local:
        return None
    if country and not country.startswith("+"):
        country = "+" + country
    parts = [p for p in (country, area, local) if p]
    if extension:
        parts.append(f"ext. {extension}")
    return " ".join(parts)


class Coded(_Model):
    """A coded value as received (HL7 CWE/CE: identifier, text, name of coding system)."""

    code: str | None = None
    text: str | None = None
    system: str | None = None


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
    "mothers_maiden",
    "primary_language",
    "marital_status",
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
    mothers_maiden: Name | None = None  # PID-6 whole (family also in mothers_maiden_name)
    primary_language: Coded | None = None  # PID-15
    marital_status: Coded | None = None  # PID-16
    received: dict[str, Any] | None = None
    """What a FHIR client sent that the fields above do not hold: the Patient's other elements
    (``contact``, ``generalPractitioner``, extensions, ...) and, of the elements they do hold,
    the entries that carry more (an identifier's ``type``, an address's ``district``), as sent
    (identity/fhir/patient.py, ``received_of``). Matching never reads it
    (:meth:`as_matching_input`); an update that does not send it (HL7 v2) keeps it, a FHIR
    update replaces it. Not in DEMOGRAPHIC_FIELDS: it is no demographic of its own."""

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
        if update.received is not None:
            values["received"] = update.received
        elif self.received and "text" in self.received and (
            {key: values[key] for key in DEMOGRAPHIC_FIELDS}
            != self.model_dump(include=set(DEMOGRAPHIC_FIELDS))
        ):
            # The narrative a client sent describes the record as it sent it: once another
            # feed changes the record it no longer does.
            values["received"] = {k: v for k, v in self.received.items() if k != "text"} or None
        return Demographics.model_validate(values)

    def as_matching_input(self) -> dict[str, Any]:
        """The plain-dict shape matching/ takes (no None values, nothing of ``received``)."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"received"})


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
    version: int = 1
    """1 when opened, one more at every change of status: a steward's decision names it."""
    hard_rules: tuple[str, ...] = ()
    """The hard rules that fired on the pair (from the explanation)."""


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
    changed: bool = True  # False: the record was already as sent; nothing was written


class CommandResult(_Model):
    """Outcome of merge, change-identifier, link, unlink and steward decisions."""

    command_id: str
    applied: bool = True  # False: nothing to do (e.g. A40 with an unknown retired identifier)
    records: tuple[SourceRecord, ...] = ()
    persons: tuple[Person, ...] = ()
    note: str | None = None


CONTAINS_FIELDS = frozenset({"family", "given", "city"})
SORT_KEYS = frozenset({"family", "given", "birth_date", "updated_at", "id"})


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
    contains: tuple[str, ...] = ()
    """Fields (``family``, ``given``, ``city``) whose value matches anywhere in the stored
    normalised value (FHIR ``:contains``) instead of as a whole or a prefix."""
    updated_from: datetime | None = None  # the record's last update, inclusive
    updated_before: datetime | None = None  # the record's last update, exclusive
    sort: tuple[str, ...] = ()
    """The order of the results: keys ``family``, ``given``, ``birth_date``, ``updated_at``,
    ``id``, each ``-`` first for descending; empty: family, given, id."""

    @field_validator("contains")
    @classmethod
    def _contains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not set(value) <= CONTAINS_FIELDS:
            raise ValueError(f"contains takes {sorted(CONTAINS_FIELDS)}")
        return value

    @field_validator("sort")
    @classmethod
    def _sort(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(key.removeprefix("-") in SORT_KEYS for key in value):
            raise ValueError(f"sort keys are {sorted(SORT_KEYS)}, optionally with '-'")
        return value

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


# --- the steward's views (identity.mpi.steward; the steward API and CLI) --------------------


class QueueSort(StrEnum):
    """Orders of the review queue (docs/steward.md, *Queue*)."""

    OLDEST = "oldest"  # created first, first (the default)
    NEWEST = "newest"
    IMPACT = "impact"  # most other open items sharing a record or the candidate person, first
    PROBABILITY_DESC = "probability_desc"
    PROBABILITY_ASC = "probability_asc"
    # the label that would teach the model most first: the probability closest to 0.5 (the
    # smallest |logit|), items without one last; ties oldest first
    UNCERTAIN = "uncertain"


NO_HARD_RULE = "none"
"""The queue's ``rule`` filter for items on which no hard rule fired (the review band)."""


class QueueFilter(_Model):
    """Which review items a queue page lists. ``status`` None: every status; ``rule``: a hard
    rule that fired (NO_HARD_RULE: none did); ``domain``: a namespace either record is from;
    ``record_id``: items naming that record (as record or other record); ``person_id``: items
    naming that candidate person."""

    status: ReviewStatus | None = ReviewStatus.OPEN
    min_probability: float | None = Field(None, ge=0, le=1)
    max_probability: float | None = Field(None, ge=0, le=1)
    rule: str | None = None
    domain: str | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    record_id: int | None = None
    person_id: int | None = None


class RecordSummary(_Model):
    """A record as a queue row shows it."""

    id: int
    domain: str
    identifier: str
    status: RecordStatus
    person_id: int | None = None
    enterprise_id: str | None = None
    family: str | None = None
    given: str | None = None
    birth_date: str | None = None
    sex: str | None = None


class QueueItem(_Model):
    """One row of the review queue: the item without its explanation, its two records, and
    its impact (for an open item, how many other open items share one of its records or its
    candidate person; 0 once decided)."""

    id: int
    version: int
    status: ReviewStatus
    score: float | None = None
    reason: str
    hard_rules: tuple[str, ...] = ()
    created_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    person_id: int | None = None
    record: RecordSummary
    other: RecordSummary | None = None
    impact: int = 0


class QueueCounts(_Model):
    """Counts beside a queue page. The open queue as a whole: its size, by hard rule
    (NO_HARD_RULE: none fired; an item counts once per rule that fired on it), by source
    domain (once per domain of its records), by age and its oldest item. ``by_status``: items
    per status under the page's filters but its status, when asked for (it reads every item,
    decided ones included)."""

    open: int
    open_by_rule: dict[str, int]
    open_by_domain: dict[str, int]
    open_by_age: dict[str, int]
    """under_1_day, 1_to_7_days, over_7_days"""
    oldest_open: datetime | None = None
    by_status: dict[str, int] | None = None


class QueueCountsWanted(StrEnum):
    """Which counts a queue page comes with."""

    NONE = "none"  # the page and its total only (paging on)
    OPEN = "open"  # and the open queue's counts (the default)
    ALL = "all"  # and the counts per status under the filters


class QueuePage(_Model):
    items: tuple[QueueItem, ...]
    total: int
    """Items matching the filters (all pages)."""
    limit: int
    offset: int
    """The page's offset (0 for a page asked for by cursor, but with sort ``impact``, whose
    cursor is a position)."""
    sort: QueueSort
    counts: QueueCounts | None = None
    next: str | None = None
    """The cursor of the page after this one (``after``), None on the last page."""


class RecordDetail(_Model):
    """A record as received (``record``) and as the engine compares it (``normalized``)."""

    record: SourceRecord
    normalized: dict[str, Any] | None = None


class RecordView(_Model):
    """A record as received and normalised, its review items and its history (oldest
    first)."""

    record: SourceRecord
    normalized: dict[str, Any] | None = None
    review_items: tuple[QueueItem, ...] = ()
    history: tuple[HistoryEvent, ...] = ()


class OtherCandidate(_Model):
    """A candidate person of the item's record, as the engine scores it now: the record of the
    person it was judged by, the person's best probability, the engine's decision (link,
    review, no_match) and why; the open review item of the record naming that person, if
    any."""

    person_id: int
    enterprise_id: str | None = None
    record_id: int
    probability: float
    decision: str
    reason: str
    review_item_id: int | None = None


class ReviewDetail(_Model):
    """Everything a steward needs to decide one review item: the item, the explanation of the
    pair (``explanation_computed``: the stored item had none, e.g. opened by the initial load,
    so it was computed now with the model in service), both records as received and
    normalised, the candidate person with its records, the record's other candidates, the other
    items of either record and the history of both records. The explanation is the detail's
    own ``explanation`` (``item.explanation`` is left empty)."""

    item: ReviewItem
    explanation: dict[str, Any] | None = None
    explanation_computed: bool = False
    record: RecordDetail
    other: RecordDetail | None = None
    person: Person | None = None
    candidates: tuple[OtherCandidate, ...] = ()
    other_items: tuple[QueueItem, ...] = ()
    history: tuple[HistoryEvent, ...] = ()


class GoldenValue(_Model):
    """One field of a person's golden view and the record it was taken from."""

    value: Any
    record_id: int
    domain: str
    updated_at: datetime


class PersonView(_Model):
    """A person as a steward sees it: its active records, every identifier (the enterprise id
    first, then each record's own, then the others they carry), the golden view — per
    demographic field the value of the most recently updated active record that has one —,
    the open review items naming it or its records, and its history (newest last)."""

    person: Person
    identifiers: tuple[CrossReference, ...]
    golden: dict[str, GoldenValue]
    review_items: tuple[QueueItem, ...] = ()
    history: tuple[HistoryEvent, ...] = ()


class StewardSearch(_Model):
    """A steward's search: an identifier (``value``, or ``DOMAIN|value`` with a namespace or
    OID; without a domain every domain and the enterprise id are searched), or demographics
    (as PDQ: ``*`` for a prefix)."""

    identifier: str | None = None
    family: str | None = None
    given: str | None = None
    birth_date: str | None = None
    sex: str | None = None
    postal_code: str | None = None
    phone: str | None = None
    limit: int = Field(20, ge=1, le=200)
    offset: int = Field(0, ge=0)


class PersonHits(_Model):
    total: int
    persons: tuple[Person, ...]


class StewardKind(StrEnum):
    """What a steward command did (table steward_decision)."""

    SAME_PERSON = "same_person"
    DIFFERENT_PERSONS = "different_persons"
    DISMISS = "dismiss"
    MERGE = "merge"
    UNLINK = "unlink"
    UNDO = "undo"


class DecisionEntry(_Model):
    """One steward command: who, when, what (``kind``), on which item, persons and records,
    why; for an undo the command it undid (``undoes``); ``undone_by``: the latest undo of this
    command, if any."""

    command_id: str
    at: datetime
    actor: str
    kind: StewardKind
    review_item_id: int | None = None
    person_ids: tuple[int, ...] = ()
    record_ids: tuple[int, ...] = ()
    reason: str | None = None
    undoes: str | None = None
    undone_by: str | None = None


class DecisionLog(_Model):
    total: int
    entries: tuple[DecisionEntry, ...]


class DayCount(_Model):
    day: str  # YYYY-MM-DD (UTC)
    actor: str
    kind: StewardKind
    count: int


class LinkShare(_Model):
    """Records joined to a person that existed before them, by how: ``automatic`` (the
    engine, with a score), ``manual`` and ``verified`` (a steward or a feed's link message);
    ``automatic_share`` = automatic / all three (None: none yet)."""

    automatic: int
    manual: int
    verified: int
    automatic_share: float | None = None


class Dashboard(_Model):
    """The steward dashboard over the last ``days`` days: the open queue (size, oldest, by
    age and by hard rule), steward commands per day, steward and kind, the share of automatic
    links, the undos in the period and the match model in service."""

    days: int
    open: int
    oldest_open: datetime | None = None
    open_by_age: dict[str, int]
    open_by_rule: dict[str, int]
    decisions_per_day: tuple[DayCount, ...]
    links: LinkShare
    undone: int
    model_version: int | None = None
    model_activated_by: str | None = None
    model_created_at: datetime | None = None
