"""The steward API's request and response bodies and query parameters, as pydantic models:
the handlers validate with them and the OpenAPI document is generated from them (one source).
The views themselves (QueuePage, ReviewDetail, PersonView, ...) are identity.model's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from identity.errors import InvalidInput
from identity.model import (
    Person,
    QueueCountsWanted,
    QueueFilter,
    QueueSort,
    ReviewItem,
    ReviewStatus,
    SourceRecord,
    StewardKind,
)
from identity.mpi.steward import decode_cursor

REASON = Field(None, max_length=2000, description="Why (kept in the decisions log and audit)")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- query parameters --------------------------------------------------------------------------


class QueueQuery(_Body):
    """Parameters of ``GET /api/review``."""

    status: ReviewStatus | Literal["all"] = Field(
        ReviewStatus.OPEN, description="Items of this status; `all`: every status"
    )
    min_probability: float | None = Field(None, ge=0, le=1)
    max_probability: float | None = Field(None, ge=0, le=1)
    rule: str | None = Field(
        None, max_length=100,
        description="Items on which this hard rule fired; `none`: items on which none did",
    )
    domain: str | None = Field(
        None, max_length=200, description="Items with a record from this domain (namespace or "
        "OID)",
    )
    min_age_hours: float | None = Field(None, ge=0, description="Items opened at least this "
                                        "long ago")
    max_age_hours: float | None = Field(None, ge=0, description="Items opened at most this "
                                        "long ago")
    created_before: datetime | None = None
    created_after: datetime | None = None
    record_id: int | None = Field(None, description="Items naming this record")
    person_id: int | None = Field(None, description="Items naming this candidate person")
    sort: QueueSort = Field(
        QueueSort.OLDEST,
        description="`oldest` (default), `newest`, `impact` (most other open items sharing a "
        "record or the candidate person first), `probability_desc`, `probability_asc`, "
        "`uncertain` (the probability closest to 0.5 first: the labels that teach the model "
        "most; no probability last)",
    )
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)
    after: str | None = Field(
        None, max_length=512,
        description="A page's `next`: the page after it (keyset paging, of the same sort; not "
        "with a non-zero `offset`). Items decided meanwhile neither shift nor repeat the pages "
        "after it (but with `sort=impact`, whose cursor is a position)",
    )
    counts: QueueCountsWanted = Field(
        QueueCountsWanted.OPEN,
        description="`open` (default): the open queue's counts; `all`: also the items per "
        "status under the filters (reads every item); `none`: the page and its total only",
    )

    @field_validator("after")
    @classmethod
    def _a_cursor_of_this_sort(cls, after: str | None, info: ValidationInfo) -> str | None:
        if after is None:
            return None
        if info.data.get("offset"):
            raise ValueError("a page is asked for by offset or by cursor (after), not both")
        if "sort" in info.data:
            try:
                decode_cursor(after, info.data["sort"])
            except InvalidInput as exc:
                raise ValueError(str(exc).removeprefix("after: ")) from None
        return after


    def filter(self, now: datetime | None = None) -> QueueFilter:
        """The core's filter for these parameters (ages counted back from ``now``)."""
        now = now or datetime.now(UTC)
        before, after = self.created_before, self.created_after
        if self.min_age_hours is not None:
            limit = now - timedelta(hours=self.min_age_hours)
            before = min(before, limit) if before else limit
        if self.max_age_hours is not None:
            limit = now - timedelta(hours=self.max_age_hours)
            after = max(after, limit) if after else limit
        return QueueFilter(
            status=None if self.status == "all" else self.status,
            min_probability=self.min_probability,
            max_probability=self.max_probability,
            rule=self.rule,
            domain=self.domain,
            created_before=before,
            created_after=after,
            record_id=self.record_id,
            person_id=self.person_id,
        )


class SearchQuery(_Body):
    """Parameters of ``GET /api/search``: an identifier or demographics."""

    identifier: str | None = Field(
        None, max_length=300,
        description="`value` (any domain, or an enterprise id) or `DOMAIN|value` (namespace or "
        "OID)",
    )
    family: str | None = Field(None, max_length=200, description="`*` at the end: a prefix")
    given: str | None = Field(None, max_length=200)
    birth_date: str | None = Field(None, max_length=10, description="YYYY, YYYY-MM or "
                                   "YYYY-MM-DD")
    sex: str | None = Field(None, max_length=10)
    postal_code: str | None = Field(None, max_length=20)
    phone: str | None = Field(None, max_length=40)
    limit: int = Field(20, ge=1, le=200)
    offset: int = Field(0, ge=0)


class DecisionsQuery(_Body):
    """Parameters of ``GET /api/decisions``."""

    steward: str | None = Field(None, max_length=128, description="One steward's commands "
                                "(the name, without `steward:`)")
    kind: StewardKind | None = None
    since: datetime | None = None
    review_item: int | None = Field(None, description="The commands on this review item")
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0)


class DashboardQuery(_Body):
    days: int = Field(14, ge=1, le=366, description="The period of the per-day figures")


# --- request bodies ----------------------------------------------------------------------------


class DecisionBody(_Body):
    """A decision on a review item, made on the item's ``version``."""

    decision: Literal["same_person", "different_persons", "dismiss"]
    version: int = Field(ge=1, description="The item's version the decision was made on")
    reason: str | None = REASON


class MergeBody(_Body):
    """Merge person ``merged`` into the person of the path (the survivor)."""

    merged: int = Field(description="The person whose records move to the survivor")
    version: int = Field(ge=1, description="The survivor's version the decision was made on")
    merged_version: int = Field(ge=1, description="The merged person's version")
    reason: str | None = REASON


class UnlinkBody(_Body):
    """Unlink the record of the path from its person."""

    version: int = Field(ge=1, description="The version of the record's person")
    reason: str | None = REASON


# --- responses ---------------------------------------------------------------------------------


class CommandOutcome(BaseModel):
    """What a steward command did: its id (for undo), the persons and records it changed as
    they are now, and the review item it decided (decisions)."""

    command_id: str
    applied: bool = True
    note: str | None = None
    persons: tuple[Person, ...] = ()
    records: tuple[SourceRecord, ...] = ()
    review_item: ReviewItem | None = None
    undo: str = Field(description="Where to POST to undo this command")
