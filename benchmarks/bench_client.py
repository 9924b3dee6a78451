"""A benchmark's client in a process of its own, as a real sender is (shared by the door
benchmarks): its parsing and framing then do not share the server's event loop."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any


class Client:
    """Runs client coroutine functions (module-level, picklable arguments) in a child process
    or, with ``same_process``, in the caller's event loop."""

    def __init__(self, same_process: bool) -> None:
        self.pool = None if same_process else ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        )

    async def run(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        if self.pool is None:
            return await function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, _in_child, function, args)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _in_child(function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    return asyncio.run(function(*args))
