"""Audit records in PostgreSQL (table ``audit_event``, migration 0013): written with the change
they record, searched for ``GET /fhir/AuditEvent``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from identity.audit.record import TRANSACTIONS, AuditRecord

#: The audit records of one call and their outbox row (identity.store.registration also writes
#: them inside a command's events statement, as data-modifying CTEs).
INSERT_STATEMENT = """
WITH input AS (
    SELECT e, n FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS t(e, n)
), inserted AS (
    INSERT INTO audit_event (recorded, transaction, event_id, interaction, subtypes, action,
                             outcome, agent, requestor, patients, record)
    SELECT (e->'r'->>'recorded')::timestamptz, e->'r'->>'transaction',
           e->'r'->'event_id'->>'code', e->'r'->>'interaction',
           ARRAY(SELECT jsonb_array_elements_text(e->'s')), e->'r'->>'action',
           (e->'r'->>'outcome')::smallint, e->>'a', e->>'q',
           ARRAY(SELECT jsonb_array_elements_text(e->'r'->'patients')), e->'r'
    FROM input ORDER BY n
    RETURNING id
), shipped AS (
    INSERT INTO outbox (topic, payload)
    SELECT $2::text, jsonb_build_object('records', jsonb_agg(e->'r' ORDER BY n))
    FROM input WHERE $2::text IS NOT NULL
    HAVING count(*) > 0
)
SELECT id FROM inserted ORDER BY id
"""


@dataclass(frozen=True, slots=True)
class StoredAudit:
    """A record with its id in ``audit_event`` (the AuditEvent's id)."""

    id: int
    record: AuditRecord


def _subtypes(record: AuditRecord) -> list[str]:
    codes = [record.interaction] if record.interaction else []
    codes.extend(c.code for c in record.event_types)
    return codes


def audit_rows(records: Sequence[AuditRecord]) -> list[dict[str, Any]]:
    """The records as the rows ``AuditStore.insert_rows`` writes: each record's JSON with the
    columns searched on (agent, requestor, subtypes)."""
    return [{"r": r.to_json(), "a": r.agent, "q": r.requestor, "s": _subtypes(r)}
            for r in records]  # fmt: skip


class AuditStore:
    """Writing and searching audit records on one connection (the transaction's, to write a
    record with the change it records)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def insert(
        self, records: Sequence[AuditRecord], *, topic: str | None = None
    ) -> list[int]:
        """Store ``records`` in one round trip; with ``topic`` (identity.audit.record.
        AUDIT_TOPIC, when ``[audit.syslog]`` is configured) also one outbox row holding them
        all, for identity.audit.deliver to send. Returns their ids, in order."""
        return await self.insert_rows(audit_rows(records), topic=topic)

    async def insert_rows(
        self, rows: Sequence[dict[str, Any]], *, topic: str | None = None
    ) -> list[int]:
        """``insert`` of records already made into rows (:func:`audit_rows`), so that a
        writer can make a large batch's rows a part at a time."""
        if not rows:
            return []
        found = await self.conn.fetch(INSERT_STATEMENT, rows, topic)
        return [row["id"] for row in found]

    async def get(self, record_id: int) -> StoredAudit | None:
        row = await self.conn.fetchrow(
            "SELECT id, record FROM audit_event WHERE id = $1", record_id
        )
        return None if row is None else StoredAudit(row["id"], AuditRecord.from_json(row["record"]))

    async def search(
        self,
        *,
        patient: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        types: Sequence[str] | None = None,
        subtypes: Sequence[str] | None = None,
        outcomes: Sequence[int] | None = None,
        agent: str | Sequence[str] | None = None,
        limit: int = 20,
        after_id: int | None = None,
    ) -> list[StoredAudit]:
        """Records newest first (id descending), at most ``limit``.

        - ``patient``: one CX identifier (identity.audit.record.cx) the record names;
        - ``since`` (inclusive) and ``until`` (exclusive): the event's time;
        - ``types``: AuditEvent.type codes, any of (``rest`` for a FHIR-door transaction,
          else the DICOM EventID: ``110110``, ``110112``, ...);
        - ``subtypes``: AuditEvent.subtype codes, any of (``ITI-9``, ``search``,
          ``steward-link``, ``110122``, ...);
        - ``outcomes``: any of 0, 4, 8, 12;
        - ``agent``: the user id (or any of the user ids) of the system that acted
          (``APP|FACILITY``, a client id) or of the person who asked (a steward);
        - ``after_id``: the next page: records older than this id (the last one of the page
          before).
        """
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if patient is not None:
            where.append(f"patients @> ARRAY[{param(patient)}::text]")
        if since is not None:
            where.append(f"recorded >= {param(since)}")
        if until is not None:
            where.append(f"recorded < {param(until)}")
        if types is not None:
            codes = list(types)
            alternatives = []
            if "rest" in codes:
                alternatives.append("interaction IS NOT NULL")
            if dicom := [c for c in codes if c != "rest"]:
                alternatives.append(f"(interaction IS NULL AND event_id = ANY({param(dicom)}))")
            where.append("(" + (" OR ".join(alternatives) or "false") + ")")
        if subtypes is not None:
            wanted = list(subtypes)
            alternatives = []
            if named := [c for c in wanted if c in TRANSACTIONS]:
                alternatives.append(f"transaction = ANY({param(named)}::text[])")
            if others := [c for c in wanted if c not in TRANSACTIONS]:
                alternatives.append(f"subtypes && {param(others)}::text[]")
            where.append("(" + (" OR ".join(alternatives) or "false") + ")")
        if outcomes is not None:
            codes_out = [int(o) for o in outcomes]
            if codes_out and all(o != 0 for o in codes_out):
                where.append("outcome <> 0")  # lets the planner use audit_event_failures
            where.append(f"outcome = ANY({param(codes_out)}::smallint[])")
        if after_id is not None:
            where.append(f"id < {param(after_id)}")
        limit_param = param(max(0, limit))

        def select(extra: list[str]) -> str:
            conditions = where + extra
            sql = "SELECT id, record FROM audit_event"
            if conditions:
                sql += " WHERE " + " AND ".join(conditions)
            return sql + f" ORDER BY id DESC LIMIT {limit_param}"

        if agent is None:
            sql = select([])
        else:
            # One index scan per user id and column (audit_event_agent, audit_event_requestor),
            # each newest first and limited, merged: fast for a rare agent and for one that
            # made most of the records.
            names = [agent] if isinstance(agent, str) else list(dict.fromkeys(agent))
            scans = []
            for name in names:
                who = param(name)
                scans.append(select([f"agent = {who}"]))
                scans.append(select([f"requestor = {who}"]))
            union = " UNION ALL ".join(f"({scan})" for scan in scans)
            sql = (
                f"SELECT DISTINCT ON (id) id, record FROM ({union}) AS found"
                f" ORDER BY id DESC LIMIT {limit_param}"
            )
        rows = await self.conn.fetch(sql, *params)
        return [StoredAudit(r["id"], AuditRecord.from_json(r["record"])) for r in rows]


__all__ = ["AuditStore", "StoredAudit"]
