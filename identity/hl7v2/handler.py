"""The HL7 v2 front door's dispatcher: raw message bytes in, reply bytes out.

Checks common to every message (TF2 Appendix C) are made here: a message the tokenizer refuses
is answered AR with the location and code the tokenizer gives; MSH-10 is required; MSH-12 must
be 2.3.1 or later; an unsupported message type is AR 200 at MSH^1^9^1^1, an unsupported trigger
event AR 201 at MSH^1^9^1^2.
"""

from __future__ import annotations

import logging

from identity.config import Settings
from identity.hl7v2.errors import ErrorLocation, ParseError
from identity.hl7v2.feed import FEED_EVENTS, FeedHandler
from identity.hl7v2.queries import PdqQuery, PixQuery, cancel
from identity.hl7v2.replies import ErrorDetail, ReplyContext, ack
from identity.hl7v2.tokenizer import Message, parse_message
from identity.mpi import Mpi

log = logging.getLogger("identity.hl7v2")

SUPPORTED: dict[str, frozenset[str]] = {
    "ADT": FEED_EVENTS,
    "QBP": frozenset({"Q22", "Q23"}),
    "QCN": frozenset({"J01"}),
}


def _version_ok(version: str) -> bool:
    parts = version.split(".")
    if not all(p.isascii() and p.isdigit() for p in parts) or len(parts) < 2:
        return False
    numbers = tuple(int(p) for p in parts)
    return numbers[0] == 2 and numbers >= (2, 3, 1)


class Hl7Handler:
    """One inbound message → one Mpi command or query → one reply (bytes)."""

    def __init__(self, mpi: Mpi, settings: Settings) -> None:
        self.mpi = mpi
        self.settings = settings
        self.feed = FeedHandler(mpi)
        self.pix = PixQuery(mpi)
        self.pdq = PdqQuery(mpi)

    async def __call__(self, raw: bytes) -> bytes:
        return await self.handle(raw)

    async def handle(self, raw: bytes) -> bytes:
        try:
            message = parse_message(raw)
        except ParseError as exc:
            ctx = ReplyContext.fallback(raw, self.settings.hl7)
            log.info("event=hl7_unparseable code=%d location=%s", exc.code, exc.location.to_erl())
            return ack(ctx, "AR", [ErrorDetail(exc.location, exc.code, exc.text)])[1]
        ctx = ReplyContext.of(message, self.settings.hl7)
        refusal = self._refusal(message)
        if refusal is not None:
            return ack(ctx, "AR", [refusal])[1]
        try:
            return await self._dispatch(message, ctx)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the sender without ACK
            log.exception("event=hl7_internal_error type=%s control_id=%s",
                          message.message_type, ctx.control_id)
            detail = ErrorDetail(None, 207, f"internal error: {type(exc).__name__}")
            return ack(ctx, "AE", [detail])[1]

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
        if not _version_ok(message.version):
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
