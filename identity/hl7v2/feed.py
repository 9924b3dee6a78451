"""ITI-8 Patient Identity Feed and ITI-30 Patient Identity Management: ADT in, core command,
ACK out.

The door parses the message into one command (identity.mpi.commands: Register, Merge,
ChangeIdentifier, Link, Unlink) with the identifiers as received, and an Envelope that renders
the ACK. The core (``Mpi.answer``) renders the AA inside the command's transaction and stores
it with the change, so it is only sent after the commit and a re-sent message (same MSH-3,
MSH-4, MSH-10) gets the same ACK without being applied again. A refusal (AE with ERR) is
stored too; StoreUnavailable is not (the re-sent message must succeed once the database is
back).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

from identity.audit.record import Action, AuditRecord, Outcome
from identity.errors import (
    AmbiguousDomain,
    IdentifierConflict,
    InvalidInput,
    InvalidState,
    NotFound,
    ReusedMessageId,
    SourceNotAuthorized,
    StoreUnavailable,
    UnknownDomain,
    UnknownIdentifier,
)
from identity.hl7v2.audit import (
    feed_action,
    feed_transaction,
    parse_reason,
    patient_cx,
    sender,
)
from identity.hl7v2.errors import ErrorLocation, ParseError
from identity.hl7v2.mllp import current_peer
from identity.hl7v2.pid import (
    FieldError,
    Known,
    check_identifiers,
    identifiers,
    record_input,
)
from identity.hl7v2.replies import ErrorDetail, ReplyContext, ack
from identity.hl7v2.tokenizer import Message, to_bytes
from identity.model import IdentifierRef
from identity.mpi import ChangeIdentifier, Envelope, Link, Merge, Mpi, Received, Register, Unlink
from identity.mpi.commands import Command

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
    "prior_identifier": (ErrorLocation("MRG", 1, 1, 1, 4), 204),
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


def _first_qualified(command: _Command) -> tuple[str, int, int]:
    """(segment, sequence, repetition) of the first identifier whose authority has both a
    namespace and an OID (the only kind that can contradict the configuration)."""
    for seq, refs in enumerate(command.pids, start=1):
        for rep, ref in enumerate(refs, start=1):
            if ref.authority.namespace and ref.authority.oid:
                return "PID", seq, rep
    for rep, ref in enumerate(command.mrg, start=1):
        if ref.authority.namespace and ref.authority.oid:
            return "MRG", 1, rep
    return "PID", 1, 1


def error_details(exc: Exception, command: _Command) -> list[ErrorDetail]:
    """Map a core or field error to ERR segments (ERR-2 location, ERR-3 HL7 0357 code)."""
    text = str(exc)
    if isinstance(exc, ParseError):
        return [ErrorDetail(exc.location, exc.code, text)]
    if isinstance(exc, ReusedMessageId):
        return [ErrorDetail(ErrorLocation("MSH", 1, 10), 205, text)]
    if isinstance(exc, SourceNotAuthorized):
        segment, seq, rep = _sequence_of(command, None, exc.domain)
        return [ErrorDetail(ErrorLocation(segment, seq, 3, rep, 4), 204, text)]
    if isinstance(exc, UnknownDomain):
        segment, seq, rep = _sequence_of(command, None, exc.authority)
        field_no = 1 if segment == "MRG" else 3
        return [ErrorDetail(ErrorLocation(segment, seq, field_no, rep, 4), 204, text)]
    if isinstance(exc, AmbiguousDomain):  # the door checks first; here on a cache miss only
        segment, seq, rep = _first_qualified(command)
        return [ErrorDetail(ErrorLocation(segment, seq, 1 if segment == "MRG" else 3, rep, 4),
                            102, text)]
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


def message_digest(message: Message) -> str:
    """What tells one feed message's content from another's under the same control id: its
    type and every segment but MSH, hashed (a copy re-sent after a time-out may carry a new
    MSH-7 time, and is the same message)."""
    digest = hashlib.blake2b(message.msh.field(9).encode(), digest_size=16)
    for segment in message:
        if segment.name != "MSH":
            digest.update(b"\r" + segment.raw.encode())
    return digest.hexdigest()


def _source(message: Message) -> str:
    """The sending application (MSH-3 HD.1), the source the domains' ``sources`` name."""
    return message.msh.value(3)


class _FeedAudit:
    """The envelope's ``audit`` of one feed message (identity.mpi.audit): its records, built
    when the core asks (in the command's transaction when it succeeds, with the failure
    outcome when it is refused): ITI-8 or ITI-30, the sender ``MSH-3|MSH-4`` and its address,
    MSH-10, and the patients as CX from PID-3 (and MRG-1), identifiers only."""

    __slots__ = ("mpi", "message", "received", "peer")

    def __init__(self, mpi: Mpi, message: Message, received: _Command) -> None:
        self.mpi = mpi
        self.message = message
        self.received = received
        self.peer = current_peer.get()  # the connection's: the core may ask from elsewhere

    def __call__(self, outcome: Outcome, reason: str | None) -> list[AuditRecord]:
        message = self.message
        trigger = message.trigger_event
        name = feed_transaction(trigger, message.version)
        caller = sender(message, self.peer)
        source = _source(message)
        domains = self.mpi.domains
        auditor = self.mpi.audit.auditor

        def record(action: Action, refs: list[IdentifierRef]) -> AuditRecord:
            return auditor.patient_feed(
                name, action=action, caller=caller, patient=patient_cx(refs, domains, source),
                message_id=message.control_id, outcome=outcome, description=reason,
            )  # fmt: skip

        if trigger == "A40":  # ITI TF-2 3.8.5.2: D for the retired patient, U for the survivor
            return [record(Action.DELETE, self._mrg()), record(Action.UPDATE, self._pid(1))]
        if trigger == "A47":  # one patient, its new (PID-3) and prior (MRG-1) identifiers
            return [record(Action.UPDATE, [*self._pid(1), *self._mrg()])]
        if trigger in ("A24", "A37"):  # each patient linked or unlinked
            return [record(Action.UPDATE, self._pid(1)), record(Action.UPDATE, self._pid(2))]
        return [record(feed_action(trigger), self._pid(1))]

    def _pid(self, seq: int) -> list[IdentifierRef]:
        """PID-3 of PID segment ``seq``: as the command was made of it, else (a message
        refused before its command was complete) as the message has it."""
        if len(self.received.pids) >= seq:
            return self.received.pids[seq - 1]
        pids = self.message.segments("PID")
        return identifiers(pids[seq - 1], 3) if len(pids) >= seq else []

    def _mrg(self) -> list[IdentifierRef]:
        if self.received.mrg:
            return self.received.mrg
        mrg = self.message.segment("MRG")
        return identifiers(mrg, 1) if mrg is not None else []


def nk1_mother(message: Message, known: Known | None) -> IdentifierRef | None:
    """The mother's identifier from NK1 (HL7 v2.5 3.4.5): NK1-33 (CX, first repetition with a
    value) of the first NK1 whose relationship NK1-3 is ``MTH`` (HL7 table 0063) and that
    carries one; its CX.4 is checked like PID-21's (102 at ``NK1^<n>^33^<rep>^4``)."""
    for sequence, segment in enumerate(message.segments("NK1"), start=1):
        if segment.value(3).strip().upper() != "MTH":
            continue
        check_identifiers(segment, 33, sequence, known, "NK1")
        found = identifiers(segment, 33)
        if found:
            return found[0]
    return None


class FeedHandler:
    """Turns an ADT message into one core command and returns the ACK the core answers with."""

    def __init__(self, mpi: Mpi) -> None:
        self.mpi = mpi
        # None (fuzz/targets.py maps messages without a core): HD rules only, PID-19 default
        self.known: Known | None = mpi.domains.known if mpi is not None else None
        self.pid19_domain = mpi.settings.hl7.pid19_domain if mpi is not None else None

    async def handle(self, message: Message, ctx: ReplyContext) -> bytes:
        """Apply one feed message: AA after the change is committed; AE/AR with ERR when it is
        refused (nothing changed); the reply stored the first time for a re-sent message (same
        MSH-3, MSH-4, MSH-10)."""
        sender = f"{ctx.sending_application}|{ctx.sending_facility}"
        received = _Command()
        envelope = Envelope(
            actor=f"hl7:{sender}",
            source=_source(message),
            message_id=ctx.control_id,
            sender=sender,
            reply=lambda _result: ack(ctx, "AA")[0],
            refusal=lambda exc: ack(ctx, "AE", error_details(exc, received))[0],
            digest=message_digest(message),
            audit=_FeedAudit(self.mpi, message, received),
        )
        try:
            try:
                command = self._command(message, ctx.trigger, received)
            except ParseError as exc:
                log.info("event=hl7_feed_refused trigger=%s control_id=%s error=%s",
                         ctx.trigger, ctx.control_id, type(exc).__name__)
                self._audit_refusal(envelope, message, exc)
                reply = await self.mpi.refuse(envelope, exc)
            else:
                reply = await self.mpi.answer(command, envelope)
        except StoreUnavailable as exc:
            return self._unavailable(ctx, exc)
        return to_bytes(reply)

    def _audit_refusal(self, envelope: Envelope, message: Message, exc: ParseError) -> None:
        """A message refused before its command was made (a field missing or malformed): its
        records with outcome 4, queued (nothing was written to record it with)."""
        assert envelope.audit is not None
        reason = parse_reason(exc, feed_transaction(message.trigger_event, message.version))
        try:
            self.mpi.audit.later(envelope.audit(Outcome.MINOR_FAILURE, reason))
        except Exception:  # noqa: BLE001 - the audit of a refusal must not hide the refusal
            log.exception("event=audit_failure_record_error")

    def _unavailable(self, ctx: ReplyContext, exc: Exception) -> bytes:
        log.warning("event=hl7_store_unavailable control_id=%s", ctx.control_id)
        detail = ErrorDetail(None, 207, f"database unavailable, nothing applied: {exc}")
        return ack(ctx, "AE", [detail])[1]

    # --- message -> command -----------------------------------------------------------------

    def registration(self, message: Message) -> tuple[Register, str]:
        """The Register command a registration (A01, A04, A05, A08, A28, A31) asks for, as the
        feed applies it, and its source (MSH-3): ``identity import`` of HL7 v2 batch files.
        Raises ParseError."""
        subject = self._received(message, 1, _Command(), require_name=True)
        return Register(subject=subject), _source(message)

    def _command(self, message: Message, trigger: str, received: _Command) -> Command[Any]:
        """The core command an ADT event asks for (ITI-8, ITI-30). Raises ParseError."""
        if trigger == "A40":
            survivor = self._received(message, 1, received, require_name=False)
            return Merge(survivor=survivor, retired=self._mrg(message, received))
        if trigger == "A47":
            subject = self._received(message, 1, received, require_name=False)
            return ChangeIdentifier(subject=subject, prior=self._mrg(message, received))
        if trigger in ("A24", "A37"):
            a = self._received(message, 1, received, require_name=False)
            b = self._received(message, 2, received, require_name=False)
            return Link(a=a, b=b) if trigger == "A24" else Unlink(a=a, b=b)
        return Register(subject=self._received(message, 1, received, require_name=True))

    def _received(
        self, message: Message, seq: int, received: _Command, *, require_name: bool
    ) -> Received:
        """PID ``seq`` as the core's input. A registration needs PID-5, unless it names the
        patient's mother (a newborn not yet named): PID-21, else an NK1 mother's NK1-33."""
        pids = message.segments("PID")
        if len(pids) < seq:
            raise FieldError(
                f"PID segment {seq} is missing", location=ErrorLocation("PID", seq), code=100
            )
        pid = pids[seq - 1]
        mother = None
        if require_name and not identifiers(pid, 21) and not pid.is_null(21):
            mother = nk1_mother(message, self.known)
        refs, demographics, cleared, extra = record_input(
            pid, seq, require_name=require_name and not (identifiers(pid, 21) or mother),
            known=self.known, pid19_domain=self.pid19_domain,
        )
        if mother is not None and demographics.mothers_identifier is None:
            demographics = demographics.model_copy(update={"mothers_identifier": mother})
        received.pids.append(refs)
        return Received(
            identifiers=tuple(refs), demographics=demographics, cleared=cleared,
            extra=tuple(extra),
        )

    def _mrg(self, message: Message, received: _Command) -> tuple[IdentifierRef, ...]:
        mrg = message.segment("MRG")
        if mrg is None:
            raise FieldError("MRG segment is missing", location=ErrorLocation("MRG"), code=100)
        check_identifiers(mrg, 1, 1, self.known, "MRG")
        refs = identifiers(mrg, 1)
        if not refs:
            raise FieldError(
                "MRG-1 prior patient identifier list is missing",
                location=ErrorLocation("MRG", 1, 1),
                code=101,
            )
        received.mrg = refs
        return tuple(refs)
