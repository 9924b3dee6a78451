"""Registration in few round trips: the SQL functions register_begin, register_insert,
register_update, register_candidates and append_events (identity/store/sql/), the locks they
take, and the message's idempotency (message_begin, processed_message).
docs/design/registration.md explains the design."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import asyncpg

from identity.model import LinkKind
from identity.store.audit import INSERT_STATEMENT as _AUDIT_INSERT
from identity.store.keys import key_hash
from identity.store.rows import (
    began_from_row,
    candidates_from_row,
    inserted_from_row,
    updated_from_row,
)
from identity.store.state import (
    BeganRegistration,
    Candidates,
    RecordInserted,
    RecordUpdated,
    ResolvedIdentifier,
)


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


@dataclass(frozen=True, kw_only=True, slots=True)
class RecordWrite:
    """What the registration functions write for one source record: the demographics as
    received (JSON), their normalised form and search columns (matching's ``Prepared``), the
    source, the other identifiers and the blocking keys."""

    demographics: dict[str, Any]
    normalized: dict[str, Any]
    search: dict[str, Any]
    source: str | None
    others: Sequence[ResolvedIdentifier]
    keys: Sequence[str]

    def params(self) -> tuple[Any, ...]:
        """The nine parameters both register_insert and register_update take in this order."""
        texts, phones = _search_params(self.search)
        return (
            self.demographics,
            self.normalized,
            texts,
            phones,
            self.source,
            [d for d, _, _ in self.others],
            [v for _, v, _ in self.others],
            [t for _, _, t in self.others],
            list(self.keys),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class LinkWrite:
    """A record's link to its person as written."""

    kind: LinkKind
    score: float | None
    explanation: dict[str, Any] | None
    actor: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ReviewWrite:
    """A review item to open: the record it pairs with (or None), the candidate person, the
    match probability, why, and the explanation."""

    other_record_id: int | None
    person_id: int | None
    score: float | None
    reason: str
    explanation: dict[str, Any]


class RegistrationQueries:
    """The registration path's calls, on the connection (and so the transaction) given."""

    conn: asyncpg.Connection

    # --- locks ------------------------------------------------------------------------------

    async def lock(self, keys: Iterable[str]) -> None:
        hashes = sorted({key_hash(k) for k in keys})
        if hashes:
            await self.conn.execute("SELECT lock_keys($1::bigint[])", hashes)

    # --- registration in few round trips (migration 0002) -----------------------------------

    async def register_begin(
        self,
        *,
        record_key: str,
        domain_id: int,
        identifier: str,
        keys: Sequence[str],
        selection: CandidateSelection,
        presized: bool = False,
    ) -> BeganRegistration:
        """Lock the record key and read the record (row-locked) with its blocking keys
        (``old_keys``) and no-match partners. When the record is not known (``record`` None),
        its ``keys`` are locked too (one sorted call) and its candidates read under them
        (``candidates``: see the SQL function ``register_candidates``; their ``oversized``: the
        keys whose blocks were too large to read). ``presized``: the caller left out the keys
        it knows to be oversized, and all of ``keys`` are locked and read at once; otherwise
        only those that can give candidates are, after a pass that sizes their blocks."""
        row = await self.conn.fetchrow(
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
        return began_from_row(row)

    async def register_insert(
        self,
        *,
        domain_id: int,
        identifier: str,
        record: RecordWrite,
        person_id: int | None,
        link: LinkWrite,
        reviews: Sequence[ReviewWrite],
    ) -> RecordInserted:
        """Write a new record with its identifiers, keys, person (``person_id`` None: a new
        one; else that person is touched), link and review items in one call."""
        row = await self.conn.fetchrow(
            """SELECT * FROM register_insert($1, $2, $3, $4, $5::text[], $6::text[], $7,
                   $8::integer[], $9::text[], $10::text[], $11::text[], $12, $13, $14, $15,
                   $16, $17::bigint[], $18::bigint[], $19::float8[], $20::text[], $21::jsonb)""",
            domain_id,
            identifier,
            *record.params(),
            person_id,
            link.kind.value,
            link.score,
            link.explanation,
            link.actor,
            [r.other_record_id for r in reviews],
            [r.person_id for r in reviews],
            [r.score for r in reviews],
            [r.reason for r in reviews],
            [r.explanation for r in reviews],
        )
        return inserted_from_row(row)

    async def register_update(
        self,
        *,
        record_id: int,
        lock_keys: Iterable[str],
        record: RecordWrite,
        touch_person: int | None,
        own_person: int | None,
        selection: CandidateSelection,
        history: Sequence[tuple[Any, ...]] = (),
        outbox: Sequence[tuple[str, dict[str, Any], Any]] = (),
    ) -> RecordUpdated:
        """Lock ``lock_keys`` (one sorted call), write the record, its identifiers and keys,
        the ``history`` and ``outbox`` rows, touch ``touch_person``; return the active records
        of ``own_person`` but this one (``own_parties``) and, when there are none, the
        record's candidates."""
        row = await self.conn.fetchrow(
            """SELECT * FROM register_update($1::bigint[], $2, $3, $4, $5::text[], $6::text[],
                   $7, $8::integer[], $9::text[], $10::text[], $11::text[], $12, $13, $14, $15,
                   $16, $17, $18, $19, $20::uuid[], $21::text[], $22::text[], $23::bigint[],
                   $24::bigint[], $25::bigint[], $26::jsonb[], $27::jsonb[], $28::text[],
                   $29::text[], $30::text[], $31::jsonb[], $32::uuid[])""",
            sorted({key_hash(k) for k in lock_keys}),
            record_id,
            *record.params(),
            touch_person,
            own_person,
            *selection.params(),
            *_event_params(history, outbox),
        )
        return updated_from_row(row)

    async def append_events(
        self,
        history: Sequence[tuple[Any, ...]],
        outbox: Sequence[tuple[str, dict[str, Any], Any]],
        reply: tuple[str, str, str, str | None] | None = None,
        *,
        audit: Sequence[dict[str, Any]] = (),
        audit_topic: str | None = None,
    ) -> None:
        """History rows, outbox rows and the stored reply (sender, control id, text, the
        message's digest) of a command, in one call; with ``audit`` (rows of
        identity.store.audit.audit_rows) the audit records too, in the same statement: written
        after the rest, as AuditStore.insert_rows would write them in a statement of its own
        (``audit_topic`` as its ``topic``), one round trip fewer."""
        sender, control_id, text, digest = reply if reply is not None else (None,) * 4
        params = [*_event_params(history, outbox), sender, control_id, text, digest]
        if audit:
            await self.conn.execute(_APPEND_AUDITED, *params, audit, audit_topic)
        else:
            await self.conn.execute(_APPEND, *params)


    async def candidates(
        self,
        keys: Sequence[str],
        exclude: int | None,
        selection: CandidateSelection,
    ) -> Candidates:
        """The candidates the SQL function register_candidates selects for these keys,
        ``exclude`` left out; no locks are taken."""
        row = await self.conn.fetchrow(
            "SELECT * FROM register_candidates($1::text[], $2, $3, $4, $5, $6, $7, $8)",
            list(keys),
            exclude,
            *selection.params(),
        )
        return candidates_from_row(row)


    # --- processed messages -----------------------------------------------------------------

    async def begin_message(
        self, sender: str, control_id: str
    ) -> tuple[str | None, str | None]:
        """Take the message's own transaction lock, then read the reply stored for it and the
        digest of the message it answered, if any (one call, migrations 0007 and 0012): the
        same message delivered twice at once is applied once."""
        row = await self.conn.fetchrow(
            "SELECT * FROM message_begin($1, $2, $3)",
            key_hash(f"message:{sender}|{control_id}"),
            sender,
            control_id,
        )
        return (row["reply"], row["digest"]) if row is not None else (None, None)

    async def save_processed_reply(
        self, sender: str, control_id: str, reply: str, digest: str | None
    ) -> tuple[str, str | None]:
        """Store the reply to a message (and the message's digest) unless one is stored
        already; returns the stored reply and digest (a message refused before and now re-sent
        gets the reply it got then)."""
        row = await self.conn.fetchrow(
            """INSERT INTO processed_message (sender, control_id, reply, digest)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (sender, control_id) DO UPDATE SET reply = processed_message.reply
               RETURNING reply, digest""",
            sender,
            control_id,
            reply,
            digest,
        )
        return row["reply"], row["digest"]



_APPEND = """SELECT append_events($1::uuid[], $2::text[], $3::text[], $4::bigint[],
    $5::bigint[], $6::bigint[], $7::jsonb[], $8::jsonb[], $9::text[], $10::text[],
    $11::text[], $12::jsonb[], $13::uuid[], $14, $15, $16, $17)"""


def _audited(append: str) -> str:
    """``append`` with the audit store's insert (identity.store.audit's statement, its
    parameters renumbered $18 and $19) as data-modifying CTEs. PostgreSQL runs a CTE that the
    query does not read after the query itself: the audit rows are written after what
    append_events writes, as when they were a statement of their own."""
    ctes, found, _ = _AUDIT_INSERT.rpartition("SELECT id FROM inserted ORDER BY id")
    renumbered = ctes.replace("$1::jsonb", "$18::jsonb").replace("$2::text", "$19::text")
    if not found or re.search(r"\$[12]\b", renumbered) or "$19::text" not in renumbered:
        raise RuntimeError("identity.store.audit's insert changed shape")
    return renumbered + append


_APPEND_AUDITED = _audited(_APPEND)


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


