"""The MPI core: the only place that decides identity. Front doors make a command
(identity.mpi.commands) and an Envelope and call ``Mpi.handle`` or ``Mpi.answer``."""

from identity.mpi.commands import (
    ApplyModel,
    ChangeIdentifier,
    DecideReview,
    Envelope,
    ImportRecords,
    Link,
    Merge,
    MergePersons,
    PlannedLink,
    PlannedReview,
    Received,
    Register,
    Remove,
    Undo,
    Unlink,
    UnlinkRecord,
)
from identity.mpi.review import StewardDecision
from identity.mpi.service import Mpi

__all__ = [
    "ApplyModel",
    "ChangeIdentifier",
    "DecideReview",
    "Envelope",
    "ImportRecords",
    "Link",
    "Merge",
    "MergePersons",
    "Mpi",
    "PlannedLink",
    "PlannedReview",
    "Received",
    "Register",
    "Remove",
    "StewardDecision",
    "Undo",
    "Unlink",
    "UnlinkRecord",
]
