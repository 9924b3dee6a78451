"""The steward's reads and the log of steward commands: the review queue (filters, sorts,
paging, counts), the other items of a record or person, histories, the decisions log and the
dashboard's figures (identity.mpi.steward). Indexes: migration 0014."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from identity.model import (
    NO_HARD_RULE,
    DecisionEntry,
    HistoryEvent,
    QueueItem,
    QueueSort,
    RecordStatus,
    RecordSummary,
    ReviewStatus,
    StewardKind,
)
from identity.store.rows import history_from_row


@dataclass(frozen=True, kw_only=True, slots=True)
class OpenFacets:
    """The open queue as a whole: its size, by hard rule (NO_HARD_RULE: none fired), by
    domain id, by age (under_1_day, 1_to_7_days, over_7_days) and its oldest item's time."""

    size: int
    by_rule: dict[str, int]
    by_domain: dict[int, int]
    by_age: dict[str, int]
    oldest: datetime | None


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueTerms:
    """A queue filter with its domain resolved (identity.model.QueueFilter)."""

    status: ReviewStatus | None = ReviewStatus.OPEN
    min_probability: float | None = None
    max_probability: float | None = None
    rule: str | None = None
    domain_id: int | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    record_id: int | None = None
    person_id: int | None = None
    exclude_id: int | None = None


class _Where:
    """A WHERE clause over ``review_item i`` and its parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def p(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def add(self, text: str) -> None:
        self.parts.append(text)

    @property
    def clause(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"


def _where(terms: QueueTerms, *, with_status: bool = True) -> _Where:
    w = _Where()
    if with_status and terms.status is not None:
        w.add(f"i.status = {w.p(terms.status.value)}")
    if terms.min_probability is not None:
        w.add(f"i.score >= {w.p(terms.min_probability)}")
    if terms.max_probability is not None:
        w.add(f"i.score <= {w.p(terms.max_probability)}")
    if terms.rule == NO_HARD_RULE:
        w.add("i.hard_rules = '{}'")
    elif terms.rule is not None:
        w.add(f"i.hard_rules @> ARRAY[{w.p(terms.rule)}::text]")
    if terms.domain_id is not None:
        w.add(f"i.domain_ids @> ARRAY[{w.p(terms.domain_id)}::integer]")
    if terms.created_before is not None:
        w.add(f"i.created_at < {w.p(terms.created_before)}")
    if terms.created_after is not None:
        w.add(f"i.created_at >= {w.p(terms.created_after)}")
    if terms.record_id is not None:
        r = w.p(terms.record_id)
        w.add(f"(i.record_id = {r} OR i.other_record_id = {r})")
    if terms.person_id is not None:
        w.add(f"i.person_id = {w.p(terms.person_id)}")
    if terms.exclude_id is not None:
        w.add(f"i.id <> {w.p(terms.exclude_id)}")
    return w


UNCERTAINTY = "coalesce(abs(i.score - 0.5), 'Infinity'::double precision)"
"""The uncertain sort's key: how far the probability is from 0.5 (the order of |logit|), no
probability last. review_item_open_uncertain (migration 0015) is on this expression."""

_ORDER = {
    QueueSort.OLDEST: "i.created_at, i.id",
    QueueSort.NEWEST: "i.created_at DESC, i.id DESC",
    # both along review_item_open_score (score, id): forwards and backwards (no score: last,
    # and first backwards)
    QueueSort.PROBABILITY_DESC: "i.score DESC, i.id DESC",
    QueueSort.PROBABILITY_ASC: "i.score, i.id",
    QueueSort.IMPACT: "i.impact DESC, i.created_at, i.id",
    QueueSort.UNCERTAIN: f"{UNCERTAINTY}, i.created_at, i.id",
}


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueKey:
    """Where a page asked for by cursor starts: after the item of this sort key (``score``,
    ``created_at``, ``id``: the last item of the page before), or, with sort impact (whose key
    changes as items are decided), at ``position``."""

    score: float | None = None
    created_at: datetime | None = None
    id: int = 0
    position: int = 0


def _after(sort: QueueSort, key: QueueKey, w: _Where) -> list[str]:
    """The items after ``key`` in ``sort``'s order, as disjoint conditions in that order
    (each an index range; a score that is NULL sorts last, first backwards)."""
    if sort in (QueueSort.OLDEST, QueueSort.NEWEST, QueueSort.UNCERTAIN):
        at, id_ = w.p(key.created_at), w.p(key.id)
        if sort == QueueSort.OLDEST:
            return [f"(i.created_at, i.id) > ({at}, {id_})"]
        if sort == QueueSort.NEWEST:
            return [f"(i.created_at, i.id) < ({at}, {id_})"]
        score = w.p(key.score)
        uncertainty = UNCERTAINTY.replace("i.score", f"{score}::double precision")
        return [f"({UNCERTAINTY}, i.created_at, i.id) > ({uncertainty}, {at}, {id_})"]
    id_ = w.p(key.id)
    if sort == QueueSort.PROBABILITY_ASC:
        if key.score is None:
            return [f"i.score IS NULL AND i.id > {id_}"]
        return [f"(i.score, i.id) > ({w.p(key.score)}, {id_})", "i.score IS NULL"]
    if sort == QueueSort.PROBABILITY_DESC:
        if key.score is None:
            return [f"i.score IS NULL AND i.id < {id_}", "i.score IS NOT NULL"]
        return [f"(i.score, i.id) < ({w.p(key.score)}, {id_})"]
    raise ValueError(f"sort {sort} pages by position")


def _summary_columns(alias: str, prefix: str) -> str:
    """A record summary's columns (RecordSummary, read by ``_summary``)."""
    return f"""
        {alias}.id AS {prefix}id, {alias}.domain_id AS {prefix}domain_id,
        {alias}.identifier AS {prefix}identifier, {alias}.status AS {prefix}status,
        {alias}l.person_id AS {prefix}person_id, {alias}p.enterprise_id AS {prefix}enterprise_id,
        {alias}.demographics -> 'names' -> 0 ->> 'family' AS {prefix}family,
        {alias}.demographics -> 'names' -> 0 -> 'given' ->> 0 AS {prefix}given,
        {alias}.demographics ->> 'birth_date' AS {prefix}birth_date,
        {alias}.demographics ->> 'sex' AS {prefix}sex"""


def _summary_joins(alias: str, on: str, outer: bool) -> str:
    join = "LEFT JOIN" if outer else "JOIN"
    return f"""
        {join} source_record {alias} ON {alias}.id = {on}
        LEFT JOIN link {alias}l ON {alias}l.source_record_id = {alias}.id
        LEFT JOIN person {alias}p ON {alias}p.id = {alias}l.person_id"""


_ITEM_COLUMNS = (
    "i.id, i.version, i.status, i.score, i.reason, i.hard_rules, i.created_at, i.resolved_at,"
    " i.resolved_by, i.person_id, i.impact"
)

_PAGE_COLUMNS = f"{_ITEM_COLUMNS}, i.record_id, i.other_record_id"


def _summary(row: Mapping[str, Any], prefix: str, namespaces: Mapping[int, str]) -> RecordSummary:
    return RecordSummary(
        id=row[f"{prefix}id"],
        domain=namespaces.get(row[f"{prefix}domain_id"], str(row[f"{prefix}domain_id"])),
        identifier=row[f"{prefix}identifier"],
        status=RecordStatus(row[f"{prefix}status"]),
        person_id=row[f"{prefix}person_id"],
        enterprise_id=row[f"{prefix}enterprise_id"],
        family=row[f"{prefix}family"],
        given=row[f"{prefix}given"],
        birth_date=row[f"{prefix}birth_date"],
        sex=row[f"{prefix}sex"],
    )


def queue_item_from_row(row: Mapping[str, Any], namespaces: Mapping[int, str]) -> QueueItem:
    return QueueItem(
        id=row["id"],
        version=row["version"],
        status=ReviewStatus(row["status"]),
        score=row["score"],
        reason=row["reason"],
        hard_rules=tuple(row["hard_rules"]),
        created_at=row["created_at"],
        resolved_at=row["resolved_at"],
        resolved_by=row["resolved_by"],
        person_id=row["person_id"],
        record=_summary(row, "r_", namespaces),
        other=_summary(row, "o_", namespaces) if row["o_id"] is not None else None,
        impact=row["impact"] if row["status"] == "open" else 0,
    )


def _entry_from_row(row: Mapping[str, Any]) -> DecisionEntry:
    return DecisionEntry(
        command_id=str(row["command_id"]),
        at=row["at"],
        actor=row["actor"],
        kind=StewardKind(row["kind"]),
        review_item_id=row["review_item_id"],
        person_ids=tuple(row["person_ids"]),
        record_ids=tuple(row["record_ids"]),
        reason=row["reason"],
        undoes=str(row["undoes"]) if row["undoes"] is not None else None,
        undone_by=str(row["undone_by"]) if row["undone_by"] is not None else None,
    )


class StewardQueries:
    """The steward's reads, on the connection (and so the transaction) given."""

    conn: asyncpg.Connection

    # --- the queue --------------------------------------------------------------------------

    async def review_queue(
        self,
        terms: QueueTerms,
        *,
        sort: QueueSort,
        limit: int,
        offset: int,
        namespaces: Mapping[int, str],
        after: QueueKey | None = None,
    ) -> list[QueueItem]:
        """One page of review items with their records' summaries: from ``offset``, or just
        after ``after`` (keyset: an index range, as fast deep in the queue as at its head).
        The page is chosen on review_item alone (its indexes), then joined."""
        w = _where(terms)
        order = _ORDER[sort]
        if after is not None and sort == QueueSort.IMPACT:
            offset, after = offset + after.position, None
        if after is None:
            lim, off = w.p(limit), w.p(offset)
            page = (f"SELECT {_PAGE_COLUMNS} FROM review_item i WHERE {w.clause} "
                    f"ORDER BY {order} LIMIT {lim} OFFSET {off}")
        else:
            branches = _after(sort, after, w)
            lim = w.p(limit)
            page = " UNION ALL ".join(
                f"(SELECT {_PAGE_COLUMNS} FROM review_item i WHERE {w.clause} AND {branch} "
                f"ORDER BY {order} LIMIT {lim})"
                for branch in branches
            )
            if len(branches) > 1:
                page = f"SELECT * FROM ({page}) i ORDER BY {order} LIMIT {lim}"
        rows = await self.conn.fetch(
            f"""SELECT {_ITEM_COLUMNS},
                       {_summary_columns("r", "r_")}, {_summary_columns("o", "o_")}
                FROM ({page}) i
                {_summary_joins("r", "i.record_id", outer=False)}
                {_summary_joins("o", "i.other_record_id", outer=True)}
                ORDER BY {order}""",
            *w.params,
        )
        return [queue_item_from_row(r, namespaces) for r in rows]

    async def review_count(self, terms: QueueTerms) -> int:
        """Items under ``terms`` (open ones: from review_item_queue alone)."""
        w = _where(terms)
        return int(await self.conn.fetchval(
            f"SELECT count(*) FROM review_item i WHERE {w.clause}", *w.params
        ))

    async def review_counts_by_status(self, terms: QueueTerms) -> dict[str, int]:
        """Items per status under ``terms`` but their status (every status named, 0 too):
        reads every item."""
        w = _where(terms, with_status=False)
        rows = await self.conn.fetch(
            f"SELECT i.status, count(*) AS n FROM review_item i WHERE {w.clause} "
            "GROUP BY i.status",
            *w.params,
        )
        counts = {s.value: 0 for s in ReviewStatus}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    async def open_review_facets(self) -> OpenFacets:
        """The open queue: its size, by hard rule, by domain id, by age and its oldest item.
        One pass over review_item_queue's open entries, grouped by the two arrays."""
        rows = await self.conn.fetch(
            """SELECT hard_rules, domain_ids, count(*) AS n, min(created_at) AS oldest,
                      count(*) FILTER (WHERE created_at >= now() - interval '1 day') AS day,
                      count(*) FILTER (WHERE created_at < now() - interval '1 day'
                                         AND created_at >= now() - interval '7 days') AS week
               FROM review_item WHERE status = 'open' GROUP BY hard_rules, domain_ids"""
        )
        rules: dict[str, int] = {}
        domains: dict[int, int] = {}
        for row in rows:
            for rule in row["hard_rules"] or [NO_HARD_RULE]:
                rules[rule] = rules.get(rule, 0) + row["n"]
            for domain_id in row["domain_ids"]:
                domains[domain_id] = domains.get(domain_id, 0) + row["n"]
        size = sum(r["n"] for r in rows)
        day, week = sum(r["day"] for r in rows), sum(r["week"] for r in rows)
        return OpenFacets(
            size=size,
            by_rule=rules,
            by_domain=domains,
            by_age={"under_1_day": day, "1_to_7_days": week,
                    "over_7_days": size - day - week},
            oldest=min((r["oldest"] for r in rows), default=None),
        )

    async def open_review_ids_touching(
        self, record_ids: Sequence[int], person_ids: Sequence[int]
    ) -> list[int]:
        """Open items naming one of the records (as record or other record) or one of the
        candidate persons, by id."""
        rows = await self.conn.fetch(
            """SELECT id FROM review_item WHERE status = 'open' AND record_id = ANY($1::bigint[])
               UNION SELECT id FROM review_item
               WHERE status = 'open' AND other_record_id = ANY($1::bigint[])
               UNION SELECT id FROM review_item
               WHERE status = 'open' AND person_id = ANY($2::bigint[])
               ORDER BY id""",
            list(record_ids),
            list(person_ids),
        )
        return [r["id"] for r in rows]

    async def queue_items(
        self, item_ids: Sequence[int], namespaces: Mapping[int, str]
    ) -> list[QueueItem]:
        """These items as queue rows, by id."""
        rows = await self.conn.fetch(
            f"""SELECT {_ITEM_COLUMNS},
                       {_summary_columns("r", "r_")}, {_summary_columns("o", "o_")}
                FROM review_item i
                {_summary_joins("r", "i.record_id", outer=False)}
                {_summary_joins("o", "i.other_record_id", outer=True)}
                WHERE i.id = ANY($1::bigint[]) ORDER BY i.id""",
            list(item_ids),
        )
        return [queue_item_from_row(r, namespaces) for r in rows]

    async def review_item_ids_of_records(
        self, record_ids: Sequence[int], *, limit: int = 50
    ) -> list[int]:
        """Items of any status naming one of the records, newest first."""
        rows = await self.conn.fetch(
            """SELECT id FROM review_item WHERE record_id = ANY($1::bigint[])
               UNION SELECT id FROM review_item WHERE other_record_id = ANY($1::bigint[])
               ORDER BY id DESC LIMIT $2""",
            list(record_ids),
            limit,
        )
        return [r["id"] for r in rows]

    # --- records and persons ----------------------------------------------------------------

    async def blocking_keys_of(self, record_id: int) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT key FROM blocking_key WHERE source_record_id = $1 ORDER BY key", record_id
        )
        return [r["key"] for r in rows]

    async def records_named(
        self, value: str, domain_ids: Sequence[int] | None
    ) -> list[int]:
        """Records whose own or other identifier is ``value`` in one of ``domain_ids`` (None:
        any domain), by id."""
        if domain_ids is None:
            domain_ids = [
                r["id"] for r in await self.conn.fetch("SELECT id FROM domain ORDER BY id")
            ]
        rows = await self.conn.fetch(
            """SELECT id FROM source_record
               WHERE domain_id = ANY($1::integer[]) AND identifier = $2
               UNION
               SELECT source_record_id FROM record_identifier
               WHERE domain_id = ANY($1::integer[]) AND identifier = $2
               ORDER BY 1""",
            list(domain_ids),
            value,
        )
        return [r["id"] for r in rows]

    async def person_history(
        self, person_id: int, record_ids: Sequence[int], *, limit: int = 500
    ) -> list[HistoryEvent]:
        """The newest ``limit`` history rows naming the person or one of the records, oldest
        first."""
        rows = await self.conn.fetch(
            """SELECT * FROM (
                   SELECT * FROM history WHERE person_id = $1
                   UNION
                   SELECT * FROM history WHERE record_id = ANY($2::bigint[])
                   ORDER BY id DESC LIMIT $3) h
               ORDER BY id""",
            person_id,
            list(record_ids),
            limit,
        )
        return [history_from_row(r) for r in rows]

    async def records_history(
        self, record_ids: Sequence[int], *, limit: int = 500
    ) -> list[HistoryEvent]:
        """The newest ``limit`` history rows naming one of the records, oldest first."""
        rows = await self.conn.fetch(
            """SELECT * FROM (
                   SELECT * FROM history WHERE record_id = ANY($1::bigint[])
                   ORDER BY id DESC LIMIT $2) h
               ORDER BY id""",
            list(record_ids),
            limit,
        )
        return [history_from_row(r) for r in rows]

    async def no_match_pairs_within(self, record_ids: Sequence[int]) -> list[tuple[int, int]]:
        """The no-match assertions between two of these records."""
        rows = await self.conn.fetch(
            """SELECT record_a, record_b FROM no_match
               WHERE record_a = ANY($1::bigint[]) AND record_b = ANY($1::bigint[])""",
            list(record_ids),
        )
        return [(r["record_a"], r["record_b"]) for r in rows]

    # --- the log of steward commands --------------------------------------------------------

    async def log_steward_command(
        self,
        command_id: uuid.UUID,
        *,
        actor: str,
        kind: StewardKind,
        review_item_id: int | None = None,
        person_ids: Sequence[int] = (),
        record_ids: Sequence[int] = (),
        reason: str | None = None,
        undoes: str | None = None,
    ) -> None:
        await self.conn.execute(
            """INSERT INTO steward_decision (command_id, actor, kind, review_item_id,
                   person_ids, record_ids, reason, undoes)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            command_id,
            actor,
            kind.value,
            review_item_id,
            sorted(set(person_ids)),
            sorted(set(record_ids)),
            reason,
            uuid.UUID(undoes) if undoes else None,
        )

    async def decisions(
        self,
        *,
        actor: str | None,
        kind: StewardKind | None,
        since: datetime | None,
        review_item_id: int | None,
        limit: int,
        offset: int,
    ) -> tuple[int, list[DecisionEntry]]:
        """Steward commands, newest first, with the latest undo of each; and how many match."""
        w = _Where()
        if actor is not None:
            w.add(f"d.actor = {w.p(actor)}")
        if kind is not None:
            w.add(f"d.kind = {w.p(kind.value)}")
        if since is not None:
            w.add(f"d.at >= {w.p(since)}")
        if review_item_id is not None:
            w.add(f"d.review_item_id = {w.p(review_item_id)}")
        total = await self.conn.fetchval(
            f"SELECT count(*) FROM steward_decision d WHERE {w.clause}", *w.params
        )
        lim, off = w.p(limit), w.p(offset)
        rows = await self.conn.fetch(
            f"""SELECT d.*, u.command_id AS undone_by FROM (
                    SELECT * FROM steward_decision d WHERE {w.clause}
                    ORDER BY d.at DESC, d.command_id LIMIT {lim} OFFSET {off}) d
                LEFT JOIN LATERAL (
                    SELECT command_id FROM steward_decision x WHERE x.undoes = d.command_id
                    ORDER BY x.at DESC LIMIT 1) u ON TRUE
                ORDER BY d.at DESC, d.command_id""",
            *w.params,
        )
        return total, [_entry_from_row(r) for r in rows]

    async def steward_command(self, command_id: str) -> DecisionEntry | None:
        rows = await self.conn.fetch(
            """SELECT d.*, (SELECT x.command_id FROM steward_decision x
                            WHERE x.undoes = d.command_id ORDER BY x.at DESC LIMIT 1)
                       AS undone_by
               FROM steward_decision d WHERE d.command_id = $1""",
            uuid.UUID(command_id),
        )
        return _entry_from_row(rows[0]) if rows else None

    # --- the dashboard ----------------------------------------------------------------------

    async def decisions_per_day(self, days: int) -> list[tuple[str, str, str, int]]:
        """(UTC day, actor, kind, count) of the steward commands of the last ``days`` days
        (steward_decision_at alone)."""
        rows = await self.conn.fetch(
            """SELECT date_trunc('day', at AT TIME ZONE 'UTC') AS day, actor, kind,
                      count(*) AS n
               FROM steward_decision WHERE at >= now() - make_interval(days => $1)
               GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
            days,
        )
        return [(r["day"].strftime("%Y-%m-%d"), r["actor"], r["kind"], r["n"]) for r in rows]

    async def joined_links(self) -> dict[str, int]:
        """Records joined to a person that existed before them, by link kind (index
        link_joined)."""
        rows = await self.conn.fetch(
            """SELECT kind, count(*) AS n FROM link
               WHERE score IS NOT NULL OR kind <> 'automatic' GROUP BY kind"""
        )
        return {r["kind"]: r["n"] for r in rows}

    async def active_model(self) -> tuple[int, str, datetime] | None:
        row = await self.conn.fetchrow(
            "SELECT version, created_by, created_at FROM match_model WHERE active"
        )
        return None if row is None else (row["version"], row["created_by"], row["created_at"])
