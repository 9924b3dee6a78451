"""The CPU the HL7 v2 door's audit records cost this process, part by part (docs/audit.md).

On a shared machine the end-to-end door benchmark (bench_hl7_door.py) swings more from run to
run than an audit record costs, so this one measures the parts in one process, in alternated
rounds (the machine's load hits each alike), on a scratch database:

- ``A04 record``: making an A04's audit record as the door does (its PID-3 already parsed for
  the command) and the JSON rows of the statement;
- ``A04 statement``: the statement that writes it in the command's transaction
  (AuditStore.insert's), beside ``trivial statement`` (``SELECT 1``), the floor of any round
  trip, on a connection with ``synchronous_commit = off`` (no commit is timed);
- ``PIX query``: a query's records (made after its reply is written) and its share of the
  background writer's batch.

    python benchmarks/bench_hl7_audit.py [--rounds 10] [--count 300] \
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import asyncpg
from bench_common import bench_database

from identity.audit.record import Outcome
from identity.config import Settings
from identity.hl7v2.feed import FeedHandler, _Command, _FeedAudit
from identity.hl7v2.queries import _Answered, _audit
from identity.hl7v2.tokenizer import parse_message
from identity.loop import run as run_loop
from identity.mpi import Mpi
from identity.store.audit import INSERT_STATEMENT, _subtypes
from identity.store.db import Database
from identity.store.migrate import migrate

A04 = ("MSH|^~\\&|ADT_A|FAC|IDENTITY|MPI|20260101120000||ADT^A04^ADT_A01|C1|P|2.5\r"
       "EVN|A04|20260101120000\r"
       "PID|1||A1^^^HOSPA~123456789^^^SSA&2.16.840.1.113883.4.1&ISO||SMITH^JOHN||19800312|M\r"
       "PV1|1|N\r")  # fmt: skip
PIX = ("MSH|^~\\&|PIXC|FAC|IDENTITY|MPI|20260101120000||QBP^Q23^QBP_Q21|Q1|P|2.5\r"
       "QPD|IHE PIX Query|T1|A1^^^HOSPA\rRCP|I\r")  # fmt: skip
DOMAINS = [
    {"namespace": "HOSPA", "oid": "1.2.3.4.5.1", "sources": ["ADT_A"]},
    {"namespace": "SSA", "oid": "2.16.840.1.113883.4.1", "identifies_person": True},
]


async def started_core(url: str) -> tuple[Database, Mpi]:
    """The index at ``url`` migrated, a pool on it and a started core with DOMAINS."""
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    db = await Database.connect(url, min_size=2, max_size=4)
    mpi = Mpi(db, Settings(domains=DOMAINS))
    await mpi.start()
    return db, mpi


async def main(args: argparse.Namespace) -> None:
    async with bench_database(None, args.database_url) as url:
        db, mpi = await started_core(url)
        a04, pix = parse_message(A04), parse_message(PIX)
        received = _Command()
        FeedHandler(mpi)._command(a04, "A04", received)  # PID-3 parsed, as for the command

        def record() -> list[dict[str, object]]:
            records = _FeedAudit(mpi, a04, received)(Outcome.SUCCESS, None)
            return [{"r": r.to_json(), "a": r.agent, "q": r.requestor, "s": _subtypes(r)}
                    for r in records]  # fmt: skip

        rows = record()
        timings: dict[str, list[float]] = {}
        async with db.connection() as c:
            await c.execute("SET synchronous_commit = off")
            parts: dict[str, Callable[[], object]] = {
                "trivial statement": lambda: c.fetch("SELECT 1 AS id"),
                "A04 statement": lambda: c.fetch(INSERT_STATEMENT, rows, None),
                "A04 record": record,
            }
            for _ in range(args.rounds):
                for name, part in parts.items():
                    start = time.process_time()
                    for _ in range(args.count):
                        result = part()
                        if hasattr(result, "__await__"):
                            await result  # type: ignore[misc]
                    timings.setdefault(name, []).append(
                        (time.process_time() - start) / args.count)
        for _ in range(args.rounds):
            start = time.process_time()
            for _ in range(args.count):
                answered = _Answered(code="AA", status="OK",
                                     patients=[["A1^^^&1.2.3.4.5.1&ISO", "1^^^&1.3.6&ISO"]])
                _audit(mpi, "ITI-9", pix, answered)
            await mpi.audit.flush()
            timings.setdefault("PIX query", []).append(
                (time.process_time() - start) / args.count)
        for name, values in timings.items():
            values.sort()
            print(f"{name}: median {values[len(values) // 2] * 1e6:.0f} µs CPU "
                  f"(min {values[0] * 1e6:.0f}, max {values[-1] * 1e6:.0f}; "
                  f"{args.rounds} rounds of {args.count})")
        await mpi.stop()
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--database-url",
                        default="postgresql://postgres@127.0.0.1:5432/postgres")
    run_loop(main(parser.parse_args()))
