"""The unit of work of one MPI command: a transaction, its actor, its history and outbox rows."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from identity.audit.record import AuditRecord, Outcome
from identity.mpi.audit import AuditTrail
from identity.mpi.commands import Envelope
from identity.store.audit import audit_rows
from identity.store.repository import Repository

CHANGED_TOPIC = "identity.changed"
"""Outbox topic of every change to a person's set of identifiers: a record added, merged,
renamed, linked, unlinked or removed (payload: event, person_ids, record ids)."""

UPDATED_TOPIC = "record.updated"
"""Outbox topic of a demographics update that left the identifiers as they were."""


def notify_topic(consumer: str) -> str:
    """Outbox topic of one ITI-10 PIX Consumer (configured in [[notify]])."""
    return f"iti10:{consumer}"


def outbox_routes(
    notify: Sequence[str], *, write_unconsumed: bool = False
) -> dict[str, tuple[str, ...]]:
    """The topics each emitted topic is written as: ``identity.changed`` as one row per
    ITI-10 consumer (``notify``: their names), and itself and ``record.updated`` only with
    ``write_unconsumed`` (``[maintenance] write_unconsumed_topics``), since no worker of the
    service delivers them. A consumer configured later is delivered the changes made from
    then on, never rows from before it existed."""
    own = (CHANGED_TOPIC,) if write_unconsumed else ()
    return {
        CHANGED_TOPIC: own + tuple(notify_topic(name) for name in notify),
        UPDATED_TOPIC: (UPDATED_TOPIC,) if write_unconsumed else (),
    }


class UnitOfWork:
    """Collects history and outbox rows and writes them before the transaction commits.

    The ``envelope`` says who caused the change (its ``actor``, written on every history row)
    and which message or request did (``message_id``).
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        envelope: Envelope,
        fanout: dict[str, tuple[str, ...]] | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.conn = conn
        self.audit = audit
        self.repo = Repository(conn)
        self.fanout = fanout or {}
        self.envelope = envelope
        self.actor = envelope.actor
        self.message_id = envelope.message_id
        self.command_id = uuid.uuid4()
        self._history: list[tuple[Any, ...]] = []
        self._outbox: list[tuple[str, dict[str, Any], Any]] = []
        self._reply: tuple[str, str, str, str | None] | None = None
        self._audited = False
        self._audit: list[AuditRecord] = []
        self.result: Any = None
        """The command's result, once its handler returned (for ``Envelope.audit_result``)."""

    def record(
        self,
        event: str,
        entity: str,
        entity_id: int,
        *,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        person_id: int | None = None,
        record_id: int | None = None,
    ) -> None:
        """Append a history row (written at flush, inside the same transaction)."""
        self._history.append(
            (
                self.command_id,
                event,
                entity,
                entity_id,
                person_id,
                record_id,
                before,
                after,
                self.actor,
                self.message_id,
            )
        )

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        """Queue work that leaves the process after commit (notifications, audit).

        A topic routed in ``fanout`` is written as the topics it lists, one row each (one per
        consumer, so that each is delivered to in order and retried on its own; none when no
        one consumes it: :func:`outbox_routes`); a topic not routed is written as itself."""
        for written in self.fanout.get(topic, (topic,)):
            self._outbox.append((written, payload, self.command_id))

    def take_events(
        self,
    ) -> tuple[list[tuple[Any, ...]], list[tuple[str, dict[str, Any], Any]]]:
        """The history and outbox rows collected so far, for the caller to write in its own
        statement (same transaction); they are no longer written at flush."""
        history, outbox = self._history, self._outbox
        self._history, self._outbox = [], []
        return history, outbox

    def remember_reply(
        self, sender: str, control_id: str, reply: str, digest: str | None = None
    ) -> None:
        """Store the reply to (sender, message control id), and the message's digest, at
        flush, with the change."""
        self._reply = (sender, control_id, reply, digest)

    def audit_record(self, *records: AuditRecord) -> None:
        """Audit records the command itself makes (a steward's decision), written at flush
        with the envelope's."""
        self._audit.extend(records)

    async def flush(self) -> None:
        """Write the history rows, outbox rows and reply collected and the envelope's audit
        records, in one statement (the audit records in one of their own when there is
        nothing else to write)."""
        records = self._audit_records()
        if self._history or self._outbox or self._reply is not None:
            await self.repo.append_events(
                self._history, self._outbox, self._reply,
                audit=audit_rows(records) if records else (),
                audit_topic=self.audit.topic if self.audit is not None else None,
            )  # fmt: skip
            self._history.clear()
            self._outbox.clear()
            self._reply = None
        elif records:
            assert self.audit is not None
            await self.audit.write(self.conn, records)

    def _audit_records(self) -> list[AuditRecord]:
        """The envelope's audit records and the command's own, once (none after the first
        flush, or when the core is not audited)."""
        if self.audit is None or self._audited:
            return []
        self._audited = True
        records = list(self._audit)
        if self.envelope.audit_result is not None:
            records[:0] = self.envelope.audit_result(self.result)
        elif self.envelope.audit is not None:
            records[:0] = self.envelope.audit(Outcome.SUCCESS, None)
        return records
