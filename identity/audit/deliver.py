"""Delivery of audit records to the Audit Record Repository (IHE ITI-20) through the outbox.

A command writes its audit records with the change it records (identity.store.audit.AuditStore.
insert with ``topic=AUDIT_TOPIC``): one outbox row whose payload holds the records' JSON. After
commit this worker, one across every process (it owns the topic by a session advisory lock on
a connection of its own, as the ITI-10 notifier does), takes the rows in id order, renders each
record as the DICOM AuditMessage (identity.audit.dicom) and sends it over syslog
(identity.audit.syslog, ``[audit.syslog] url``), then marks the row delivered with a note.

ITI TF-2 3.20.4.1.1: a record that cannot be sent (collector down, TLS failure) is kept and sent
when the collector is back: the row is retried with exponential backoff (0.5 s doubling to
60 s) and the rows behind it wait, so records arrive in order. Delivery is at least once: a
failure in the middle of a row sends the whole row again. Two kinds of rows can never be sent
and are marked delivered with the reason in the note, and an ERROR line, rather than block
the ones behind them: a payload that is not audit records, and (UDP) a message larger than a
datagram, which is skipped alone (MessageTooLarge).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from identity.audit.dicom import to_xml
from identity.audit.record import AUDIT_TOPIC, records_of_payload
from identity.audit.syslog import MessageTooLarge, SyslogSender, sender_from_settings
from identity.config import Settings
from identity.mpi.outbox import TopicDeliveries, own_topic
from identity.store.db import Database

log = logging.getLogger("identity.audit.deliver")

IDLE_POLL = 0.2
MAX_BACKOFF = 60.0


def backoff(attempts: int) -> float:
    return min(MAX_BACKOFF, 0.5 * (2 ** min(attempts, 10)))


class AuditDelivery:
    """The worker of topic ``audit``: ``start()`` in the service's event loop, ``await
    stop()`` at shutdown (like identity.hl7v2.notifier.Notifier)."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        sender: SyslogSender | None = None,
        idle_poll: float = IDLE_POLL,
    ) -> None:
        if sender is None:
            if settings.audit.syslog is None:
                raise ValueError("[audit.syslog] is not configured")
            sender = sender_from_settings(settings.audit.syslog)
        self.db = db
        self.settings = settings
        self.sender = sender
        self.topic = AUDIT_TOPIC
        self.idle_poll = idle_poll
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.delivered = 0
        self.sent = 0

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="audit:syslog")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop after the row in progress (cancelled if it takes longer than ``grace``)."""
        self._stopping.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.sender.close()
        self._task = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                async with own_topic(self.db, self.topic) as outbox:
                    if outbox is None:  # another worker, in any process, delivers it
                        await self._sleep(1.0)
                        continue
                    await self._drain(outbox)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=audit_worker_error")
                await self._sleep(1.0)

    async def _drain(self, outbox: TopicDeliveries) -> None:
        while not self._stopping.is_set():
            entry = await outbox.head()
            if entry is None or not entry.due:
                await self._sleep(self.idle_poll)
                continue
            try:
                note = await self.deliver(entry.payload)
            except _Unreadable as exc:
                log.error("event=audit_unreadable row=%d error=%s", entry.id, exc)
                await outbox.delivered(entry, f"not sent, unreadable payload: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - any failure: retried later, in order
                wait = backoff(entry.attempts)
                log.warning("event=audit_send_failed row=%d attempts=%d retry_in=%.1f error=%s",
                            entry.id, entry.attempts + 1, wait, type(exc).__name__)
                await outbox.failed(entry, f"{type(exc).__name__}: {exc}", wait)
                continue
            await outbox.delivered(entry, note)
            self.delivered += 1
            log.debug("event=audit_delivered row=%d note=%s", entry.id, note)

    async def deliver(self, payload: Any) -> str:
        """Send the records of one outbox payload; return the note."""
        try:
            records = records_of_payload(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise _Unreadable(f"{type(exc).__name__}: {exc}") from exc
        sent = skipped = 0
        for record in records:
            xml = to_xml(record)
            try:
                await self.sender.send(xml, severity=record.syslog_severity)
            except MessageTooLarge as exc:
                skipped += 1
                log.error("event=audit_too_large transaction=%s octets=%d error=%s",
                          record.transaction, len(xml), exc)
                continue
            sent += 1
        self.sent += sent
        note = f"{sent} sent"
        if skipped:
            note += f", {skipped} skipped: larger than a UDP datagram"
        return note


class _Unreadable(ValueError):
    pass


def audit_delivery(db: Database, settings: Settings) -> AuditDelivery | None:
    """The worker to start when ``[audit.syslog]`` is configured; None otherwise."""
    if settings.audit.syslog is None:
        return None
    return AuditDelivery(db, settings)


__all__ = ["AuditDelivery", "audit_delivery", "backoff"]
