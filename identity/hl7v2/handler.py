"""The HL7 v2 front door's dispatcher: raw message bytes in, reply bytes out.

Checks common to every message (TF2 Appendix C) are made here: a message the tokenizer refuses
is answered AR with the location and code the tokenizer gives (207 for more segments or
repetitions than [hl7] max_segments and max_repetitions allow), except that a character set
it cannot read is AE (103, or 102 for bytes invalid in it, at MSH-18); MSH-10 is required;
MSH-12 must be 2.3.1 to 2.8.x; an unsupported message type is AR 200 at MSH^1^9^1^1, an
unsupported trigger event AR 201 at MSH^1^9^1^2.
"""

from __future__ import annotations

import logging
import time

from identity import metrics
from identity.config import Settings
from identity.hl7v2.audit import (
    feed_action,
    patient_cx,
    query_content,
    sender,
    transaction_of,
)
from identity.hl7v2.errors import (
    CharsetDecodeError,
    ErrorLocation,
    LimitExceededError,
    ParseError,
    UnsupportedCharsetError,
)
from identity.hl7v2.feed import FEED_EVENTS, FeedHandler
from identity.hl7v2.pid import identifiers
from identity.hl7v2.queries import PdqQuery, PixQuery, cancel
from identity.hl7v2.replies import ErrorDetail, ReplyContext, ack
from identity.hl7v2.senders import Peer, Senders, certificate_text, current_peer
from identity.hl7v2.tokenizer import Message, parse_message
from identity.mpi import Mpi

log = logging.getLogger("identity.hl7v2")

FEEDS = frozenset({"ITI-8", "ITI-30"})

SUPPORTED: dict[str, frozenset[str]] = {
    "ADT": FEED_EVENTS,
    "QBP": frozenset({"Q22", "Q23"}),
    "QCN": frozenset({"J01"}),
}


OLDEST_VERSION = (2, 3, 1)
NEWEST_VERSION = (2, 8)
"""MSH-12 versions accepted: 2.3.1 (ITI-8's version) to 2.8.x (HL7 v2 is backward compatible
within these; each is tested: tests/hl7v2/test_versions_charsets.py). Others are AR 203."""


def supported_version(version: str) -> bool:
    """MSH-12.1 is a version from 2.3.1 to 2.8.x (2.8, 2.8.1, 2.8.2)."""
    parts = version.split(".")
    if not all(p.isascii() and p.isdigit() for p in parts) or len(parts) < 2:
        return False
    numbers = tuple(int(p) for p in parts)
    return OLDEST_VERSION <= numbers and numbers[:2] <= NEWEST_VERSION


def message_label(raw: bytes) -> str:
    """MSH-9 as a metric's label: ``ADT^A04``, ``QBP^Q23``; ``other`` for a type or event the
    door does not support (a label must not take any value a sender writes) and for a message
    whose MSH cannot be read. Read from the first segment's bytes, without parsing."""
    if raw[:3] != b"MSH" or len(raw) < 8:
        return "other"
    end = raw.find(b"\r")
    fields = raw[: end if end >= 0 else len(raw)].split(raw[3:4], 9)
    if len(fields) < 9 or not fields[1]:
        return "other"
    parts = fields[8].split(fields[1][:1], 2)
    kind = parts[0].decode("ascii", "replace")
    event = parts[1].decode("ascii", "replace") if len(parts) > 1 else ""
    events = SUPPORTED.get(kind)
    return f"{kind}^{event}" if events is not None and event in events else "other"


class Hl7Handler:
    """One inbound message → one Mpi command or query → one reply (bytes)."""

    def __init__(self, mpi: Mpi, settings: Settings) -> None:
        self.mpi = mpi
        self.settings = settings
        self.feed = FeedHandler(mpi)
        self.pix = PixQuery(mpi)
        self.pdq = PdqQuery(mpi)
        self.senders = Senders(settings.mllp.clients)

    async def __call__(self, raw: bytes) -> bytes:
        return await self.handle(raw)

    async def handle(self, raw: bytes) -> bytes:
        """The reply to one message; counted and timed (identity.metrics) by its MSH-9."""
        started = time.perf_counter()
        reply = await self._handle(raw)
        metrics.observe_hl7(message_label(raw), reply, time.perf_counter() - started)
        return reply

    async def _handle(self, raw: bytes) -> bytes:
        hl7 = self.settings.hl7
        try:
            message = parse_message(
                raw, max_segments=hl7.max_segments, max_repetitions=hl7.max_repetitions
            )
        except ParseError as exc:
            ctx = ReplyContext.fallback(raw, hl7)
            if isinstance(exc, UnsupportedCharsetError | CharsetDecodeError):
                # The message may be well formed, but its text cannot be read as it says it
                # is written (HL7 v2.5 2.9.2: AR is for MSH-9, 11, 12): AE, nothing applied.
                log.info("event=hl7_charset_refused code=%d charset=%s control_id=%s",
                         exc.code, exc.charset, ctx.control_id)
                return ack(ctx, "AE", [ErrorDetail(exc.location, exc.code, exc.text)])[1]
            if isinstance(exc, LimitExceededError):
                log.warning("event=hl7_limit_exceeded limit=%d location=%s control_id=%s",
                            exc.limit, exc.location.to_erl(), ctx.control_id)
            else:
                log.info("event=hl7_unparseable code=%d location=%s", exc.code,
                         exc.location.to_erl())
            return ack(ctx, "AR", [ErrorDetail(exc.location, exc.code, exc.text)])[1]
        ctx = ReplyContext.of(message, self.settings.hl7)
        refusal = self._refusal(message)
        if refusal is None and self.senders.enforced:
            refusal = self.senders.refusal(message, current_peer.get())
            if refusal is not None:
                peer = current_peer.get()
                log.warning("event=hl7_sender_refused peer=%s control_id=%s reason=%s",
                            peer.address if peer else "", ctx.control_id, refusal.diagnostic)
                self._audit_sender_refused(message, peer, refusal)
        if refusal is not None:
            return ack(ctx, "AR", [refusal])[1]
        try:
            return await self._dispatch(message, ctx)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the sender without ACK
            log.exception("event=hl7_internal_error type=%s control_id=%s",
                          message.message_type, ctx.control_id)
            detail = ErrorDetail(None, 207, f"internal error: {type(exc).__name__}")
            return ack(ctx, "AE", [detail])[1]

    def _audit_sender_refused(
        self, message: Message, peer: Peer | None, refusal: ErrorDetail
    ) -> None:
        """A message refused because its connection's certificate may not send as its MSH-3/
        MSH-4 ([[mllp.clients]]): the transaction it tried, outcome 4, the reason (with the
        certificate's subject), the patient it named as identifiers; queued. A message of a
        kind that is not audited (QCN) leaves no record."""
        name = transaction_of(message)
        if name is None:
            return
        reason = refusal.diagnostic
        subject = certificate_text(peer.certificate if peer is not None else None)
        if subject:
            reason = f"{reason} (client certificate subject {subject})"
        try:
            record = self.mpi.audit.auditor.refused(
                name, caller=sender(message, peer), reason=reason[:500],
                action=feed_action(message.trigger_event) if name in FEEDS else None,
                patient=self._patient(message, name), message_id=message.control_id,
                query=query_content(message) if name not in FEEDS else None,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - the audit of a refusal must not hide the refusal
            log.exception("event=audit_refusal_record_error")
            return
        self.mpi.audit.later([record])

    def _patient(self, message: Message, name: str) -> list[str]:
        """The patient a refused message named, as identifiers: PID-3 of its first PID for a
        feed (an A40's survivor), QPD-3 of a PIX query; none for a PDQ query (the redacted
        query shows what was searched)."""
        if name in FEEDS:
            pid = message.segment("PID")
            refs = identifiers(pid, 3) if pid is not None else []
        elif name == "ITI-9":
            qpd = message.segment("QPD")
            refs = identifiers(qpd, 3)[:1] if qpd is not None else []
        else:
            return []
        return patient_cx(refs, self.mpi.domains, message.msh.value(3))

    async def _dispatch(self, message: Message, ctx: ReplyContext) -> bytes:
        kind = message.message_type
        if kind == "ADT":
            return await self.feed.handle(message, ctx)
        if kind == "QCN":
            return await cancel(message, ctx)
        if message.trigger_event == "Q23":
            return await self.pix.handle(message, ctx)
        return await self.pdq.handle(message, ctx)

    def _refusal(self, message: Message) -> ErrorDetail | None:
        if not message.control_id:
            return ErrorDetail(ErrorLocation("MSH", 1, 10), 101, "MSH-10 is missing")
        if not message.version:
            return ErrorDetail(ErrorLocation("MSH", 1, 12), 101, "MSH-12 is missing")
        if not supported_version(message.version):
            return ErrorDetail(
                ErrorLocation("MSH", 1, 12), 203, f"unsupported version {message.version}"
            )
        events = SUPPORTED.get(message.message_type)
        if events is None:
            return ErrorDetail(
                ErrorLocation("MSH", 1, 9, 1, 1),
                200,
                f"unsupported message type {message.message_type!r}",
            )
        if message.trigger_event not in events:
            return ErrorDetail(
                ErrorLocation("MSH", 1, 9, 1, 2),
                201,
                f"unsupported trigger event {message.trigger_event!r}",
            )
        return None
