"""Waiting in tests for what another task or process does: poll a condition until it holds,
rather than sleep a fixed time and hope it happened (too short on a loaded machine, too long
everywhere else)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], object | Awaitable[object]],
    within: float = 5.0,
    interval: float = 0.01,
    *,
    what: str | None = None,
) -> None:
    """Return as soon as ``predicate()`` (a plain or an async callable) is true; fail the test
    with an AssertionError naming ``what`` (default: the predicate) after ``within`` seconds.

    The predicate is evaluated at once, then every ``interval`` seconds; an evaluation still
    running at the deadline is cancelled. Exceptions it raises propagate unchanged."""
    description = what or getattr(predicate, "__qualname__", repr(predicate))
    deadline = asyncio.timeout(within)
    try:
        async with deadline:
            while True:
                result = predicate()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return
                await asyncio.sleep(interval)
    except TimeoutError:
        if not deadline.expired():
            raise  # the predicate's own timeout, not ours
        raise AssertionError(f"still not true after {within} s: {description}") from None
