"""ITI-8 Patient Identity Feed and ITI-30 Patient Identity Management: ADT in, Mpi command,
ACK out.

The ACK is built inside the command's transaction (``reply=``) and stored with the change, so
it is only sent after the commit and a re-sent message (same MSH-3, MSH-4, MSH-10) gets the
same ACK without being applied again. An error that changed nothing (AE) is remembered too;
StoreUnavailable is not (the re-sent message must succeed once the database is back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from identity.errors import (
    AlreadyProcessed,
    AmbiguousDomain,
    IdentifierConflict,
    InvalidInput,
    InvalidState,
    MpiError,
    NotFound,
    SourceNotAuthorized,
    StoreUnavailable,
    UnknownDomain,
    UnknownIdentifier,
)
from identity.hl7v2.errors import ErrorLocation, ParseError
from identity.hl7v2.pid import FieldError, identifiers, make_record, record_input
from identity.hl7v2.replies import ErrorDetail, ReplyContext, ack
from identity.hl7v2.tokenizer import Message, Segment, to_bytes
from identity.model import IdentifierRef, RecordInput
from identity.mpi import Mpi

log = logging.getLogger("identity.hl7v2.feed")

REGISTER_EVENTS = frozenset({"A01", "A04", "A05", "A08", "A28", "A31"})
FEED_EVENTS = REGISTER_EVENTS | {"A40", "A47", "A24", "A37"}

_FIELD_LOCATIONS = {
    "identifier": (ErrorLocation("PID", 1, 3), 101),
    "authority": (ErrorLocation("PID", 1, 3, 1, 4), 101),
    "names": (ErrorLocation("PID", 1, 5), 102),
    "family": (ErrorLocation("PID", 1, 5), 102),
    "given": (ErrorLocation("PID", 1, 5), 102),
    "birth_date": (ErrorLocation("PID", 1, 7), 102),
    "sex": (ErrorLocation("PID", 1, 8), 103),
}


@dataclass
class _Command:
    """What the error mapper needs to know about the message being applied."""

    pids: list[list[IdentifierRef]] = field(default_factory=list)  # PID-3 per PID segment
    mrg: list[IdentifierRef] = field(default_factory=list)  # MRG-1


def _sequence_of(
    command: _Command, value: str | None, domain: str | None
) -> tuple[str, int, int]:
    """(segment, sequence, repetition) of the identifier an error names; PID 1 rep 1 if none.
    ``domain`` is a namespace, or an authority as text (``namespace&OID&ISO``)."""
    names = {part for part in (domain or "").split("&")[:2] if part}
    for rep, ref in enumerate(command.mrg, start=1):
        if ref.value == value:
            return "MRG", 1, rep
    for seq, refs in enumerate(command.pids, start=1):
        for rep, ref in enumerate(refs, start=1):
            if value is not None and ref.value == value:
                return "PID", seq, rep
            if names & {ref.authority.namespace, ref.authority.oid}:
                return "PID", seq, rep
    return "PID", 1, 1


def error_details(exc: Exception, command: _Command) -> list[ErrorDetail]:
    """Map a core or field error to ERR segments (ERR-2 location, ERR-3 HL7 0357 code)."""
    text = str(exc)
    if isinstance(exc, ParseError):
        return [ErrorDetail(exc.location, exc.code, text)]
    if isinstance(exc, SourceNotAuthorized):
        segment, seq, rep = _sequence_of(command, None, exc.domain)
        return [ErrorDetail(ErrorLocation(segment, seq, 3, rep, 4), 204, text)]
    if isinstance(exc, UnknownDomain):
        segment, seq, rep = _sequence_of(command, None, exc.authority)
        field_no = 1 if segment == "MRG" else 3
        return [ErrorDetail(ErrorLocation(segment, seq, field_no, rep, 4), 204, text)]
    if isinstance(exc, AmbiguousDomain):
        return [ErrorDetail(ErrorLocation("PID", 1, 3, 1, 4), 204, text)]
    if isinstance(exc, UnknownIdentifier):
        segment, seq, rep = _sequence_of(command, exc.value, None)
        field_no = 1 if segment == "MRG" else 3
        return [ErrorDetail(ErrorLocation(segment, seq, field_no, rep, 1), 204, text)]
    if isinstance(exc, IdentifierConflict):
        return [ErrorDetail(ErrorLocation("PID", 1, 3, 1, 1), 205, text)]
    if isinstance(exc, InvalidInput):
        location, code = _FIELD_LOCATIONS.get(exc.field or "", (ErrorLocation("PID", 1), 102))
        return [ErrorDetail(location, code, text)]
    if isinstance(exc, NotFound):
        return [ErrorDetail(ErrorLocation("PID", 1, 3), 204, text)]
    if isinstance(exc, InvalidState):
        return [ErrorDetail(ErrorLocation("PID", 1, 3), 207, text)]
    return [ErrorDetail(None, 207, text)]


def _source(message: Message) -> str:
    """The sending application (MSH-3 HD.1), the source the domains' ``sources`` name."""
    return message.msh.value(3)


class FeedHandler:
    def __init__(self, mpi: Mpi) -> None:
        self.mpi = mpi
        self._in_flight: dict[tuple[str, str], asyncio.Future[bytes]] = {}

    async def handle(self, message: Message, ctx: ReplyContext) -> bytes:
        """Apply one feed message. A copy of a message still being handled in this process
        (same sender and MSH-10, e.g. on a second connection) waits for it and gets its reply."""
        sender = f"{ctx.sending_application}|{ctx.sending_facility}"
        idempotency = (sender, ctx.control_id)
        running = self._in_flight.get(idempotency)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._in_flight[idempotency] = future
        try:
            data = await self._handle(message, ctx, sender, idempotency)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark it retrieved: only the waiters re-raise it
            raise
        else:
            future.set_result(data)
            return data
        finally:
            del self._in_flight[idempotency]

    async def _handle(
        self, message: Message, ctx: ReplyContext, sender: str, idempotency: tuple[str, str]
    ) -> bytes:
        # A message processed before is recognised inside the command's transaction (the
        # core's idempotency check, under the message's lock) or, when it is refused again,
        # by the reply stored for it: either way it gets the reply it got the first time.
        built: dict[str, bytes] = {}

        def reply(_result: Any) -> str:
            text, data = ack(ctx, "AA")
            built["bytes"] = data
            return text

        command = _Command()
        actor = f"hl7:{sender}"
        run = {
            "A40": self._merge,
            "A47": self._change_identifier,
            "A24": self._link,
            "A37": self._unlink,
        }.get(ctx.trigger, self._register)
        try:
            await run(message, command, _source(message), actor, idempotency, reply)
        except AlreadyProcessed as exc:
            log.info("event=hl7_redelivered sender=%s control_id=%s", sender, ctx.control_id)
            return to_bytes(exc.reply)
        except StoreUnavailable as exc:
            return self._unavailable(ctx, exc)
        except (MpiError, ParseError) as exc:
            log.info("event=hl7_feed_refused trigger=%s control_id=%s error=%s",
                     ctx.trigger, ctx.control_id, type(exc).__name__)
            text, data = ack(ctx, "AE", error_details(exc, command))
            try:
                stored = await self.mpi.remember_reply(sender, ctx.control_id, text)
            except StoreUnavailable:
                return data
            if stored != text:
                log.info("event=hl7_redelivered sender=%s control_id=%s", sender, ctx.control_id)
                return to_bytes(stored)
            return data
        return built["bytes"]

    def _unavailable(self, ctx: ReplyContext, exc: Exception) -> bytes:
        log.warning("event=hl7_store_unavailable control_id=%s", ctx.control_id)
        detail = ErrorDetail(None, 207, f"database unavailable, nothing applied: {exc}")
        return ack(ctx, "AE", [detail])[1]

    # --- the commands -----------------------------------------------------------------------

    async def _record(
        self, pid: Segment, seq: int, source: str, command: _Command, *, require_name: bool,
        strict_source: bool = True,
    ) -> RecordInput:
        refs, demographics, cleared, extra = record_input(pid, seq, require_name=require_name)
        command.pids.append(refs)
        try:
            primary, others = await self.mpi.primary_identifier(refs, source)
        except SourceNotAuthorized:
            if strict_source:
                raise
            primary, others = refs[0], refs[1:]
        return make_record(primary, [*others, *extra], demographics, cleared)

    def _pid(self, message: Message, seq: int = 1) -> Segment:
        pids = message.segments("PID")
        if len(pids) < seq:
            raise FieldError(
                f"PID segment {seq} is missing", location=ErrorLocation("PID", seq), code=100
            )
        return pids[seq - 1]

    async def _register(
        self, message: Message, command: _Command, source: str, actor: str,
        idempotency: tuple[str, str], reply: Callable[[Any], str],
    ) -> None:
        record = await self._record(self._pid(message), 1, source, command, require_name=True)
        await self.mpi.register(
            record, source=source, actor=actor, message_id=idempotency[1],
            idempotency=idempotency, reply=reply,
        )

    def _mrg(self, message: Message, command: _Command) -> list[IdentifierRef]:
        mrg = message.segment("MRG")
        if mrg is None:
            raise FieldError("MRG segment is missing", location=ErrorLocation("MRG"), code=100)
        refs = identifiers(mrg, 1)
        if not refs:
            raise FieldError(
                "MRG-1 prior patient identifier list is missing",
                location=ErrorLocation("MRG", 1, 1),
                code=101,
            )
        command.mrg = refs
        return refs

    async def _prior_in_domain(self, record: RecordInput, prior: list[IdentifierRef]) -> str:
        """The MRG-1 repetition in the surviving identifier's domain (or without authority)."""
        target = record.identifier.authority
        for ref in prior:
            authority = ref.authority
            if not authority.namespace and not authority.oid:
                return ref.value
            if authority == target:
                return ref.value
        if target.namespace or target.oid:
            wanted = await self.mpi.domains.resolve(target)
            for ref in prior:
                try:
                    if (await self.mpi.domains.resolve(ref.authority)).id == wanted.id:
                        return ref.value
                except (UnknownDomain, AmbiguousDomain, InvalidInput):
                    continue
        raise FieldError(
            "MRG-1 holds no identifier in the domain of PID-3",
            location=ErrorLocation("MRG", 1, 1, 1, 4),
            code=204,
        )

    async def _merge(
        self, message: Message, command: _Command, source: str, actor: str,
        idempotency: tuple[str, str], reply: Callable[[Any], str],
    ) -> None:
        record = await self._record(self._pid(message), 1, source, command, require_name=False)
        retired = await self._prior_in_domain(record, self._mrg(message, command))
        await self.mpi.merge(
            record.identifier.authority, retired, record, source=source, actor=actor,
            message_id=idempotency[1], idempotency=idempotency, reply=reply,
        )

    async def _change_identifier(
        self, message: Message, command: _Command, source: str, actor: str,
        idempotency: tuple[str, str], reply: Callable[[Any], str],
    ) -> None:
        record = await self._record(self._pid(message), 1, source, command, require_name=False)
        old = await self._prior_in_domain(record, self._mrg(message, command))
        await self.mpi.change_identifier(
            record.identifier.authority, old, record.identifier.value, source=source,
            actor=actor, message_id=idempotency[1], idempotency=idempotency, reply=reply,
        )

    async def _two(
        self, message: Message, command: _Command, source: str
    ) -> tuple[RecordInput, RecordInput]:
        a = await self._record(self._pid(message, 1), 1, source, command,
                               require_name=False, strict_source=False)
        b = await self._record(self._pid(message, 2), 2, source, command,
                               require_name=False, strict_source=False)
        return a, b

    async def _link(
        self, message: Message, command: _Command, source: str, actor: str,
        idempotency: tuple[str, str], reply: Callable[[Any], str],
    ) -> None:
        a, b = await self._two(message, command, source)
        await self.mpi.link(
            a, b, source=source, actor=actor, message_id=idempotency[1],
            idempotency=idempotency, reply=reply,
        )

    async def _unlink(
        self, message: Message, command: _Command, source: str, actor: str,
        idempotency: tuple[str, str], reply: Callable[[Any], str],
    ) -> None:
        a, b = await self._two(message, command, source)
        await self.mpi.unlink(
            a, b, source=source, actor=actor, message_id=idempotency[1],
            idempotency=idempotency, reply=reply,
        )


