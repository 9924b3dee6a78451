"""What the door benchmarks share: the client in a process of its own (as a real sender is, so
that its parsing and framing do not share the server's event loop), the database they run
against (a scratch one, or an existing index), fresh identifiers for an existing index, and
latency percentiles."""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import statistics
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from identity.loop import run as run_loop
from matching.synth import SynthRecord


def feed_order(records: list[SynthRecord], seed: int) -> list[SynthRecord]:
    """The records in the order a feed of many senders delivers them: shuffled (seeded).
    ``matching.synth.generate`` lists each household's members, and each person's duplicate
    records, next to each other; sent in that order over 8 connections, 61% of new records at
    1M shared a locked blocking key with one of the 7 sent just before (each waits for the
    other's commit), against 0.35% shuffled. That measured the file's order, not the feed."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    return shuffled


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
    return run_loop(function(*args))


def _with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    return f"{base.rpartition('/')[0]}/{database}" + (f"?{query}" if query else "")


@asynccontextmanager
async def bench_database(index: str | None, server_url: str) -> AsyncIterator[str]:
    """The URL to run against: ``index`` as it is (kept), else a scratch database on the
    server of ``server_url``, dropped at the end."""
    if index:
        yield index
        return
    name = f"identity_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield _with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def renumber(records: Iterable[SynthRecord], prefix: str) -> None:
    """Prefix each record's own identifier (in its source domain), so that the records are new
    to an index imported from another generated population (whose numbering restarts)."""
    for record in records:
        for identifier in record.identifiers:
            if identifier["domain"] == record.source_domain:
                identifier["value"] = prefix + identifier["value"]


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return (f"n={len(ordered)} p50={at(0.50):.2f} ms p95={at(0.95):.2f} ms "
            f"p99={at(0.99):.2f} ms mean={statistics.fmean(ordered) * 1000:.2f} ms")
