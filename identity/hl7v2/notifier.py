"""ITI-10 PIX Update Notification: one worker per configured PIX Consumer.

The core writes an outbox row on topic ``notify_topic(consumer)`` in the transaction of every
change to a person's identifiers. The worker owns the topic (a session advisory lock on its own
connection, so one process per consumer), takes the oldest undelivered row, sends one
``ADT^A31^ADT_A05`` per person of the payload (PID-3 = that person's identifiers in the
consumer's domains, fully qualified; PID-5 a single space; PV1-2 = N) and marks the row
delivered with the consumer's MSA-1 in the note. Rows are strictly in order: a row that cannot
be delivered (connection refused, TLS failure, timeout, unreadable reply) is retried with
exponential backoff and blocks the rows behind it. A consumer answering AE/AR is recorded in the
note and not retried (resending the same content would get the same answer). Delivery is at
least once: a failure after some persons of a row were sent re-sends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from identity.audit.record import DESTINATION, Outcome, hl7_peer
from identity.config import NotifySettings, Settings
from identity.errors import NotFound
from identity.hl7v2.audit import identifier_cx
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.queries import person_identifiers
from identity.hl7v2.replies import control_id, encode, pid_segment, timestamp
from identity.hl7v2.tokenizer import Raw, parse_message
from identity.mpi import Mpi
from identity.mpi.outbox import TopicDeliveries
from identity.mpi.uow import notify_topic
from identity.tls import notify_context

log = logging.getLogger("identity.hl7v2.notifier")

IDLE_POLL = 0.2
MAX_BACKOFF = 60.0


def ssl_context(consumer: NotifySettings) -> ssl.SSLContext | None:
    """TLS towards the consumer (identity.tls: its certificate verified against ``ca``, ours
    sent when ``certificate`` is set); None for plain TCP."""
    return notify_context(consumer)


def backoff(attempts: int) -> float:
    return min(MAX_BACKOFF, 0.5 * (2 ** min(attempts, 10)))


class Notifier:
    def __init__(
        self, mpi: Mpi, settings: Settings, consumer: NotifySettings
    ) -> None:
        self.mpi = mpi
        self.settings = settings
        self.consumer = consumer
        self.topic = notify_topic(consumer.name)
        self.client = MLLPClient(
            consumer.host, consumer.port, ssl_context=ssl_context(consumer), timeout=10.0
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.delivered = 0

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"iti10:{self.consumer.name}")

    async def stop(self, grace: float = 10.0) -> None:
        """Stop after the delivery in progress (cancelled if it takes longer than ``grace``)."""
        self._stopping.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.client.close()
        self._task = None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self.mpi.own_outbox_topic(self.topic) as outbox:
                    if outbox is None:  # another worker, in any process, delivers it
                        await self._sleep(1.0)
                        continue
                    await self._drain(outbox)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event=iti10_worker_error consumer=%s", self.consumer.name)
                await self._sleep(1.0)

    async def _drain(self, outbox: TopicDeliveries) -> None:
        while not self._stopping.is_set():
            entry = await outbox.head()
            if entry is None or not entry.due:
                await self._sleep(IDLE_POLL)
                continue
            try:
                log.debug("event=iti10_row id=%d payload=%s", entry.id, entry.payload)
                note = await self.deliver(entry.payload)
            except Exception as exc:  # noqa: BLE001 - any failure: retried later, in order
                wait = backoff(entry.attempts)
                log.warning("event=iti10_failed consumer=%s row=%d attempts=%d retry_in=%.1f "
                            "error=%s", self.consumer.name, entry.id, entry.attempts + 1, wait,
                            type(exc).__name__)
                await outbox.failed(entry, f"{type(exc).__name__}: {exc}", wait)
                continue
            await outbox.delivered(entry, note)
            self.delivered += 1
            log.info("event=iti10_delivered consumer=%s row=%d note=%s",
                     self.consumer.name, entry.id, note)

    async def deliver(self, payload: dict[str, Any]) -> str:
        """Send the A31s of one outbox payload; return the note (the consumer's MSA-1s)."""
        wanted = self._wanted()
        if self.consumer.domains and not wanted:
            await self.mpi.domains.refresh()
            wanted = self._wanted()
            if not wanted:
                return "none of the consumer's domains is known: nothing sent"
        notes = []
        for person_id in dict.fromkeys(payload.get("person_ids") or []):
            if person_id is None:
                continue
            try:
                person = await self.mpi.get_person(int(person_id))
            except NotFound:
                notes.append(f"person {person_id}: gone, nothing sent")
                continue
            identifiers = person_identifiers(person, self.mpi.domains.all(), wanted)
            if not identifiers:
                notes.append(f"person {person_id}: no identifier in the consumer's domains")
                continue
            control = control_id()
            reply = await self.client.send(self.a31(identifiers, control)[1])
            msa = parse_message(reply).segment("MSA")
            code = msa.value(1) if msa is not None else "?"
            if code not in ("AA", "CA"):
                log.warning("event=iti10_refused consumer=%s person=%s msa=%s",
                            self.consumer.name, person_id, code)
            self._audit(identifiers, control, code)
            notes.append(f"person {person_id}: MSA-1={code}")
        return "; ".join(notes) or "no person in the payload"

    def _audit(self, identifiers: list[Any], control: str, code: str) -> None:
        """The ITI-10 audit record of one A31 the consumer answered (ITI TF-2 3.10.5.1.1): we
        are the source, the consumer ``MSH-5|MSH-6`` at its host the destination, the patient
        the PID-3 identifiers sent; outcome 0 for AA/CA, 4 with the MSA-1 otherwise; queued.
        A send that got no answer is retried and recorded when it is answered."""
        consumer = self.consumer
        ok = code in ("AA", "CA")
        try:
            record = self.mpi.audit.auditor.notification(
                consumer=hl7_peer(consumer.receiving_application, consumer.receiving_facility,
                                  consumer.host, role=DESTINATION),
                patient=identifier_cx(identifiers), message_id=control,
                outcome=Outcome.SUCCESS if ok else Outcome.MINOR_FAILURE,
                description=None if ok else f"the consumer answered MSA-1 {code}",
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - a delivery is not undone by its audit record
            log.exception("event=audit_notification_record_error")
            return
        self.mpi.audit.later([record])

    def _wanted(self) -> set[int]:
        """Ids of the consumer's domains (empty: every domain, when none is configured)."""
        names = set(self.consumer.domains)
        return {d.id for d in self.mpi.domains.all() if d.namespace in names}

    def a31(self, identifiers: list[Any], control: str | None = None) -> tuple[str, bytes]:
        """ADT^A31^ADT_A05: MSH, EVN, PID (PID-3 and PID-5 = a single space), PV1 (PV1-2 = N);
        MSH-10 ``control`` (a new one when None)."""
        hl7 = self.settings.hl7
        now = timestamp()
        header = [
            "MSH", None, None, hl7.application, hl7.facility,
            self.consumer.receiving_application, self.consumer.receiving_facility, now, None,
            [["ADT", "A31", "ADT_A05"]], control or control_id(), "P", "2.5",
            None, None, None, None, None, None,
        ]  # fmt: skip
        return encode([
            header,
            ["EVN", None, now],
            pid_segment(identifiers, name=Raw(" ")),
            ["PV1", None, "N"],
        ])
