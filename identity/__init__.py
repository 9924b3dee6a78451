"""identity: a PIX/PDQ master patient index."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("identity-mpi")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"
