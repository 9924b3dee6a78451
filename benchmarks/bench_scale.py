"""Registrations/s of new records against an existing index, to compare index sizes
(issue target: throughput at 1M persons >= 0.8 x throughput at 10k persons); with ``--match N``
also the latency of N core ``match`` queries (ten results with explanations, as $match).

Build the index first with `identity generate` + `identity import` (see README, Benchmarks),
then point this script at it: either the data directory of an embedded server
(--pgdata DIR/postgres) or a PostgreSQL URL (--url). New records come from the generator with
another seed and fresh identifiers, so they find candidates among the existing persons.

    python benchmarks/bench_scale.py --pgdata /tmp/bench1m/postgres

``--compare SMALL_URL LARGE_URL`` measures the target's ratio directly: the same new records
are registered into both indexes from one process, in alternating batches (``--rounds`` rounds
of ``--batch`` records on 1 connection and twice as many over 8 connections, each round
starting with the other index), so that both see the same moments of a noisy machine; it prints
each index's rate and the ratio of the large index's rate to the small one's, and the CPU
(this process and PostgreSQL's) per registration at each size with its ratio, the throughput
ratio when CPU is what bounds it (steadier than the rates on a shared machine).

    python benchmarks/bench_scale.py --compare postgresql://.../bench10k postgresql://.../bench1m
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

from bench_common import cpu_seconds, feed_order

from identity.batch import record_input
from identity.config import load_settings
from identity.loop import run as run_loop
from identity.loop import settle_heap
from identity.model import RecordInput
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database
from identity.store.embedded import EmbeddedPostgres
from identity.store.migrate import migrate
from matching.synth import generate

CONFIG = Path(__file__).with_name("bench.toml")


async def match_latency(mpi: Mpi, count: int, seed: int) -> str:
    samples = []
    for r in generate(count, 0.2, seed + 1)[:count]:
        start = time.perf_counter()
        await mpi.match(record_input(r).demographics, limit=10)
        samples.append(time.perf_counter() - start)
    samples.sort()

    def at(q: float) -> float:
        return samples[min(len(samples) - 1, int(q * len(samples)))] * 1000

    return f"match (10 results, explained): p50 {at(0.5):.1f} ms, p95 {at(0.95):.1f} ms"


def new_records(count: int, seed: int) -> list[RecordInput]:
    """``count`` generated records in a feed's order, with identifiers new to any index."""
    records = [record_input(r) for r in feed_order(generate(count, 0.2, seed), seed)]
    return [
        r.model_copy(update={"identifier": r.identifier.model_copy(
            update={"value": f"BENCH{seed}-{i}"})})
        for i, r in enumerate(records)
    ]


async def open_index(url: str) -> tuple[Database, Mpi, int]:
    """A pool and a started Mpi on the index at ``url`` (migrated), and its record count."""
    db = await Database.connect(url, min_size=8, max_size=9)
    async with db.connection() as conn:
        await migrate(conn)
        size = await conn.fetchval("SELECT count(*) FROM source_record")
    mpi = Mpi(db, load_settings(CONFIG))
    await mpi.start()
    return db, mpi, size


async def register_all(mpi: Mpi, records: Sequence[RecordInput], tasks: int) -> float:
    """Register ``records`` over ``tasks`` concurrent tasks (one pool connection each);
    seconds taken."""

    async def worker(k: int) -> None:
        for record in records[k::tasks]:
            await mpi.handle(Register(subject=record), Envelope(actor="bench"))

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(tasks)))
    return time.perf_counter() - started


async def compare(small: str, large: str, rounds: int, batch: int, seed: int) -> None:
    records = new_records(50 + rounds * batch * 3, seed)
    opened = [await open_index(small), await open_index(large)]
    settle_heap()  # as the service does once started
    try:
        for _, mpi, _ in opened:  # warm-up, not counted: plans, caches, the pool
            await register_all(mpi, records[:50], 1)
        seconds = {(i, tasks): 0.0 for i in range(2) for tasks in (1, 8)}
        cpu = {(i, tasks): 0.0 for i in range(2) for tasks in (1, 8)}  # this process + server
        ratios: dict[int, list[float]] = {1: [], 8: []}
        position = 50
        for r in range(rounds):
            one, eight = records[position:position + batch], \
                records[position + batch:position + batch * 3]
            position += batch * 3
            for tasks, part in ((1, one), (8, eight)):
                took = {}
                for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                    before = cpu_seconds()
                    took[i] = await register_all(opened[i][1], part, tasks)
                    after = cpu_seconds()
                    seconds[(i, tasks)] += took[i]
                    cpu[(i, tasks)] += sum(after.values()) - sum(before.values())
                ratios[tasks].append(took[0] / took[1])
        for tasks in (1, 8):
            done = rounds * batch * (1 if tasks == 1 else 2)
            small_rate = done / seconds[(0, tasks)]
            large_rate = done / seconds[(1, tasks)]
            print(f"{tasks} connection(s): index of {opened[0][2]:,} records {small_rate:.0f}/s, "
                  f"of {opened[1][2]:,} records {large_rate:.0f}/s; ratio "
                  f"{large_rate / small_rate:.2f} (rounds {min(ratios[tasks]):.2f}–"
                  f"{max(ratios[tasks]):.2f})")
            small_cpu, large_cpu = (1000 * cpu[(i, tasks)] / done for i in (0, 1))
            print(f"  CPU per registration (this process and PostgreSQL): {small_cpu:.2f} ms "
                  f"and {large_cpu:.2f} ms; ratio {small_cpu / large_cpu:.2f}")
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        for db, _, _ in opened:
            await db.close()


async def measure(url: str, single: int, concurrent: int, seed: int, matches: int) -> None:
    db, mpi, size = await open_index(url)
    try:
        records = new_records(single + concurrent, seed)
        settle_heap()  # as the service does once started
        one = single / await register_all(mpi, records[:single], 1)
        rest = records[single:]
        eight = len(rest) / await register_all(mpi, rest, 8)
        print(
            f"index of {size} records: {one:.0f} new records/s on 1 connection, "
            f"{eight:.0f}/s on 8; load average {os.getloadavg()[0]:.1f}"
        )
        if matches:
            print(await match_latency(mpi, matches, seed))
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pgdata", type=Path, help="data directory of an embedded server")
    where.add_argument("--url", help="PostgreSQL URL of the index")
    where.add_argument("--compare", nargs=2, metavar=("SMALL_URL", "LARGE_URL"),
                       help="register the same records into both indexes, alternating")
    parser.add_argument("--rounds", type=int, default=10, help="with --compare")
    parser.add_argument("--batch", type=int, default=100,
                        help="with --compare: records per round on 1 connection (x2 on 8)")
    parser.add_argument("--single", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--match", type=int, default=0, metavar="N",
                        help="also time N core match queries")
    args = parser.parse_args()
    if args.compare:
        run_loop(compare(*args.compare, args.rounds, args.batch, args.seed))
        return
    if args.url:
        run_loop(measure(args.url, args.single, args.concurrent, args.seed, args.match))
        return
    embedded = EmbeddedPostgres(args.pgdata.parent)
    embedded.pgdata = args.pgdata.resolve()
    url = embedded.start_sync()
    try:
        run_loop(measure(url, args.single, args.concurrent, args.seed, args.match))
    finally:
        embedded.stop_sync()


if __name__ == "__main__":
    main()
