"""SQL for the MPI core, one method per question or change. No decisions are made here.

Every method runs on the connection (and so the transaction) it was given.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

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

_RECORD_COLUMNS = """
    r.id, r.domain_id, r.identifier, r.status, r.merged_into, r.demographics, r.normalized,
    r.version, r.created_at, r.updated_at,
    l.person_id, l.kind AS link_kind, l.score AS link_score, l.actor AS link_actor,
    l.created_at AS link_created_at, p.enterprise_id,
    coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier, coalesce(ri.type_code, '')]
                                ORDER BY ri.domain_id, ri.identifier)
              FROM record_identifier ri WHERE ri.source_record_id = r.id), '{}') AS others
"""
_RECORD_FROM = """
    FROM source_record r
    LEFT JOIN link l ON l.source_record_id = r.id
    LEFT JOIN person p ON p.id = l.person_id
"""


def key_hash(key: str) -> int:
    """A stable signed 64-bit hash of a lock key (same in every process)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big", signed=True)


class CandidateSelection(NamedTuple):
    """How the SQL function register_candidates selects candidates (matching.blocking's
    select_candidates, whose parameters these are)."""

    max_block: int
    max_candidates: int
    margin: int | None
    min_keys: int | None
    rare_block: int | None

    def params(self) -> tuple[int, int, int, int | None, int | None, int | None]:
        """p_per_key, p_max_block, p_max_candidates, p_margin, p_min_keys, p_rare_block: a
        block is read up to one id beyond max_block, enough to tell that it is oversized."""
        return (self.max_block + 1, self.max_block, self.max_candidates, self.margin,
                self.min_keys, self.rare_block)


class Repository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # --- locks ------------------------------------------------------------------------------

    async def lock(self, keys: Iterable[str]) -> None:
        hashes = sorted({key_hash(k) for k in keys})
        if hashes:
            await self.conn.execute("SELECT lock_keys($1::bigint[])", hashes)

    # --- registration in few round trips (migration 0002) -----------------------------------

    async def register_begin(
        self,
        record_key: str,
        domain_id: int,
        identifier: str,
        keys: Sequence[str],
        selection: CandidateSelection,
        *,
        presized: bool = False,
    ) -> asyncpg.Record:
        """Lock the record key and read the record (row-locked) with its blocking keys
        (``old_keys``) and no-match partners. When the record is not known, its ``keys`` are
        locked too (one sorted call) and its candidates read under them (``candidates_found``,
        ``prefetched``, ``parties``: see the SQL function ``register_candidates``; ``oversized``:
        the keys whose blocks were too large to read); ``id`` is then NULL. ``presized``: the
        caller left out the keys it knows to be oversized, and all of ``keys`` are locked and
        read at once; otherwise only those that can give candidates are, after a pass that
        sizes their blocks (migrations 0005, 0010)."""
        return await self.conn.fetchrow(
            "SELECT * FROM register_begin($1, $2, $3, $4::bigint[], $5::text[], $6, $7, $8, $9,"
            " $10, $11, $12)",
            key_hash(record_key),
            domain_id,
            identifier,
            [key_hash(k) for k in keys],  # aligned with the keys
            list(keys),
            *selection.params(),
            presized,
        )

    async def register_insert(
        self,
        domain_id: int,
        identifier: str,
        demographics: dict[str, Any],
        normalized: dict[str, Any],
        search: dict[str, Any],
        source: str | None,
        others: Sequence[tuple[int, str, str | None]],
        keys: Sequence[str],
        person_id: int | None,
        link: tuple[LinkKind, float | None, dict[str, Any] | None, str],
        reviews: Sequence[tuple[int | None, int | None, float | None, str, dict[str, Any]]],
    ) -> asyncpg.Record:
        """Write a new record with its identifiers, keys, person (``person_id`` None: a new
        one; else that person is touched), link and review items (other record, person,
        score, reason, explanation) in one call."""
        texts, phones = _search_params(search)
        kind, score, explanation, actor = link
        return await self.conn.fetchrow(
            """SELECT * FROM register_insert($1, $2, $3, $4, $5::text[], $6::text[], $7,
                   $8::integer[], $9::text[], $10::text[], $11::text[], $12, $13, $14, $15,
                   $16, $17::bigint[], $18::bigint[], $19::float8[], $20::text[], $21::jsonb)""",
            domain_id,
            identifier,
            demographics,
            normalized,
            texts,
            phones,
            source,
            [d for d, _, _ in others],
            [v for _, v, _ in others],
            [t for _, _, t in others],
            list(keys),
            person_id,
            kind.value,
            score,
            explanation,
            actor,
            [r[0] for r in reviews],
            [r[1] for r in reviews],
            [r[2] for r in reviews],
            [r[3] for r in reviews],
            [r[4] for r in reviews],
        )

    async def register_update(
        self,
        record_id: int,
        lock_keys: Iterable[str],
        demographics: dict[str, Any],
        normalized: dict[str, Any],
        search: dict[str, Any],
        source: str | None,
        others: Sequence[tuple[int, str, str | None]],
        keys: Sequence[str],
        *,
        touch_person: int | None,
        own_person: int | None,
        selection: CandidateSelection,
        history: Sequence[tuple[Any, ...]] = (),
        outbox: Sequence[tuple[str, dict[str, Any], Any]] = (),
    ) -> asyncpg.Record:
        """Lock ``lock_keys`` (one sorted call), write the record, its identifiers and keys,
        the ``history`` and ``outbox`` rows, touch ``touch_person``; return the active records
        of ``own_person`` but this one (``own_parties``) and, when there are none, the
        record's candidates."""
        texts, phones = _search_params(search)
        return await self.conn.fetchrow(
            """SELECT * FROM register_update($1::bigint[], $2, $3, $4, $5::text[], $6::text[],
                   $7, $8::integer[], $9::text[], $10::text[], $11::text[], $12, $13, $14, $15,
                   $16, $17, $18, $19, $20::uuid[], $21::text[], $22::text[], $23::bigint[],
                   $24::bigint[], $25::bigint[], $26::jsonb[], $27::jsonb[], $28::text[],
                   $29::text[], $30::text[], $31::jsonb[], $32::uuid[])""",
            sorted({key_hash(k) for k in lock_keys}),
            record_id,
            demographics,
            normalized,
            texts,
            phones,
            source,
            [d for d, _, _ in others],
            [v for _, v, _ in others],
            [t for _, _, t in others],
            list(keys),
            touch_person,
            own_person,
            *selection.params(),
            *_event_params(history, outbox),
        )

    async def append_events(
        self,
        history: Sequence[tuple[Any, ...]],
        outbox: Sequence[tuple[str, dict[str, Any], Any]],
        reply: tuple[str, str, str] | None = None,
    ) -> None:
        """History rows, outbox rows and the stored reply (sender, control id, text) of a
        command, in one call."""
        sender, control_id, text = reply if reply is not None else (None, None, None)
        await self.conn.execute(
            """SELECT append_events($1::uuid[], $2::text[], $3::text[], $4::bigint[],
                   $5::bigint[], $6::bigint[], $7::jsonb[], $8::jsonb[], $9::text[], $10::text[],
                   $11::text[], $12::jsonb[], $13::uuid[], $14, $15, $16)""",
            *_event_params(history, outbox),
            sender,
            control_id,
            text,
        )

    # --- domains ----------------------------------------------------------------------------

    async def domains(self) -> list[Domain]:
        rows = await self.conn.fetch("SELECT * FROM domain ORDER BY id")
        return [_domain(r) for r in rows]

    async def upsert_domain(
        self,
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
        return _domain(row)

    async def insert_domain_if_absent(self, namespace: str, oid: str | None) -> None:
        await self.conn.execute(
            "INSERT INTO domain (namespace, oid) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            namespace,
            oid,
        )

    # --- source records ---------------------------------------------------------------------

    async def record_row(
        self, record_id: int, *, for_update: bool = False
    ) -> asyncpg.Record | None:
        lock = " FOR NO KEY UPDATE OF r" if for_update else ""
        return await self.conn.fetchrow(
            f"SELECT {_RECORD_COLUMNS} {_RECORD_FROM} WHERE r.id = $1{lock}", record_id
        )

    async def record_row_by_identifier(
        self, domain_id: int, identifier: str, *, for_update: bool = False
    ) -> asyncpg.Record | None:
        lock = " FOR NO KEY UPDATE OF r" if for_update else ""
        return await self.conn.fetchrow(
            f"SELECT {_RECORD_COLUMNS} {_RECORD_FROM}"
            f" WHERE r.domain_id = $1 AND r.identifier = $2{lock}",
            domain_id,
            identifier,
        )

    async def record_rows(self, record_ids: Sequence[int]) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            f"SELECT {_RECORD_COLUMNS} {_RECORD_FROM} WHERE r.id = ANY($1::bigint[]) ORDER BY r.id",
            list(record_ids),
        )

    async def person_record_rows(
        self, person_ids: Sequence[int], *, active_only: bool = True
    ) -> list[asyncpg.Record]:
        status = " AND r.status = 'active'" if active_only else ""
        return await self.conn.fetch(
            f"SELECT {_RECORD_COLUMNS} {_RECORD_FROM}"
            f" WHERE l.person_id = ANY($1::bigint[]){status} ORDER BY r.id",
            list(person_ids),
        )

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

    async def candidates(
        self,
        keys: Sequence[str],
        exclude: int | None,
        selection: CandidateSelection,
    ) -> asyncpg.Record:
        """``candidates_found``, ``prefetched`` and ``parties`` of the SQL function
        register_candidates (migration 0006) for these keys, ``exclude`` left out; no locks
        are taken."""
        return await self.conn.fetchrow(
            "SELECT * FROM register_candidates($1::text[], $2, $3, $4, $5, $6, $7, $8)",
            list(keys),
            exclude,
            *selection.params(),
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

    async def insert_person(self) -> asyncpg.Record:
        return await self.conn.fetchrow(
            """INSERT INTO person (enterprise_id)
               VALUES (lpad(nextval('enterprise_id_seq')::text, 10, '0')) RETURNING *"""
        )

    async def cross_reference_rows(
        self, domain_id: int | None, identifier: str
    ) -> list[asyncpg.Record]:
        """For a PIX query, in one round trip: the active records (``id``, ``domain_id``,
        ``identifier``, ``others``; by id) of the person named by an active record's own
        identifier in ``domain_id`` (``hit_id``: that record) or, with ``domain_id`` None, by
        the enterprise id ``identifier`` (``hit_id`` NULL); each row with ``person_id``,
        ``enterprise_id`` and ``person_status``. Empty when there is no such record, or the
        person has no active records. No demographics are read."""
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
        return await self.conn.fetch(
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

    async def person_row(
        self, person_id: int, *, for_update: bool = False
    ) -> asyncpg.Record | None:
        lock = " FOR NO KEY UPDATE" if for_update else ""
        return await self.conn.fetchrow(f"SELECT * FROM person WHERE id = $1{lock}", person_id)

    async def person_row_by_enterprise_id(self, enterprise_id: str) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            "SELECT * FROM person WHERE enterprise_id = $1", enterprise_id
        )

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

    async def link_row(self, record_id: int) -> asyncpg.Record | None:
        return await self.conn.fetchrow("SELECT * FROM link WHERE source_record_id = $1", record_id)

    async def set_link(
        self,
        record_id: int,
        person_id: int,
        kind: LinkKind,
        score: float | None,
        explanation: dict[str, Any] | None,
        actor: str,
    ) -> None:
        await self.conn.execute(
            """INSERT INTO link (source_record_id, person_id, kind, score, explanation, actor)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (source_record_id) DO UPDATE
                 SET person_id = EXCLUDED.person_id, kind = EXCLUDED.kind, score = EXCLUDED.score,
                     explanation = EXCLUDED.explanation, actor = EXCLUDED.actor,
                     created_at = now()""",
            record_id,
            person_id,
            kind.value,
            score,
            explanation,
            actor,
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

    async def add_no_match(self, a: int, b: int, actor: str, reason: str | None) -> bool:
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

    async def insert_review_item(
        self,
        record_id: int,
        other_record_id: int | None,
        person_id: int | None,
        score: float | None,
        reason: str,
        explanation: dict[str, Any] | None,
    ) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            """INSERT INTO review_item (record_id, other_record_id, person_id, score, reason,
                   explanation)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (record_id, coalesce(other_record_id, 0), coalesce(person_id, 0))
                 WHERE status = 'open' DO NOTHING
               RETURNING *""",
            record_id,
            other_record_id,
            person_id,
            score,
            reason,
            explanation,
        )

    async def review_row(self, item_id: int, *, for_update: bool = False) -> asyncpg.Record | None:
        lock = " FOR NO KEY UPDATE" if for_update else ""
        return await self.conn.fetchrow(f"SELECT * FROM review_item WHERE id = $1{lock}", item_id)

    async def review_rows(
        self, status: str | None, limit: int, offset: int
    ) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """SELECT * FROM review_item WHERE ($1::text IS NULL OR status = $1)
               ORDER BY id LIMIT $2 OFFSET $3""",
            status,
            limit,
            offset,
        )

    async def set_review_status(
        self, item_id: int, status: ReviewStatus, actor: str | None
    ) -> asyncpg.Record:
        resolved = status != ReviewStatus.OPEN
        return await self.conn.fetchrow(
            """UPDATE review_item SET status = $2,
                   resolved_at = CASE WHEN $3 THEN now() END,
                   resolved_by = CASE WHEN $3 THEN $4 END
               WHERE id = $1 RETURNING *""",
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
        return [_history(r) for r in rows]

    async def later_history_exists(self, entity: str, entity_id: int, after_id: int) -> bool:
        return await self.conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM history
                              WHERE entity = $1 AND entity_id = $2 AND id > $3)""",
            entity,
            entity_id,
            after_id,
        )

    async def name_frequencies(self) -> dict[str, object]:
        """How often each normalised family and given name occurs among active records."""
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
        return {
            "family": {r["v"]: r["n"] for r in family},
            "given": {r["v"]: r["n"] for r in given},
            "total": total,
        }

    async def has_records(self) -> bool:
        return await self.conn.fetchval("SELECT EXISTS (SELECT 1 FROM source_record)")

    async def training_records(self) -> list[asyncpg.Record]:
        """Every active record's id and normalised form (input of `identity train`)."""
        return await self.conn.fetch(
            "SELECT id, normalized FROM source_record WHERE status = 'active' ORDER BY id"
        )

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

    # --- processed messages -----------------------------------------------------------------

    async def begin_message(self, sender: str, control_id: str) -> str | None:
        """Take the message's own transaction lock, then read the reply stored for it, if any
        (one call, migration 0007): the same message delivered twice at once is applied once."""
        return await self.conn.fetchval(
            "SELECT message_begin($1, $2, $3)",
            key_hash(f"message:{sender}|{control_id}"),
            sender,
            control_id,
        )

    async def save_processed_reply(self, sender: str, control_id: str, reply: str) -> str:
        """Store the reply to a message unless one is stored already; returns the stored one
        (a message refused before and now re-sent gets the reply it got then)."""
        return await self.conn.fetchval(
            """INSERT INTO processed_message (sender, control_id, reply) VALUES ($1, $2, $3)
               ON CONFLICT (sender, control_id) DO UPDATE SET reply = processed_message.reply
               RETURNING reply""",
            sender,
            control_id,
            reply,
        )

    # --- search -----------------------------------------------------------------------------

    async def search(
        self, terms: SearchTerms, limit: int, offset: int
    ) -> tuple[int, list[asyncpg.Record]]:
        where, params = terms.where, terms.params
        clause = " AND ".join(where) if where else "TRUE"
        n = len(params)
        rows = await self.conn.fetch(
            f"""SELECT {_RECORD_COLUMNS}, count(*) OVER () AS total_count {_RECORD_FROM}
                WHERE {clause}
                ORDER BY r.family_norm, r.given_norm, r.id
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
        return total, rows

    async def search_persons(
        self, terms: SearchTerms, limit: int, offset: int
    ) -> tuple[int, list[asyncpg.Record], list[asyncpg.Record]]:
        """Persons with a record matching ``terms``: (number of persons, the person rows of
        the page with ``matched_record_id`` = the person's first matching record, the active
        record rows of those persons). Persons are ordered by their first matching record
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
        records = await self.person_record_rows([p["id"] for p in persons])
        return persons[0]["total_count"], persons, records


BULK_STATEMENT_TIMEOUT = 3600.0  # seconds, for one COPY or ANALYZE of an initial load


class BulkWriter:
    """COPY-based writing for the initial load (bulk import), inside the caller's transaction."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock_index(self) -> None:
        """Keep feeds out while the load runs (they wait; reads go on)."""
        await self.conn.execute("LOCK TABLE source_record, person, link IN EXCLUSIVE MODE")

    async def reserve(self, sequence: str, count: int) -> list[int]:
        """``count`` consecutive values of a sequence, reserved at once (gaps on rollback).
        Call under ``lock_index`` so that no other transaction draws from it meanwhile."""
        if count == 0:
            return []
        first = await self.conn.fetchval(
            "SELECT setval($1::regclass, nextval($1::regclass) + $2 - 1) - $2 + 1",
            sequence,
            count,
        )
        return list(range(first, first + count))

    async def copy(
        self, table: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
    ) -> int:
        # One COPY per table of the whole load: far beyond the per-statement command timeout.
        result = await self.conn.copy_records_to_table(
            table, records=rows, columns=list(columns), timeout=BULK_STATEMENT_TIMEOUT
        )
        return int(result.split()[-1])


def _like_prefix(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class SearchTerms:
    """Builds the WHERE clause of a demographic search from normalised values."""

    def __init__(self) -> None:
        self.where: list[str] = []
        self.params: list[Any] = []

    def _p(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def equals(self, column: str, value: Any) -> None:
        self.where.append(f"r.{column} = {self._p(value)}")

    def prefix(self, column: str, value: str) -> None:
        self.where.append(f"r.{column} LIKE {self._p(_like_prefix(value))}")

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


# --- row mapping -----------------------------------------------------------------------------


def _domain(row: asyncpg.Record) -> Domain:
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


def _event_params(
    history: Sequence[tuple[Any, ...]], outbox: Sequence[tuple[str, dict[str, Any], Any]]
) -> list[list[Any]]:
    """History rows (command id, event, entity, entity id, person id, record id, before, after,
    actor, message id) and outbox rows (topic, payload, command id) as the parallel arrays
    append_events takes."""
    columns: list[list[Any]] = [[] for _ in range(13)]
    for row in history:
        for column, value in zip(columns[:10], row, strict=True):
            column.append(value)
    for row in outbox:
        for column, value in zip(columns[10:], row, strict=True):
            column.append(value)
    return columns


def _search_params(search: dict[str, Any]) -> tuple[list[str | None], list[str]]:
    """The search columns as the registration functions take them: nine texts (family_norm,
    given_norm, family_phon, given_phon, birth_date, sex, postal_code, city_norm,
    mothers_maiden_norm) and the phone digits."""
    values = search_values(search)
    return [*values[:8], values[9]], values[8]


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


def _history(row: asyncpg.Record) -> HistoryEvent:
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


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


class OutboxStore:
    """Claiming and settling outbox rows. A worker handles one topic's rows in id order.

    Only one worker per topic at a time, across processes: ``try_own`` takes a session-level
    advisory lock on the topic, held by that worker's dedicated connection.
    """

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def try_own(self, topic: str) -> bool:
        return await self.conn.fetchval(
            "SELECT pg_try_advisory_lock($1)", key_hash("outbox:" + topic)
        )

    async def release(self, topic: str) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock($1)", key_hash("outbox:" + topic))

    async def head(self, topic: str) -> asyncpg.Record | None:
        """The oldest undelivered row of the topic, if it is due."""
        return await self.conn.fetchrow(
            """SELECT id, topic, payload, command_id, attempts, available_at <= now() AS due
               FROM outbox WHERE topic = $1 AND delivered_at IS NULL ORDER BY id LIMIT 1""",
            topic,
        )

    async def delivered(self, row_id: int, note: str | None = None) -> None:
        await self.conn.execute(
            "UPDATE outbox SET delivered_at = now(), last_error = $2 WHERE id = $1", row_id, note
        )

    async def failed(self, row_id: int, error: str, retry_in_seconds: float) -> None:
        await self.conn.execute(
            """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                   available_at = now() + make_interval(secs => $3) WHERE id = $1""",
            row_id,
            error,
            retry_in_seconds,
        )

    async def pending_count(self, topic: str) -> int:
        return await self.conn.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = $1 AND delivered_at IS NULL", topic
        )
