"""Typed errors of the MPI core. Each front door maps them to its wire form
(ERR segments with AE/AR for HL7 v2, OperationOutcome for FHIR, problem JSON for the steward API).
"""

from __future__ import annotations


class IdentityError(Exception):
    """Base of every error this service raises on purpose."""


class ConfigError(IdentityError):
    """The configuration is invalid; the message names the key."""


class StoreUnavailable(IdentityError):
    """The database cannot be reached; nothing was applied."""


class StoreConflict(StoreUnavailable):
    """The database rolled the transaction back (deadlock, serialization failure): nothing was
    applied and the same command may simply be sent again."""


class WorkerFailed(IdentityError):
    """A worker process of ``identity serve`` could not start or kept failing."""


class AlreadyProcessed(IdentityError):
    """The message (sender, control id) was applied before; nothing was applied now.
    ``reply`` is the reply stored with the first application, to send again."""

    def __init__(self, reply: str) -> None:
        super().__init__("message already processed")
        self.reply = reply


class MpiError(IdentityError):
    """A command of the MPI core was refused; nothing was changed."""


class InvalidInput(MpiError):
    """The command's input is malformed (a field is missing or has a bad value)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownDomain(MpiError):
    """An assigning authority that is neither configured nor auto-registered."""

    def __init__(self, authority: str, *, role: str = "source") -> None:
        super().__init__(f"unknown assigning authority: {authority}")
        self.authority = authority
        self.role = role  # "source" or "target"


class UnknownTargetDomain(UnknownDomain):
    """A requested target domain (PIX What Domains Returned, targetSystem) is unknown."""

    def __init__(self, authority: str, *, position: int = 1) -> None:
        super().__init__(authority, role="target")
        self.position = position  # 1-based position of the bad domain in the request


class AmbiguousDomain(MpiError):
    """Namespace and OID given together name two different configured domains."""


class UnknownIdentifier(MpiError):
    """The domain is known but holds no active record with that identifier."""

    def __init__(self, domain: str, value: str) -> None:
        super().__init__(f"no record {value!r} in domain {domain}")
        self.domain = domain
        self.value = value


class ReusedMessageId(MpiError):
    """A sender's message control id that an earlier message with other content already
    used: refused (HL7 0357 205), never answered with the earlier message's reply."""

    def __init__(self, sender: str, message_id: str) -> None:
        super().__init__(
            f"message control id {message_id!r} of {sender} was used before for another message"
        )
        self.sender = sender
        self.message_id = message_id


class SourceNotAuthorized(MpiError):
    """The sender may not assign identifiers in this domain."""

    def __init__(self, source: str, domain: str) -> None:
        super().__init__(f"source {source!r} may not assign identifiers in domain {domain}")
        self.source = source
        self.domain = domain


class IdentifierConflict(MpiError):
    """The new identifier already belongs to another record (change of identifier, merge)."""


class InvalidState(MpiError):
    """The operation does not apply to the record or person in its current state."""


class NotFound(MpiError):
    """A person, record or review item that does not exist."""


class StaleVersion(MpiError):
    """A steward's decision was made on a version of a review item or person that is no
    longer the current one (someone else changed it first); nothing was changed."""

    def __init__(self, entity: str, entity_id: int, expected: int, current: int) -> None:
        super().__init__(
            f"{entity} {entity_id} is at version {current}, not {expected}: it changed since "
            "it was read"
        )
        self.entity = entity
        self.entity_id = entity_id
        self.expected = expected
        self.current = current
