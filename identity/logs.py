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


def setup_logging(level: str = "INFO", *, with_pid: bool = False) -> None:
    """``with_pid``: each line names its process (``pid=``), for a service of several worker
    processes writing to one stream."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(with_pid))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "asyncio", "pgserver"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
