"""Demographic search (PDQ, PDQm), PIX cross-references and the candidates of a sparse query:
the reads behind identity.mpi.query."""

from __future__ import annotations

from typing import Any

import asyncpg

from identity.model import Person
from identity.store.rows import RECORD_COLUMNS as _RECORD_COLUMNS
from identity.store.rows import RECORD_FROM as _RECORD_FROM
from identity.store.rows import person_from_row, person_identifiers_from_rows, record_from_row
from identity.store.state import PersonIdentifiers, StoredRecord


def _like_prefix(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def _like_inside(value: str) -> str:
    return "%" + _like_prefix(value)


SORT_COLUMNS = {"family": "r.family_norm", "given": "r.given_norm",
                "birth_date": "r.birth_date", "updated_at": "r.updated_at", "id": "r.id"}
"""The columns a search may be ordered by (SearchCriteria.sort keys)."""


class SearchTerms:
    """Builds the WHERE clause of a demographic search from normalised values."""

    def __init__(self) -> None:
        self.where: list[str] = []
        self.params: list[Any] = []
        self.order = "r.family_norm, r.given_norm, r.id"

    def _p(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def equals(self, column: str, value: Any) -> None:
        self.where.append(f"r.{column} = {self._p(value)}")

    def prefix(self, column: str, value: str) -> None:
        self.where.append(f"r.{column} LIKE {self._p(_like_prefix(value))}")

    def inside(self, expression: str, value: str) -> None:
        """A normalised text (a column, or ``given`` with the middle names) contains
        ``value`` anywhere (not indexed: a scan of the rows the other terms leave)."""
        column = {"family": "r.family_norm", "city": "r.city_norm",
                  "given": "concat_ws(' ', r.given_norm, r.normalized ->> 'middle')"}[expression]
        self.where.append(f"{column} LIKE {self._p(_like_inside(value))}")

    def updated(self, low: Any, before: Any) -> None:
        """Last updated at or after ``low``, before ``before`` (index
        source_record_updated_at, migration 0016)."""
        if low is not None:
            self.where.append(f"r.updated_at >= {self._p(low)}")
        if before is not None:
            self.where.append(f"r.updated_at < {self._p(before)}")

    def sort(self, keys: tuple[str, ...]) -> None:
        """Order by ``keys`` (SORT_COLUMNS; ``-`` first: descending), then by id."""
        parts = []
        for key in keys:
            column = SORT_COLUMNS[key.removeprefix("-")]
            parts.append(f"{column} {'DESC' if key.startswith('-') else 'ASC'} NULLS LAST")
        if not any(k.removeprefix("-") == "id" for k in keys):
            parts.append("r.id")
        self.order = ", ".join(parts)

    def normalized_prefix(self, field: str, value: str) -> None:
        """A top-level text field of the normalised record starts with ``value``."""
        self.where.append(f"(r.normalized ->> '{field}') LIKE {self._p(_like_prefix(value))}")

    def birth_date(self, value: str) -> None:
        """A partial date matches every stored date at that precision or finer."""
        if len(value) == 10:
            self.equals("birth_date", value)
        else:
            self.where.append(
                f"(r.birth_date = {self._p(value)} OR r.birth_date LIKE {self._p(value + '-%')})"
            )

    def birth_date_range(self, low: str | None, high: str | None) -> None:
        if low:
            self.where.append(f"r.birth_date >= {self._p(low)}")
        if high:
            self.where.append(f"r.birth_date <= {self._p(high)}")

    def active_only(self) -> None:
        self.where.append("r.status = 'active'")

    def identifier(self, domain_id: int, value: str) -> None:
        d, v = self._p(domain_id), self._p(value)
        self.where.append(
            f"((r.domain_id = {d} AND r.identifier = {v}) OR EXISTS (SELECT 1 FROM"
            f" record_identifier ri WHERE ri.source_record_id = r.id AND ri.domain_id = {d}"
            f" AND ri.identifier = {v}))"
        )

    def account_number(self, value: str) -> None:
        """PID-18 CX.1, exactly (index source_record_account_number, migration 0003)."""
        self.where.append(f"(r.demographics ->> 'account_number') = {self._p(value)}")

    def mothers_identifier(self, value: str, namespace: str, oid: str | None) -> None:
        """PID-21 in a domain: the value (index source_record_mothers_identifier) and the
        authority as received, which names the domain by its namespace or its OID."""
        v, ns = self._p(value), self._p(namespace)
        authority = "r.demographics -> 'mothers_identifier' -> 'authority'"
        by_oid = f" OR ({authority} ->> 'oid') = {self._p(oid)}" if oid else ""
        self.where.append(
            f"(r.demographics -> 'mothers_identifier' ->> 'value') = {v}"
            f" AND (({authority} ->> 'namespace') = {ns}{by_oid})"
        )

    def phone(self, digits: str) -> None:
        self.where.append(f"r.phone_digits @> ARRAY[{self._p(digits)}]::text[]")

    def normalized_contains(self, document: Any) -> None:
        self.where.append(f"r.normalized @> {self._p(document)}::jsonb")


class SearchQueries:
    """Reads of the search side, on the connection (and so the transaction) given."""

    conn: asyncpg.Connection

    async def cross_references(
        self, domain_id: int | None, identifier: str
    ) -> PersonIdentifiers | None:
        """For a PIX query, in one round trip: the person named by an active record's own
        identifier in ``domain_id`` (``record_id``: that record) or, with ``domain_id`` None,
        by the enterprise id ``identifier`` (``record_id`` None), with the identifiers of its
        active records (by id). None when there is no such record, or the person has no active
        records. No demographics are read."""
        if domain_id is None:
            named = """SELECT NULL::bigint AS hit_id, p.id, p.enterprise_id, p.status
                       FROM person p WHERE p.enterprise_id = $1"""
            args: tuple[Any, ...] = (identifier,)
        else:
            named = """SELECT h.id AS hit_id, p.id, p.enterprise_id, p.status
                       FROM source_record h
                       JOIN link hl ON hl.source_record_id = h.id
                       JOIN person p ON p.id = hl.person_id
                       WHERE h.domain_id = $1 AND h.identifier = $2 AND h.status = 'active'"""
            args = (domain_id, identifier)
        rows = await self.conn.fetch(
            f"""SELECT x.hit_id, x.id AS person_id, x.enterprise_id, x.status AS person_status,
                       r.id, r.domain_id, r.identifier,
                       coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier,
                                                        coalesce(ri.type_code, '')]
                                                  ORDER BY ri.domain_id, ri.identifier)
                                 FROM record_identifier ri WHERE ri.source_record_id = r.id),
                                '{{}}') AS others
                FROM ({named}) x
                JOIN link l ON l.person_id = x.id
                JOIN source_record r ON r.id = l.source_record_id AND r.status = 'active'
                ORDER BY r.id""",
            *args,
        )
        return person_identifiers_from_rows(rows)


    async def search_candidates(
        self, family_phon: str | None, given_phon: str | None, limit: int
    ) -> list[int]:
        """Active records sharing the sound of the family (and given) name: the candidates of a
        demographic query too sparse for blocking keys (no birth date, say)."""
        rows = await self.conn.fetch(
            """SELECT id FROM source_record
               WHERE status = 'active' AND family_phon = $1
                 AND ($2::text IS NULL OR given_phon = $2)
               LIMIT $3""",
            family_phon,
            given_phon,
            limit,
        )
        return [r["id"] for r in rows]


    async def search(
        self, terms: SearchTerms, limit: int, offset: int
    ) -> tuple[int, list[StoredRecord]]:
        """The records matching ``terms`` (family, given, id order): how many, and the page."""
        where, params = terms.where, terms.params
        clause = " AND ".join(where) if where else "TRUE"
        n = len(params)
        rows = await self.conn.fetch(
            f"""SELECT {_RECORD_COLUMNS}, count(*) OVER () AS total_count {_RECORD_FROM}
                WHERE {clause}
                ORDER BY {terms.order}
                LIMIT ${n + 1} OFFSET ${n + 2}""",
            *params,
            limit,
            offset,
        )
        total = rows[0]["total_count"] if rows else 0
        if not rows and offset:
            total = await self.conn.fetchval(
                f"SELECT count(*) {_RECORD_FROM} WHERE {clause}", *params
            )
        return total, [record_from_row(r) for r in rows]

    async def search_persons(
        self, terms: SearchTerms, limit: int, offset: int
    ) -> tuple[int, list[tuple[Person, int]], list[StoredRecord]]:
        """Persons with a record matching ``terms``: (number of persons, the persons of the
        page (without their records) each with its first matching record's id, the active
        records of those persons). Persons are ordered by their first matching record
        (family, given, record id: the order of :meth:`search`). Two queries."""
        where, params = terms.where, terms.params
        clause = " AND ".join(where) if where else "TRUE"
        hits = f"""
            SELECT DISTINCT ON (l.person_id) l.person_id, r.id AS record_id,
                   r.family_norm AS family, r.given_norm AS given
            FROM source_record r JOIN link l ON l.source_record_id = r.id
            WHERE {clause}
            ORDER BY l.person_id, r.family_norm, r.given_norm, r.id"""
        n = len(params)
        persons = await self.conn.fetch(
            f"""WITH hit AS ({hits})
                SELECT p.*, h.record_id AS matched_record_id, count(*) OVER () AS total_count
                FROM hit h JOIN person p ON p.id = h.person_id
                ORDER BY h.family, h.given, h.record_id
                LIMIT ${n + 1} OFFSET ${n + 2}""",
            *params,
            limit,
            offset,
        )
        if not persons:
            total = 0
            if offset:
                total = await self.conn.fetchval(f"SELECT count(*) FROM ({hits}) h", *params)
            return total, [], []
        records = await self.person_records([p["id"] for p in persons])
        page = [(person_from_row(p), p["matched_record_id"]) for p in persons]
        return persons[0]["total_count"], page, records

