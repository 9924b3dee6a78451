"""The service process's runtime: the event loop it runs on (config key ``event_loop``):
uvloop where it is installed (``auto``, the default), or asyncio's own; and the garbage
collector's view of what start-up loaded (:func:`settle_heap`).

uvloop (libuv) cuts the event loop's share of the CPU that every database round trip and
every MLLP or HTTP exchange costs; asyncpg is built to take advantage of it. Measured with
``benchmarks/bench_core_register.py``: Python CPU per registration 1.74 ms on uvloop, 2.0 ms on
the standard loop."""

from __future__ import annotations

import asyncio
import gc
import time
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


def settle_heap() -> tuple[int, float]:
    """Collect start-up's garbage, then freeze what is left (``gc.freeze``): the matching
    model, the name-frequency tables and the caches filled at start-up live as long as the
    process, and a full collection no longer walks them. Measured at a 1M index: a full
    collection took 25 ms in a freshly started core (0.0 ms after the freeze); in the HL7 door
    benchmark (whose process also holds its generated population) the two full collections
    made while serving paused the event loop 105 and 101 ms without the freeze, 7.6 and 6.4 ms
    with it. Returns (objects frozen, milliseconds the collection took)."""
    started = time.perf_counter()
    gc.collect()
    elapsed = (time.perf_counter() - started) * 1000
    gc.freeze()
    return gc.get_freeze_count(), elapsed


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """``asyncio.run`` on the chosen event loop."""
    try:
        factory = loop_factory(choice)
    except ConfigError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
