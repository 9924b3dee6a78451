"""The event loop the service runs on (config key ``event_loop``): uvloop where it is
installed (``auto``, the default), or asyncio's own.

uvloop (libuv) cuts the event loop's share of the CPU that every database round trip and
every MLLP or HTTP exchange costs; asyncpg is built to take advantage of it. Measured with
``benchmarks/bench_core_register.py``: Python CPU per registration 1.74 ms on uvloop, 2.0 ms on
the standard loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from identity.errors import ConfigError

T = TypeVar("T")


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's default loop. ``choice``: auto (uvloop
    when installed), uvloop (required), asyncio."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError("event_loop = 'uvloop' but uvloop is not installed") from exc
        return None
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: the kind of a running loop (for the start-up log line)."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run`` on the chosen event loop."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
