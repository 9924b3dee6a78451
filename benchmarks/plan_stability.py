"""Do the candidate-search functions stay fast when their cached plans were made on empty
tables and the tables grew without ANALYZE? (Migration 0009: generic plans with sequential
scans, hash joins and merge joins ruled out.)

In a scratch database (created and dropped): migrate, take one connection and call
``usable_keys`` and ``register_candidates`` a few times on the empty tables (plans are made
and cached), write ``--records`` records with ten blocking keys each (blocks of 2 to 50,000
records) from a second connection without ANALYZE, then time ``--calls`` calls of both on the
first connection; then ANALYZE and time again. ``--mode`` sets the two functions' plan settings
before the start: ``migrated`` (as the migrations leave them), ``custom`` (planned at every
call, as before 0009), ``generic`` (cached, no rules).

    python benchmarks/plan_stability.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--mode migrated|custom|generic] [--records 100000]
"""

from __future__ import annotations

import argparse
import time
import uuid

import asyncpg

from identity.loop import run as run_loop
from identity.store.db import _init_connection
from identity.store.migrate import migrate

FUNCTIONS = (
    "register_candidates(text[], bigint, integer, integer, integer, integer, integer, integer)",
    "usable_keys(text[], bigint[], integer)",
)
KEYS = ["f:1", "g:2", "y:3", "p:4", "id:5"]
SELECTION = (401, 400, 50, 6, 2, 10)  # per_key, max_block, max_candidates, margin, floor, rare


def _with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    return f"{base.rpartition('/')[0]}/{database}" + (f"?{query}" if query else "")


async def _calls(conn: asyncpg.Connection, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        await conn.fetchrow("SELECT * FROM usable_keys($1::text[], $2::bigint[], $3)",
                            KEYS, list(range(len(KEYS))), SELECTION[1])
        await conn.fetchrow("SELECT * FROM register_candidates($1::text[], NULL, $2, $3, $4,"
                            " $5, $6, $7)", KEYS, *SELECTION)
    return (time.perf_counter() - start) / count * 1000


async def run(args: argparse.Namespace) -> None:
    name = f"plan_stability_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(args.url, name)
    try:
        writer = await asyncpg.connect(url)
        await migrate(writer)
        for function in FUNCTIONS:
            if args.mode != "migrated":
                await writer.execute(f"ALTER FUNCTION {function} RESET ALL")
                await writer.execute(f"ALTER FUNCTION {function} SET plan_cache_mode = "
                                     f"force_{args.mode}_plan")
        await writer.execute("INSERT INTO domain (namespace) VALUES ('BENCH')")
        reader = await asyncpg.connect(url)
        await _init_connection(reader)
        await _calls(reader, 10)  # plans made (and, when cached, kept) on empty tables
        n = args.records
        start = time.perf_counter()
        await writer.execute(f"""
            INSERT INTO source_record (domain_id, identifier, demographics, normalized)
                SELECT 1, 'R' || i, '{{}}', '{{}}' FROM generate_series(1, {n}) i;
            INSERT INTO person (enterprise_id) SELECT 'E' || i FROM generate_series(1, {n}) i;
            INSERT INTO link (source_record_id, person_id, kind, actor)
                SELECT i, i, 'automatic', 'bench' FROM generate_series(1, {n}) i;
            INSERT INTO blocking_key (key, source_record_id)
                SELECT k, i FROM generate_series(1, {n}) i,
                LATERAL (VALUES ('f:' || (i % 20000)), ('g:' || (i % 5000)), ('y:' || (i % 100)),
                                ('p:' || (i % 30000)), ('id:' || i), ('s:' || (i % 2)),
                                ('a:' || (i % 50000)), ('b:' || (i % 10000)),
                                ('c:' || (i % 300)), ('d:' || (i % 70000))) AS v(k);
        """)
        print(f"mode {args.mode}: wrote {n:,} records and {n * 10:,} keys in "
              f"{time.perf_counter() - start:.1f} s, no ANALYZE")
        print(f"  usable_keys + register_candidates: {await _calls(reader, args.calls):.2f} ms "
              "a call (plans made on the empty tables)")
        await writer.execute("ANALYZE")
        print(f"  after ANALYZE: {await _calls(reader, args.calls):.2f} ms a call")
        await reader.close()
        await writer.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--mode", choices=("migrated", "custom", "generic"), default="migrated")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=200)
    run_loop(run(parser.parse_args()))


if __name__ == "__main__":
    main()
