"""The CPU that the statements issue 19's CPU-per-A04 work changed cost, old way against new,
in one process, in alternated rounds (the shared machine's load hits both alike), on a scratch
database: this process's CPU and its PostgreSQL backend's (from /proc: PostgreSQL on this
machine), per operation.

- ``events + audit``: what a feed message's unit of work writes at flush, an A04's history rows,
  stored reply and audit record, as two statements (append_events, then the audit store's
  insert: before) and as one (append_events with the audit rows: after);
- ``lock_keys``: the advisory locks of a new record's blocking keys (12), by the PL/pgSQL loop
  of one PERFORM per key (before) and by one statement (after).

Each operation runs in a transaction of its own (BEGIN and COMMIT included in both ways, with
``synchronous_commit = off`` so that no flush is timed).

    python benchmarks/bench_a04_statements.py [--rounds 6] [--count 1500] \
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench_common import bench_database
from bench_hl7_audit import A04, started_core

from identity.audit.record import Outcome
from identity.hl7v2.feed import FeedHandler, _Command, _FeedAudit
from identity.hl7v2.tokenizer import parse_message
from identity.loop import run as run_loop
from identity.store.audit import AuditStore, audit_rows
from identity.store.keys import key_hash
from identity.store.repository import Repository

MIGRATION_0001 = Path(__file__).parents[1] / "identity/store/migrations/0001_core.sql"


def loop_function() -> str:
    """lock_keys as migration 0001 made it (a loop of one PERFORM per key), as
    pg_temp.lock_keys_loop."""
    text = MIGRATION_0001.read_text()
    start = text.index("CREATE FUNCTION lock_keys(")
    end = text.index("$$;", start) + len("$$;")
    return text[start:end].replace("lock_keys(", "pg_temp.lock_keys_loop(", 1)


def backend_seconds(pid: int) -> float:
    """CPU seconds (user + system) of one PostgreSQL backend so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace) -> None:
    async with bench_database(None, args.database_url) as url:
        db, mpi = await started_core(url)
        a04 = parse_message(A04)
        received = _Command()
        FeedHandler(mpi)._command(a04, "A04", received)  # PID-3 parsed, as for the command
        rows = audit_rows(_FeedAudit(mpi, a04, received)(Outcome.SUCCESS, None))
        keys = [key_hash(f"bench:key:{i}") for i in range(12)]
        counter = iter(range(10**9))

        def events() -> tuple[list[tuple[object, ...]], tuple[str, str, str, str]]:
            command, n = uuid.uuid4(), next(counter)
            history = [
                (command, event, entity, n, n, n, None, {"identifier": f"A{n}", "k": "v"},
                 "hl7:ADT_A|FAC", f"C{n}")
                for event, entity in (("record_created", "record"),
                                      ("person_created", "person"), ("linked", "link"))
            ]  # fmt: skip
            reply = ("ADT_A|FAC", f"bench-{n}", "MSH|^~\\&|IDENTITY|MPI|...\rMSA|AA|C1\r",
                     "0123456789abcdef0123456789abcdef")
            return history, reply

        timings: dict[str, list[tuple[float, float]]] = {}
        async with db.connection() as c:
            await c.execute("SET synchronous_commit = off")
            await c.execute(loop_function())
            backend = await c.fetchval("SELECT pg_backend_pid()")
            repo = Repository(c)

            async def events_two() -> None:
                history, reply = events()
                async with c.transaction():
                    await repo.append_events(history, [], reply)
                    await AuditStore(c).insert_rows(rows)

            async def events_one() -> None:
                history, reply = events()
                async with c.transaction():
                    await repo.append_events(history, [], reply, audit=rows)

            async def locks_loop() -> None:
                async with c.transaction():
                    await c.execute("SELECT pg_temp.lock_keys_loop($1::bigint[])", keys)

            async def locks_one() -> None:
                async with c.transaction():
                    await c.execute("SELECT lock_keys($1::bigint[])", keys)

            parts: dict[str, Callable[[], Awaitable[None]]] = {
                "events + audit, two statements (before)": events_two,
                "events + audit, one statement (after)": events_one,
                "lock_keys of 12 keys, loop (before)": locks_loop,
                "lock_keys of 12 keys, one statement (after)": locks_one,
            }
            for _ in range(args.rounds):
                for name, part in parts.items():
                    start, pg = time.process_time(), backend_seconds(backend)
                    for _ in range(args.count):
                        await part()
                    timings.setdefault(name, []).append(
                        ((time.process_time() - start) / args.count,
                         (backend_seconds(backend) - pg) / args.count))
        print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds of {args.count}")
        for name, values in timings.items():
            print(f"{name}: this process {_spread([v[0] for v in values])}, "
                  f"PostgreSQL backend {_spread([v[1] for v in values])}")
        await mpi.stop()
        await db.close()


def _spread(seconds: list[float]) -> str:
    """Median (min-max) in microseconds."""
    us = sorted(round(s * 1e6) for s in seconds)
    return f"median {us[len(us) // 2]} µs ({us[0]}-{us[-1]})"


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternated rounds (default 6)")
    parser.add_argument("--count", type=int, default=1500,
                        help="operations of each part per round (default 1500)")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="the server's postgres database (a scratch database is made)")
    run_loop(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
