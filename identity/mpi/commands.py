"""The commands of the MPI core, and the envelope every command travels in.

A front door turns what it received into one command (a small frozen dataclass) and an
:class:`Envelope` (who sent it, which message it was, how to render the reply), and hands both
to :meth:`identity.mpi.Mpi.handle` (or :meth:`~identity.mpi.Mpi.answer` for a door that must
answer a re-delivered message with the reply it got the first time). Each command has one
handler function in :mod:`identity.mpi.handlers`; actor, history, idempotency and the stored
reply are taken care of once, for every command, from the envelope.

Identifiers travel as received: a door does not decide which identifier is the record's own
(:class:`Received`), nor which prior identifier a merge retires; the core does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from identity.audit.record import AuditRecord
    from identity.mpi.audit import AuditOf

from identity.model import (
    AuthorityRef,
    CommandResult,
    Demographics,
    IdentifierRef,
    LinkKind,
    RecordInput,
    RegisterResult,
)

R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """Who sent a command and how to answer it.

    ``actor`` names who caused the change in history (``hl7:<MSH-3>|<MSH-4>``,
    ``fhir:<client>``, ``steward:<user>``, ``system``); ``source`` is the sending application
    that the domains' ``sources`` name (MSH-3, the FHIR client id; None: any); ``message_id``
    the originating message or request id. With a ``sender`` as well, (sender, message_id)
    identifies the message for idempotency: a message applied before is not applied again, and
    :meth:`Mpi.answer` returns the reply stored with it. ``reply`` renders the reply to a
    command that succeeded (stored in the command's own transaction), ``refusal`` the reply to
    one that was refused (stored after the rollback). ``digest`` identifies the message's
    content: stored beside the reply, so that a control id reused for another message is
    refused instead of answered with the first one's reply."""

    actor: str
    source: str | None = None
    message_id: str | None = None
    sender: str | None = None
    reply: Callable[[Any], str] | None = None
    refusal: Callable[[Exception], str] | None = None
    digest: str | None = None
    audit: AuditOf | None = None
    """The audit records of the command (identity.mpi.audit): written in its transaction when
    it succeeds, queued with the failure outcome when it is refused or fails."""
    audit_result: Callable[[Any], Sequence[AuditRecord]] | None = None
    """The audit records of the command when it succeeded, made from its result (for records
    that depend on it: a FHIR conditional PUT is a create or an update); written instead of
    ``audit(SUCCESS, None)``, in the command's transaction. ``audit`` still gives the failure
    records."""

    def reuses(self, stored_digest: str | None) -> bool:
        """Whether a message stored with ``stored_digest`` under this envelope's idempotency
        pair had other content (unknown digests, from before they were kept, never differ)."""
        return self.digest is not None and stored_digest is not None and (
            stored_digest != self.digest
        )

    @property
    def idempotency(self) -> tuple[str, str] | None:
        """(sender, message control id) when the message can be recognised again."""
        if self.sender is None or self.message_id is None:
            return None
        return self.sender, self.message_id


@dataclass(frozen=True, kw_only=True)
class Received:
    """One patient as a message describes it, before the core knows which identifier is the
    record's own: ``identifiers`` in message order (PID-3, Patient.identifier), ``extra``
    identifiers that are never the record's own (PID-19 SSN), the demographics and the fields
    the message explicitly cleared (HL7 ``""``)."""

    identifiers: tuple[IdentifierRef, ...]
    demographics: Demographics = field(default_factory=Demographics)
    cleared: frozenset[str] = frozenset()
    extra: tuple[IdentifierRef, ...] = ()


Subject = RecordInput | Received
"""A command's patient: a RecordInput names the record's own identifier (FHIR conditional
update, tests); Received leaves the choice to the core."""


class Command(Generic[R]):
    """Base of the commands; ``R`` is what handling one returns."""


@dataclass(frozen=True, kw_only=True)
class Register(Command[RegisterResult]):
    """Create or update a source record and decide its person (ITI-8/30 A01, A04, A05, A08,
    A28, A31; ITI-104 and PMIR create/update). ``replace``: the demographics replace the stored
    ones (FHIR PUT); otherwise they are a partial update (HL7 v2: empty = unchanged, cleared
    fields deleted)."""

    subject: Subject
    replace: bool = False


@dataclass(frozen=True, kw_only=True)
class Merge(Command[CommandResult]):
    """Retire one record into another of the same domain (ITI-30 A40, ITI-104 / PMIR merge).
    ``retired`` holds the prior identifiers as received (MRG-1): the one in the survivor's
    domain, or without an authority, is retired. An unknown retired identifier is nothing to
    do; an unknown survivor makes this a change of identifier."""

    survivor: Subject
    retired: tuple[IdentifierRef, ...]

    @classmethod
    def within(cls, authority: AuthorityRef, retired: str, survivor: str | Subject) -> Merge:
        """A merge of two identifiers of one domain (ITI-104: the retired Patient links
        replaced-by the survivor); a survivor given as a record also updates its
        demographics."""
        if isinstance(survivor, str):
            survivor = RecordInput(identifier=IdentifierRef(value=survivor, authority=authority))
        return cls(survivor=survivor, retired=(IdentifierRef(value=retired, authority=authority),))


@dataclass(frozen=True, kw_only=True)
class ChangeIdentifier(Command[CommandResult]):
    """Give a record a new identifier in its domain (ITI-30 A47): ``prior`` as received
    (MRG-1), the new identifier is the subject's own."""

    subject: Subject
    prior: tuple[IdentifierRef, ...]

    @classmethod
    def within(cls, authority: AuthorityRef, old: str, new: str) -> ChangeIdentifier:
        """``old`` becomes ``new`` in the domain ``authority`` names."""
        return cls(
            subject=RecordInput(identifier=IdentifierRef(value=new, authority=authority)),
            prior=(IdentifierRef(value=old, authority=authority),),
        )


@dataclass(frozen=True, kw_only=True)
class Link(Command[CommandResult]):
    """Declare two records the same person; an unknown record is created first (ITI-30 A24)."""

    a: Subject
    b: Subject
    kind: LinkKind = LinkKind.MANUAL


@dataclass(frozen=True, kw_only=True)
class Unlink(Command[CommandResult]):
    """Declare two records different people: ``b`` leaves ``a``'s person (ITI-30 A37)."""

    a: Subject
    b: Subject
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Remove(Command[CommandResult]):
    """Remove a source record (ITI-104 / PMIR delete)."""

    identifier: IdentifierRef


@dataclass(frozen=True, kw_only=True)
class DecideReview(Command[CommandResult]):
    """A steward's decision on a review item (``decision``: identity.mpi.review's
    StewardDecision). ``version``: the item's version the steward decided on; another current
    version refuses the decision (StaleVersion; None: not checked)."""

    item_id: int
    decision: Any
    reason: str | None = None
    version: int | None = None


@dataclass(frozen=True, kw_only=True)
class MergePersons(Command[CommandResult]):
    """A steward's merge of two persons (person ids): every active record of ``merged`` moves
    to ``survivor`` (manual links) and ``merged`` is marked merged into it; no-match assertions
    between their records are withdrawn and the open review items the merge settles are
    closed. ``*_version``: the persons' versions the steward saw (None: not checked)."""

    survivor: int
    merged: int
    survivor_version: int | None = None
    merged_version: int | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class UnlinkRecord(Command[CommandResult]):
    """A steward's unlink of a record (its id) from its person: the record becomes a person of
    its own (a manual link), with a no-match assertion against each other active record of the
    person it leaves, so that it is not linked to them again automatically. ``version``: the
    person's version the steward saw (None: not checked)."""

    record_id: int
    version: int | None = None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class Undo(Command[CommandResult]):
    """Undo a command, by its id, restoring what it changed (identity.mpi.review.undo)."""

    command_id: str


@dataclass(frozen=True, kw_only=True)
class PlannedLink:
    """Two records whose persons a new model links (record ids), at this probability."""

    a: int
    b: int
    probability: float


@dataclass(frozen=True, kw_only=True)
class PlannedReview:
    """A pair a new model sends to a steward (record ids), at this probability."""

    record_id: int
    other_record_id: int
    probability: float
    explanation: dict[str, Any] | None = None
    """Why the new model pairs them (the explanation a registration's review item carries)."""


@dataclass(frozen=True, kw_only=True)
class ApplyModel(Command[CommandResult]):
    """Put a stored match model version in service and make what its dry run planned: join
    the persons of ``links`` (records whose links are all automatic; a pair that changed since
    the plan is skipped), open ``reviews``, close the open review items ``linked`` (settled by
    a link) and ``dismissed`` (no longer a possible match). Manual and verified links are never
    changed. One command: undo reverts the model and every change together."""

    version: int
    links: tuple[PlannedLink, ...] = ()
    reviews: tuple[PlannedReview, ...] = ()
    linked: tuple[int, ...] = ()
    dismissed: tuple[int, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ImportRecords(Command[Any]):
    """Bulk load of an empty or populated index (identity.mpi.bulk): the records matched a
    chunk at a time with the feed's decisions and written with COPY, one transaction per
    chunk. Returns an ImportReport."""

    records: Iterable[RecordInput]  # read once, streamed
    workers: int = 2
    chunk: int = 20_000  # records per transaction (identity.mpi.bulk.CHUNK)


__all__ = [
    "ApplyModel",
    "ChangeIdentifier",
    "Command",
    "DecideReview",
    "Envelope",
    "ImportRecords",
    "Link",
    "Merge",
    "MergePersons",
    "PlannedLink",
    "PlannedReview",
    "Received",
    "Register",
    "Remove",
    "Subject",
    "Undo",
    "Unlink",
    "UnlinkRecord",
]
