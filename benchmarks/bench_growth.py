"""Registration rate as an index grows from empty, window by window (issue 19: "no collapse
with autovacuum off: the rate by the 100,000th record >= 0.8 x the rate at 10,000").

Registers ``--records`` generated records through the core (``Register``, as ITI-8 does) over
``--tasks`` concurrent tasks (one pooled connection each, as that many MLLP senders), into a
scratch database on the server of ``--database-url``, with the service's own maintenance task
running (``[maintenance]`` defaults, as ``identity serve`` runs it), and prints per window of
``--window`` records the rate, the CPU per record of this process and of PostgreSQL's
processes on the machine, and the server's autovacuum setting; then the ratio of the last
window's rate to the rate of the window that ends at 10,000 records.

    python benchmarks/bench_growth.py --records 100000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Iterator

from bench_common import bench_database, cpu_seconds
from bench_scale import new_records, open_index

from identity.app import outbox_consumers
from identity.loop import run as run_loop
from identity.loop import settle_heap
from identity.maintenance import MaintenanceSchedule
from identity.model import RecordInput
from identity.mpi import Envelope, Mpi, Register

REFERENCE = 10_000  # the reference point: the rate at 10,000 records


async def _worker(mpi: Mpi, queue: Iterator[RecordInput]) -> None:
    for record in queue:
        await mpi.handle(Register(subject=record), Envelope(actor="bench"))


async def grow(server_url: str, records: int, window: int, tasks: int, seed: int) -> None:
    async with bench_database(None, server_url) as url:
        db, mpi, _ = await open_index(url)
        maintenance = MaintenanceSchedule(db, mpi.settings.maintenance,
                                          outbox_consumers(mpi.settings))
        maintenance.start()
        try:
            async with db.read() as conn:
                autovacuum = await conn.fetchval("SHOW autovacuum")
            print(f"server autovacuum: {autovacuum}; {tasks} tasks; window {window:,} records",
                  flush=True)
            inputs = new_records(records, seed)[:records]
            settle_heap()
            rates: dict[int, float] = {}
            for start in range(0, len(inputs), window):
                part = inputs[start:start + window]
                before, started = cpu_seconds(), time.perf_counter()
                queue = iter(part)  # one shared iterator: each task takes the next record
                await asyncio.gather(*(_worker(mpi, queue) for _ in range(tasks)))
                seconds, after = time.perf_counter() - started, cpu_seconds()
                end = start + len(part)
                rates[end] = len(part) / seconds
                own = 1000 * (after["client"] + after["server"] - before["client"]
                              - before["server"]) / len(part)
                pg = 1000 * (after["postgres"] - before["postgres"]) / len(part)
                # every PostgreSQL process on the machine is counted: other clients' backends
                # that ended during the window take their CPU with them
                postgres = f"{pg:.2f} ms" if pg >= 0 else "n/a (other backends ended)"
                print(f"records {start + 1:>9,}-{end:<9,} {rates[end]:7.0f}/s  CPU per record: "
                      f"this process {own:.2f} ms + PostgreSQL {postgres}  load average "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
            reference = min(rates, key=lambda end: abs(end - REFERENCE))
            last = max(rates)
            print(f"rate by record {last:,}: {rates[last]:.0f}/s; at {reference:,}: "
                  f"{rates[reference]:.0f}/s; ratio {rates[last] / rates[reference]:.2f} "
                  "(target >= 0.8)")
        finally:
            await maintenance.stop()
            await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=91)
    parser.add_argument("--database-url", required=True,
                        help="a PostgreSQL server's maintenance URL (a scratch database is made "
                        "on it and dropped at the end)")
    args = parser.parse_args()
    run_loop(grow(args.database_url, args.records, args.window, args.tasks, args.seed))


if __name__ == "__main__":
    main()
