"""Structured logging: one line per event, ``key=value`` pairs after the level and logger.

Messages at INFO and above carry identifiers and counts, never patient demographics.
"""

from __future__ import annotations

import logging
import sys
import time


class _Formatter(logging.Formatter):
    def __init__(self, with_pid: bool = False) -> None:
        super().__init__()
        self.with_pid = with_pid

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        pid = f"pid={record.process} " if self.with_pid else ""
        line = (
            f"ts={stamp}.{int(record.msecs):03d}Z level={record.levelname} {pid}"
            f"logger={record.name} {record.getMessage()}"
        )
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


class _BadRequestFilter(logging.Filter):
    """aiohttp logs a request it cannot parse (a header over its size limit, a malformed
    request line) at ERROR with the parser's exception, whose text quotes the offending bytes:
    an ``Authorization`` header's token among them. Keep one line without them."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = "event=http_bad_request error=%s status=%s"
            record.args = (type(exc).__name__, getattr(exc, "code", ""))
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


BAD_REQUEST_FILTER = _BadRequestFilter()


def quiet_bad_requests() -> None:
    """Install the filter on aiohttp's server logger (idempotent)."""
    logger = logging.getLogger("aiohttp.server")
    if BAD_REQUEST_FILTER not in logger.filters:
        logger.addFilter(BAD_REQUEST_FILTER)


def setup_logging(level: str = "INFO", *, with_pid: bool = False) -> None:
    """``with_pid``: each line names its process (``pid=``), for a service of several worker
    processes writing to one stream."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(with_pid))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_bad_requests()
    for noisy in ("aiohttp.access", "asyncio", "pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
