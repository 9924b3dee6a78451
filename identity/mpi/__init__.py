"""The MPI core: the only place that decides identity. Front doors make a command
(identity.mpi.commands) and an Envelope and call ``Mpi.handle`` or ``Mpi.answer``."""

from identity.mpi.commands import (
    ChangeIdentifier,
    DecideReview,
    Envelope,
    ImportRecords,
    Link,
    Merge,
    Received,
    Register,
    Remove,
    Undo,
    Unlink,
)
from identity.mpi.review import StewardDecision
from identity.mpi.service import Mpi

__all__ = [
    "ChangeIdentifier",
    "DecideReview",
    "Envelope",
    "ImportRecords",
    "Link",
    "Merge",
    "Mpi",
    "Received",
    "Register",
    "Remove",
    "StewardDecision",
    "Undo",
    "Unlink",
]
