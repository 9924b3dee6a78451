"""Registrations/s of new records against an existing index, to compare index sizes
(issue target: throughput at 1M persons >= 0.8 x throughput at 10k persons); with ``--match N``
also the latency of N core ``match`` queries (ten results with explanations, as $match).

Build the index first with `identity generate` + `identity import` (see README, Benchmarks),
then point this script at it: either the data directory of an embedded server
(--pgdata DIR/postgres) or a PostgreSQL URL (--url). New records come from the generator with
another seed and fresh identifiers, so they find candidates among the existing persons.

    python benchmarks/bench_scale.py --pgdata /tmp/bench1m/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path

from bench_common import feed_order

from identity.batch import record_input
from identity.config import load_settings
from identity.loop import run as run_loop
from identity.mpi import Mpi
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


async def measure(url: str, single: int, concurrent: int, seed: int, matches: int) -> None:
    settings = load_settings(CONFIG)
    db = await Database.connect(url, min_size=8, max_size=9)
    try:
        async with db.connection() as conn:
            await migrate(conn)
            size = await conn.fetchval("SELECT count(*) FROM source_record")
        mpi = Mpi(db, settings)
        await mpi.start()
        records = [
            record_input(r).model_copy(
                update={
                    "identifier": record_input(r).identifier.model_copy(
                        update={"value": f"BENCH{seed}-{i}"}
                    )
                }
            )
            for i, r in enumerate(feed_order(generate(single + concurrent, 0.2, seed), seed))
        ]
        started = time.perf_counter()
        for record in records[:single]:
            await mpi.register(record, source=None, actor="bench")
        one = single / (time.perf_counter() - started)
        rest = records[single:]

        async def worker(k: int) -> None:
            for record in rest[k::8]:
                await mpi.register(record, source=None, actor="bench")

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(8)))
        eight = len(rest) / (time.perf_counter() - started)
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
    parser.add_argument("--single", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--match", type=int, default=0, metavar="N",
                        help="also time N core match queries")
    args = parser.parse_args()
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
