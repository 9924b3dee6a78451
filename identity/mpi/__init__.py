"""The MPI core: the only place that decides identity. Front doors call ``Mpi``."""

from identity.mpi.review import StewardDecision
from identity.mpi.service import Mpi

__all__ = ["Mpi", "StewardDecision"]
