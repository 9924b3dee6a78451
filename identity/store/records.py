"""Reads and single-row changes of the index: domains, source records, persons, links,
no-match assertions, review items and history, as the domain types of identity.model and
identity.store.state. The steps of identity.mpi.changes and identity.mpi.review are made of
these."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from identity.model import (
    Domain,
    HistoryEvent,
    Person,
    PersonStatus,
    RecordStatus,
    ReviewItem,
    ReviewStatus,
)
from identity.store.registration import LinkWrite, ReviewWrite
from identity.store.rows import RECORD_COLUMNS as _RECORD_COLUMNS
from identity.store.rows import RECORD_FROM as _RECORD_FROM
from identity.store.rows import (
    domain_from_row,
    history_from_row,
    link_from_row,
    person_from_row,
    record_from_row,
    review_from_row,
)
from identity.store.state import LinkState, StoredRecord


class IndexQueries:
    """The index's rows, on the connection (and so the transaction) given."""

    conn: asyncpg.Connection

    # --- domains ----------------------------------------------------------------------------

    async def domains(self) -> list[Domain]:
        rows = await self.conn.fetch("SELECT * FROM domain ORDER BY id")
        return [domain_from_row(r) for r in rows]

    async def upsert_domain(
        self,
        *,
        namespace: str,
        oid: str | None,
        sources: Sequence[str],
        identifies_person: bool,
        is_enterprise: bool = False,
    ) -> Domain:
        row = await self.conn.fetchrow(
            """INSERT INTO domain (namespace, oid, sources, identifies_person, is_enterprise)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (namespace) DO UPDATE
                 SET oid = EXCLUDED.oid, sources = EXCLUDED.sources,
                     identifies_person = EXCLUDED.identifies_person,
                     is_enterprise = EXCLUDED.is_enterprise
               RETURNING *""",
            namespace,
            oid,
            list(sources),
            identifies_person,
            is_enterprise,
        )
        return domain_from_row(row)

    async def insert_domain_if_absent(self, namespace: str, oid: str | None) -> None:
        await self.conn.execute(
            "INSERT INTO domain (namespace, oid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            namespace,
            oid,
        )

    # --- source records ---------------------------------------------------------------------

    async def record(
        self, record_id: int, *, for_update: bool = False
    ) -> StoredRecord | None:
        lock = " FOR NO KEY UPDATE OF r" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT {_RECORD_COLUMNS} {_RECORD_FROM} WHERE r.id = $1{lock}", record_id
        )
        return None if row is None else record_from_row(row)

    async def record_by_identifier(
        self, domain_id: int, identifier: str, *, for_update: bool = False
    ) -> StoredRecord | None:
        lock = " FOR NO KEY UPDATE OF r" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT {_RECORD_COLUMNS} {_RECORD_FROM}"
            f" WHERE r.domain_id = $1 AND r.identifier = $2{lock}",
            domain_id,
            identifier,
        )
        return None if row is None else record_from_row(row)

    async def records(self, record_ids: Sequence[int]) -> list[StoredRecord]:
        """The records with these ids, by id."""
        rows = await self.conn.fetch(
            f"SELECT {_RECORD_COLUMNS} {_RECORD_FROM} WHERE r.id = ANY($1::bigint[]) ORDER BY r.id",
            list(record_ids),
        )
        return [record_from_row(r) for r in rows]

    async def person_records(
        self, person_ids: Sequence[int], *, active_only: bool = True
    ) -> list[StoredRecord]:
        """The records linked to these persons (the active ones only by default), by id."""
        status = " AND r.status = 'active'" if active_only else ""
        rows = await self.conn.fetch(
            f"SELECT {_RECORD_COLUMNS} {_RECORD_FROM}"
            f" WHERE l.person_id = ANY($1::bigint[]){status} ORDER BY r.id",
            list(person_ids),
        )
        return [record_from_row(r) for r in rows]

    async def set_record_status(
        self, record_id: int, status: RecordStatus, merged_into: int | None = None
    ) -> None:
        await self.conn.execute(
            """UPDATE source_record SET status = $2, merged_into = $3, version = version + 1,
                   updated_at = now() WHERE id = $1""",
            record_id,
            status.value,
            merged_into,
        )

    async def set_record_identifier(self, record_id: int, identifier: str) -> None:
        await self.conn.execute(
            """UPDATE source_record SET identifier = $2, version = version + 1, updated_at = now()
               WHERE id = $1""",
            record_id,
            identifier,
        )

    async def set_blocking_keys(self, record_id: int, keys: Sequence[str]) -> None:
        await self.conn.execute("DELETE FROM blocking_key WHERE source_record_id = $1", record_id)
        if keys:
            await self.conn.execute(
                """INSERT INTO blocking_key (key, source_record_id)
                   SELECT DISTINCT k, $2::bigint FROM unnest($1::text[]) AS k""",
                list(keys),
                record_id,
            )


    async def records_with_identifier(self, domain_id: int, identifier: str) -> list[int]:
        """Active records whose primary or other identifiers include (domain, identifier)."""
        rows = await self.conn.fetch(
            """SELECT id FROM source_record
               WHERE domain_id = $1 AND identifier = $2 AND status = 'active'
               UNION
               SELECT ri.source_record_id FROM record_identifier ri
               JOIN source_record r ON r.id = ri.source_record_id AND r.status = 'active'
               WHERE ri.domain_id = $1 AND ri.identifier = $2""",
            domain_id,
            identifier,
        )
        return [r["id"] for r in rows]

    # --- persons and links ------------------------------------------------------------------

    async def insert_person(self) -> Person:
        row = await self.conn.fetchrow(
            """INSERT INTO person (enterprise_id)
               VALUES (lpad(nextval('enterprise_id_seq')::text, 10, '0')) RETURNING *"""
        )
        return person_from_row(row)

    async def person(self, person_id: int, *, for_update: bool = False) -> Person | None:
        """The person, without its records."""
        lock = " FOR NO KEY UPDATE" if for_update else ""
        row = await self.conn.fetchrow(f"SELECT * FROM person WHERE id = $1{lock}", person_id)
        return None if row is None else person_from_row(row)

    async def person_by_enterprise_id(self, enterprise_id: str) -> Person | None:
        """The person, without its records."""
        row = await self.conn.fetchrow(
            "SELECT * FROM person WHERE enterprise_id = $1", enterprise_id
        )
        return None if row is None else person_from_row(row)

    async def set_person_status(
        self, person_id: int, status: PersonStatus, merged_into: int | None = None
    ) -> None:
        await self.conn.execute(
            """UPDATE person SET status = $2, merged_into = $3, version = version + 1,
                   updated_at = now() WHERE id = $1""",
            person_id,
            status.value,
            merged_into,
        )

    async def touch_person(self, person_id: int) -> None:
        await self.conn.execute(
            "UPDATE person SET version = version + 1, updated_at = now() WHERE id = $1", person_id
        )

    async def link(self, record_id: int) -> LinkState | None:
        row = await self.conn.fetchrow("SELECT * FROM link WHERE source_record_id = $1", record_id)
        return None if row is None else link_from_row(row)

    async def set_link(self, record_id: int, person_id: int, link: LinkWrite) -> None:
        """Link the record to the person (its link replaced, if it had one)."""
        await self.conn.execute(
            """INSERT INTO link (source_record_id, person_id, kind, score, explanation, actor)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (source_record_id) DO UPDATE
                 SET person_id = EXCLUDED.person_id, kind = EXCLUDED.kind, score = EXCLUDED.score,
                     explanation = EXCLUDED.explanation, actor = EXCLUDED.actor,
                     created_at = now()""",
            record_id,
            person_id,
            link.kind.value,
            link.score,
            link.explanation,
            link.actor,
        )

    async def delete_link(self, record_id: int) -> None:
        await self.conn.execute("DELETE FROM link WHERE source_record_id = $1", record_id)

    async def count_active_records(self, person_id: int) -> int:
        return await self.conn.fetchval(
            """SELECT count(*) FROM link l JOIN source_record r ON r.id = l.source_record_id
               WHERE l.person_id = $1 AND r.status = 'active'""",
            person_id,
        )

    # --- no-match assertions ----------------------------------------------------------------

    async def add_no_match(self, a: int, b: int, *, actor: str, reason: str | None) -> bool:
        """Assert that records a and b are different people; False when that was asserted
        already."""
        low, high = sorted((a, b))
        result = await self.conn.execute(
            """INSERT INTO no_match (record_a, record_b, actor, reason) VALUES ($1, $2, $3, $4)
               ON CONFLICT DO NOTHING""",
            low,
            high,
            actor,
            reason,
        )
        return result.endswith(" 1")

    async def delete_no_match(self, a: int, b: int) -> None:
        low, high = sorted((a, b))
        await self.conn.execute(
            "DELETE FROM no_match WHERE record_a = $1 AND record_b = $2", low, high
        )

    async def no_match_partners(self, record_id: int) -> set[int]:
        rows = await self.conn.fetch(
            """SELECT record_b AS other FROM no_match WHERE record_a = $1
               UNION SELECT record_a FROM no_match WHERE record_b = $1""",
            record_id,
        )
        return {r["other"] for r in rows}

    # --- review queue -----------------------------------------------------------------------

    async def insert_review_item(self, record_id: int, review: ReviewWrite) -> ReviewItem | None:
        """Open a review item for the record; None when the same one is open already."""
        row = await self.conn.fetchrow(
            """INSERT INTO review_item (record_id, other_record_id, person_id, score, reason,
                   explanation)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (record_id, coalesce(other_record_id, 0), coalesce(person_id, 0))
                 WHERE status = 'open' DO NOTHING
               RETURNING *""",
            record_id,
            review.other_record_id,
            review.person_id,
            review.score,
            review.reason,
            review.explanation,
        )
        return None if row is None else review_from_row(row)

    async def review_item(self, item_id: int, *, for_update: bool = False) -> ReviewItem | None:
        lock = " FOR NO KEY UPDATE" if for_update else ""
        row = await self.conn.fetchrow(f"SELECT * FROM review_item WHERE id = $1{lock}", item_id)
        return None if row is None else review_from_row(row)

    async def review_items(
        self, status: str | None, limit: int, offset: int
    ) -> list[ReviewItem]:
        """Review items (of one status; None: all), by id."""
        rows = await self.conn.fetch(
            """SELECT * FROM review_item WHERE ($1::text IS NULL OR status = $1)
               ORDER BY id LIMIT $2 OFFSET $3""",
            status,
            limit,
            offset,
        )
        return [review_from_row(r) for r in rows]

    async def set_review_status(
        self, item_id: int, status: ReviewStatus, actor: str | None
    ) -> None:
        resolved = status != ReviewStatus.OPEN
        await self.conn.execute(
            """UPDATE review_item SET status = $2, version = version + 1,
                   resolved_at = CASE WHEN $3 THEN now() END,
                   resolved_by = CASE WHEN $3 THEN $4 END
               WHERE id = $1""",
            item_id,
            status.value,
            resolved,
            actor,
        )

    async def open_review_ids_for_record(self, record_id: int) -> list[int]:
        rows = await self.conn.fetch(
            """SELECT id FROM review_item WHERE status = 'open'
               AND (record_id = $1 OR other_record_id = $1) ORDER BY id""",
            record_id,
        )
        return [r["id"] for r in rows]

    # --- history and outbox -----------------------------------------------------------------

    async def history(
        self,
        *,
        person_id: int | None = None,
        record_id: int | None = None,
        command_id: str | None = None,
        limit: int = 1000,
    ) -> list[HistoryEvent]:
        rows = await self.conn.fetch(
            """SELECT * FROM history
               WHERE ($1::bigint IS NULL OR person_id = $1)
                 AND ($2::bigint IS NULL OR record_id = $2)
                 AND ($3::uuid IS NULL OR command_id = $3)
               ORDER BY id LIMIT $4""",
            person_id,
            record_id,
            uuid.UUID(command_id) if command_id else None,
            limit,
        )
        return [history_from_row(r) for r in rows]

    async def later_history_exists(self, entity: str, entity_id: int, after_id: int) -> bool:
        return await self.conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM history
                              WHERE entity = $1 AND entity_id = $2 AND id > $3)""",
            entity,
            entity_id,
            after_id,
        )

    async def history_archived(self, command_id: str) -> bool:
        """Whether rows of the command were moved to history_archive (retention)."""
        return await self.conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM history_archive WHERE command_id = $1::uuid)",
            command_id,
        )

    async def name_frequencies(self, min_persons: int) -> dict[str, object]:
        """How often each normalised family and given name occurs among active records, and
        the full names of at least ``min_persons`` persons ("named": [(given, family, n)],
        "persons": N, the persons with both names, a person told apart by name and birth
        date)."""
        family = await self.conn.fetch(
            """SELECT family_norm AS v, count(*) AS n FROM source_record
               WHERE status = 'active' AND family_norm IS NOT NULL GROUP BY family_norm"""
        )
        given = await self.conn.fetch(
            """SELECT given_norm AS v, count(*) AS n FROM source_record
               WHERE status = 'active' AND given_norm IS NOT NULL GROUP BY given_norm"""
        )
        total = await self.conn.fetchval(
            "SELECT count(*) FROM source_record WHERE status = 'active'"
        )
        # Persons per full name, a person told apart by name and birth date (the records of
        # one person mostly share both; the index's own persons would count a duplicate not
        # yet linked as a namesake); a record without a birth date is another person only
        # when no record of the name has one; only names of several persons can matter.
        full = await self.conn.fetch(
            """WITH named AS (
                   SELECT given_norm, family_norm,
                          greatest(count(DISTINCT nullif(birth_date, '')), 1) AS n
                   FROM source_record
                   WHERE status = 'active' AND given_norm IS NOT NULL
                     AND family_norm IS NOT NULL
                   GROUP BY given_norm, family_norm)
               SELECT given_norm, family_norm, n, persons
               FROM (SELECT named.*, sum(n) OVER () AS persons FROM named) counted
               WHERE n >= $1""",
            min_persons,
        )
        return {
            "family": {r["v"]: r["n"] for r in family},
            "given": {r["v"]: r["n"] for r in given},
            "total": total,
            "named": [(r["given_norm"], r["family_norm"], r["n"]) for r in full],
            "persons": int(full[0]["persons"]) if full else 0,
        }

    async def has_records(self) -> bool:
        return await self.conn.fetchval("SELECT EXISTS (SELECT 1 FROM source_record)")

    async def steward_labels(self) -> list[tuple[int, int, bool]]:
        """Pairs a steward decided: (record, record, same person?)."""
        rows = await self.conn.fetch(
            """SELECT record_id AS a, other_record_id AS b, status = 'linked' AS same
               FROM review_item
               WHERE status IN ('linked', 'rejected') AND other_record_id IS NOT NULL
               UNION
               SELECT record_a, record_b, false FROM no_match"""
        )
        return [(r["a"], r["b"], r["same"]) for r in rows]

