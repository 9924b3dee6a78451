"""Registrations per second of the MPI core (``Mpi.register``), without a front door.

In a fresh schema of the database named by ``--url`` (dropped at the end), with the
configuration of ``benchmarks/bench.toml``, on a synthetic population (``matching.synth``):

- preload: ``--preload`` new records over ``--connections`` concurrent tasks (an index to match
  against; measured too), then ANALYZE (``--no-analyze``: planner statistics of the empty
  tables, as before autovacuum's first pass);
- new records on 1 connection, then on ``--connections`` concurrent tasks (one pool connection
  each);
- updates (A08-like re-registration of a known record, partial-update semantics) on 1
  connection, then on ``--connections`` tasks;
- PostgreSQL's own durable single-row INSERT + COMMIT rate on 1 and ``--connections``
  connections in the same run: the ceiling of any command that ACKs after commit.

``--rounds`` repeats the measured phases (each round with new records) and prints the median.
``--profile`` runs one extra single-connection round under cProfile and prints the top
functions; ``--count-queries`` prints database round trips per registration.

    python benchmarks/bench_core_register.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--preload 1000] [--single 500] [--multi 1000] [--updates 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from bench_common import feed_order

from identity.batch import record_input
from identity.config import Settings, load_settings
from identity.loop import run as run_loop
from identity.loop import settle_heap
from identity.model import RecordInput
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database
from identity.store.migrate import migrate
from matching.synth import generate

CONFIG = Path(__file__).with_name("bench.toml")


class QueryCounter:
    """Counts statements sent by asyncpg connections (each one a round trip)."""

    METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")

    def __init__(self) -> None:
        self.count = 0
        self._originals: dict[str, Any] = {}

    def install(self) -> None:
        cls = asyncpg.connection.Connection
        for name in self.METHODS:
            original = getattr(cls, name)
            self._originals[name] = original

            def wrapper(*args: Any, __original: Any = original, **kwargs: Any) -> Any:
                self.count += 1
                return __original(*args, **kwargs)

            setattr(cls, name, wrapper)

    def uninstall(self) -> None:
        for name, original in self._originals.items():
            setattr(asyncpg.connection.Connection, name, original)


CPU_MS: dict[str, list[float]] = {}
"""Milliseconds of this process's CPU per item, per phase (the Python side of a command)."""


async def timed(
    items: Sequence[RecordInput], tasks: int, call: Callable[[RecordInput], Awaitable[Any]]
) -> float:
    """Run ``call`` over ``items`` with ``tasks`` concurrent tasks; return items per second."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await call(item)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - start
    CPU_MS.setdefault(f"{tasks}", []).append((time.process_time() - cpu) / len(items) * 1000)
    return len(items) / elapsed


async def commit_rate(url: str, schema: str, count: int, connections: int) -> float:
    """Durable single-row INSERT commits per second (autocommit, synchronous_commit as set)."""
    settings = {"search_path": schema}
    setup = await asyncpg.connect(url, server_settings=settings)
    await setup.execute(
        "CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, v integer NOT NULL)"
    )
    await setup.close()
    per = count // connections
    conns = [await asyncpg.connect(url, server_settings=settings) for _ in range(connections)]

    async def worker(conn: asyncpg.Connection) -> None:
        for value in range(per):
            await conn.execute("INSERT INTO bench_commit (v) VALUES ($1)", value)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in conns))
        return per * connections / (time.perf_counter() - start)
    finally:
        for conn in conns:
            await conn.close()


class Bench:
    def __init__(self, mpi: Mpi, records: list[RecordInput], connections: int) -> None:
        self.mpi = mpi
        self.records = records
        self.position = 0
        self.registered: list[RecordInput] = []
        self.connections = connections

    def take(self, count: int) -> list[RecordInput]:
        batch = self.records[self.position : self.position + count]
        if len(batch) < count:
            raise SystemExit("not enough generated records: raise --persons")
        self.position += count
        return batch

    async def register(self, record: RecordInput) -> None:
        await self.mpi.handle(
            Register(subject=record), Envelope(actor="bench", message_id="bench")
        )

    async def new(self, count: int, tasks: int) -> float:
        batch = self.take(count)
        rate = await timed(batch, tasks, self.register)
        self.registered.extend(batch)
        return rate

    async def updates(self, count: int, tasks: int, offset: int) -> float:
        known = self.registered
        batch = [known[(offset + i * 7) % len(known)] for i in range(count)]
        if tasks > 1:  # one identifier at a time: updates of one record would only queue
            batch = list({(r.identifier.authority, r.identifier.value): r for r in batch}.values())
        return await timed(batch, tasks, self.register)


def median_line(label: str, values: list[float]) -> str:
    shown = " ".join(f"{v:,.0f}" for v in values)
    return f"| {label:<40} | {statistics.median(values):>9,.0f} | {shown:<24} |"


async def run(args: argparse.Namespace) -> None:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(args.url)
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    await admin.execute(f'SET search_path TO "{schema}"')
    await migrate(admin)
    db = await Database.connect(
        args.url,
        min_size=args.connections,
        max_size=args.connections,
        server_settings={"search_path": schema},
    )
    try:
        overrides: dict[str, Any] = {"log_level": "WARNING"}
        if args.consumers:
            overrides["notify"] = [
                {"name": f"consumer{i}", "host": "127.0.0.1", "port": 9}
                for i in range(args.consumers)
            ]
        settings: Settings = load_settings(CONFIG, **overrides)
        mpi = Mpi(db, settings)
        await mpi.start()
        per_round = args.single + args.multi
        needed = args.preload + per_round * args.rounds + (args.single if args.profile else 0)
        synth = feed_order(
            generate(max(args.persons, int(needed / 1.1) + 50), 0.2, seed=args.seed), args.seed
        )
        records = [record_input(r) for r in synth]
        bench = Bench(mpi, records, args.connections)
        settle_heap()  # as the service does once started
        version = await db.pool.fetchval("SHOW server_version")
        sync = await db.pool.fetchval("SHOW synchronous_commit")
        print(f"PostgreSQL {version}, synchronous_commit={sync}, load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {len(records)} records generated")

        preload = await bench.new(args.preload, args.connections)
        print(f"preload {args.preload} records over {args.connections} tasks: {preload:,.0f}/s")
        if not args.no_analyze:  # planner statistics as a running index has them
            await admin.execute(
                "ANALYZE source_record, blocking_key, link, person, record_identifier,"
                " review_item, no_match, history, outbox, processed_message"
            )
        if args.count_queries:
            counter = QueryCounter()
            counter.install()
            try:
                await bench.new(100, 1)
                new_trips = counter.count / 100
                counter.count = 0
                await bench.updates(100, 1, 3)
                update_trips = counter.count / 100
            finally:
                counter.uninstall()
            print(f"round trips per registration: new {new_trips:.1f}, update {update_trips:.1f}"
                  " (BEGIN and COMMIT included)")

        rows: dict[str, list[float]] = {}
        c = args.connections
        CPU_MS.clear()
        for index in range(args.rounds):
            rows.setdefault("new records, 1 connection", []).append(
                await bench.new(args.single, 1))
            rows.setdefault(f"new records, {c} connections", []).append(
                await bench.new(args.multi, c))
            rows.setdefault("updates (A08-like), 1 connection", []).append(
                await bench.updates(args.updates, 1, index))
            rows.setdefault(f"updates (A08-like), {c} connections", []).append(
                await bench.updates(args.updates * 2, c, index + 1))
            rows.setdefault("PostgreSQL INSERT+COMMIT, 1 connection", []).append(
                await commit_rate(args.url, schema, 2000, 1))
            rows.setdefault(f"PostgreSQL INSERT+COMMIT, {c} connections", []).append(
                await commit_rate(args.url, schema, 6000, c))

        print(f"index: {len(bench.registered)} records; load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"| {'per second':<40} | {'median':>9} | {'rounds':<24} |")
        print(f"|{'-' * 42}|{'-' * 11}|{'-' * 26}|")
        for label, values in rows.items():
            print(median_line(label, values))
        for tasks, values in CPU_MS.items():
            print(f"Python CPU per registration, {tasks} task(s): "
                  f"{statistics.median(values):.2f} ms (median of new and update phases)")

        if args.profile:
            profiler = cProfile.Profile()
            batch = bench.take(args.single)
            profiler.enable()
            start = time.perf_counter()
            for record in batch:
                await bench.register(record)
            elapsed = time.perf_counter() - start
            profiler.disable()
            print(f"\nprofile: {len(batch)} new records on 1 connection, "
                  f"{len(batch) / elapsed:,.0f}/s under cProfile")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            if args.profile_out:
                profiler.dump_stats(args.profile_out)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    finally:
        await db.close()
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "IDENTITY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--persons", type=int, default=0, help="synthetic persons")
    parser.add_argument("--preload", type=int, default=1000)
    parser.add_argument("--single", type=int, default=500)
    parser.add_argument("--multi", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--consumers", type=int, default=0, help="ITI-10 consumers (fan-out)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--profile-out", metavar="FILE",
                        help="with --profile: also write the cProfile data (for pstats)")
    parser.add_argument("--count-queries", action="store_true")
    parser.add_argument(
        "--no-analyze", action="store_true", help="no ANALYZE after the preload (cold statistics)"
    )
    run_loop(run(parser.parse_args()))


if __name__ == "__main__":
    main()
