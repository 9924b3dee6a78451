"""Latency and throughput of the FHIR door over HTTP on loopback, against a real PostgreSQL.

Creates a scratch database, loads a synthetic population (matching.synth) through ITI-104
conditional PUTs from ``--clients`` concurrent clients, then times:

- ITI-104 creates and updates per second (``--clients`` concurrent clients);
- ITI-83 $ihe-pix, ITI-78 family+birthdate search and ITI-119 $match, one request at a time,
  p50/p95/p99 in milliseconds (client side: HTTP, JSON, core and database included), and the
  CPU the server, PostgreSQL and the client spent per request.

The HTTP client runs in a process of its own (as an app does), so that its work does not share
the server's event loop; ``--same-process`` puts it back in the server's loop.

    python benchmarks/bench_fhir_door.py [--persons 5000] [--queries 1000] [--clients 8] \
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres] [--same-process] \
        [--index URL] [--profile-out FILE] [--workers N]

``--workers N`` serves with `identity serve` and N worker processes (README, *Worker
processes*) instead of a server in the benchmark's own process; the core's timings at the end
stay in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from bench_common import (
    Client,
    CpuMeter,
    ServeProcess,
    bench_database,
    feed_order,
    latency_figures,
    percentiles,
    renumber,
    write_figures,
)

from identity.config import Settings, load_settings
from identity.fhir import add_routes
from identity.fhir.patient import demographics_of, identifier_ref
from identity.loop import run as run_loop
from identity.loop import settle_heap
from identity.model import IdentifierRef, SearchCriteria
from identity.mpi import Mpi
from identity.store.db import Database
from identity.store.migrate import migrate
from matching.synth import SOURCE_DOMAINS, SSN_DOMAIN, generate, to_fhir_patient

JSON = "application/fhir+json"
CONFIG = Path(__file__).with_name("bench.toml")


async def _void(call: Awaitable[Any]) -> None:
    await call


async def timed(calls: list[Callable[[], Awaitable[None]]]) -> list[float]:
    samples = []
    for call in calls:
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return samples


# --- the client's side (run in its own process by bench_common.Client) ------------------------


async def feed(base: str, batch: list[dict[str, Any]], clients: int) -> tuple[float, dict]:
    """ITI-104 conditional PUTs from ``clients`` concurrent clients: (seconds, statuses)."""
    queue = list(reversed(batch))
    counts: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=clients * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"Accept": JSON, "Content-Type": JSON}

        async def worker() -> None:
            while queue:
                patient = queue.pop()
                ident = patient["identifier"][0]
                async with session.put(
                    f"{base}/Patient", json=patient, headers=headers,
                    params={"identifier": f"{ident['system']}|{ident['value']}"},
                ) as response:
                    await response.read()
                    counts[response.status] = counts.get(response.status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return time.perf_counter() - start, counts


async def requests(base: str, calls: list[tuple[str, str, Any]]) -> list[float]:
    """(method, path, params or JSON body) one at a time: each one's seconds; a warm-up pass
    of the first two is not counted."""
    async with aiohttp.ClientSession() as session:
        headers = {"Accept": JSON, "Content-Type": JSON}

        async def call(method: str, path: str, data: Any) -> None:
            kwargs = {"params": data} if method == "GET" else {"json": data}
            async with session.request(method, base + path, headers=headers,
                                       **kwargs) as response:
                await response.read()
                assert response.status == 200, (path, data, response.status)

        for method, path, data in calls[:2]:
            await call(method, path, data)
        return await timed([(lambda c=c: call(*c)) for c in calls])


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.index, args.database_url) as url:
        await measure(args, url)


async def measure(args: argparse.Namespace, url: str) -> None:
    db = await Database.connect(url, min_size=2, max_size=args.clients + 4)
    runner: web.AppRunner | None = None
    stack = contextlib.AsyncExitStack()
    served: ServeProcess | None = None
    figures: dict = {}
    try:
        async with db.connection() as conn:
            await migrate(conn)
            indexed = await conn.fetchval("SELECT count(*) FROM source_record")
        if args.index:  # the index's own domains (an `identity import` with bench.toml)
            settings = load_settings(CONFIG, log_level="WARNING")
        else:
            domains: list[dict[str, Any]] = [
                {"namespace": ns, "oid": oid} for ns, oid in SOURCE_DOMAINS.items()
            ]
            domains.append({"namespace": "SSN", "oid": SSN_DOMAIN, "identifies_person": True})
            settings = Settings(domains=domains)
        mpi = Mpi(db, settings)
        await mpi.start()
        server = None
        if args.workers:  # `identity serve` as deployed, in processes of its own
            served = await stack.enter_async_context(ServeProcess(
                url, [d.model_dump(mode="json") for d in settings.domains], args.workers
            ))
            server = served.pid
            base = f"http://127.0.0.1:{served.http}/fhir"
        else:
            app = web.Application()
            add_routes(app, mpi, settings)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            base = f"http://127.0.0.1:{runner.addresses[0][1]}/fhir"
        print("server:", f"identity serve, {args.workers} worker process(es)" if args.workers
              else "in the benchmark's process")

        records = feed_order(generate(args.persons, 0.2, seed=args.seed), args.seed)
        if args.index:
            renumber(records, f"F{uuid.uuid4().hex[:6]}-")
        patients = [to_fhir_patient(r) for r in records]
        settle_heap()  # as the service does once started
        for p in patients:
            p.pop("id", None)
        print(f"records={len(patients)} persons={args.persons} clients={args.clients}, "
              f"index of {indexed:,} records before")

        client = Client(args.same_process)
        print("client:", "in the server's event loop" if args.same_process else "own process")
        meter = CpuMeter(server)
        elapsed, counts = await client.run(feed, base, patients, args.clients)
        print(f"ITI-104 create: {len(patients) / elapsed:.0f}/s over {args.clients} clients "
              f"({elapsed:.1f} s, statuses {counts}; load {os.getloadavg()[0]:.1f})")
        print("  " + meter.per(len(patients), "create"))
        figures["index_records"] = indexed
        figures["iti104_create"] = {"rate": len(patients) / elapsed,
                                    "cpu_ms": meter.figures(len(patients))}
        rng = random.Random(args.seed)
        sample = rng.sample(patients, min(args.updates, len(patients)))
        updates = []
        for p in sample:
            changed = dict(p)
            phone = f"555-{rng.randint(0, 9999):04d}"
            changed["telecom"] = [{"system": "phone", "value": phone}]
            updates.append(changed)
        profiler = cProfile.Profile(time.process_time) if args.profile_out else None
        if profiler is not None:
            profiler.enable()
        meter = CpuMeter(server)
        elapsed, counts = await client.run(feed, base, updates, args.clients)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile_out)
        print(f"ITI-104 update: {len(updates) / elapsed:.0f}/s over {args.clients} clients "
              f"({elapsed:.1f} s, statuses {counts}; load {os.getloadavg()[0]:.1f})")
        print("  " + meter.per(len(updates), "update"))
        figures["iti104_update"] = {"rate": len(updates) / elapsed,
                                    "cpu_ms": meter.figures(len(updates))}

        # The queries are timed on their own, not against the write-back of the feed phases.
        async with db.connection() as conn:
            await conn.execute("CHECKPOINT")

        def system_value(p: dict[str, Any]) -> str:
            return "|".join((p["identifier"][0]["system"], p["identifier"][0]["value"]))

        async def phase(label: str, calls: list[tuple[str, str, Any]]) -> None:
            meter = CpuMeter(server)
            samples = await client.run(requests, base, calls)
            print(f"{label:<27}" + percentiles(samples))
            print("  " + meter.per(len(calls), "request"))
            key = {"ITI-83": "iti83", "ITI-78": "iti78", "ITI-119": "match"}[label.split()[0]]
            figures[key] = {**latency_figures(samples), "cpu_ms": meter.figures(len(calls))}

        queries = [rng.choice(patients) for _ in range(args.queries)]
        pix = [("GET", "/Patient/$ihe-pix", {"sourceIdentifier": system_value(p)})
               for p in queries]
        await phase("ITI-83 $ihe-pix:", pix)
        searchable = [p for p in queries if p.get("name") and p["name"][0].get("family")
                      and p.get("birthDate")]
        pdq = [("GET", "/Patient", {"family": p["name"][0]["family"],
                                    "birthdate": p["birthDate"]}) for p in searchable]
        await phase("ITI-78 family+birthdate:", pdq)
        match = [("POST", "/Patient/$match", {"resourceType": "Parameters", "parameter": [
                     {"name": "resource", "resource": {**p, "identifier": []}},
                     {"name": "count", "valueInteger": 10}]}) for p in queries]
        await phase("ITI-119 $match:", match)
        client.close()

        # The same queries straight against the core: the difference is the door's cost.
        def ref(p: dict[str, Any]) -> IdentifierRef:
            return identifier_ref(p["identifier"][0]["system"], p["identifier"][0]["value"])

        core_pix = [(lambda p=p: _void(mpi.cross_references(ref(p)))) for p in queries]
        print("core cross_references:     " + percentiles(await timed(core_pix)))
        core_pdq = [
            (lambda p=p: _void(mpi.search(SearchCriteria(
                family=p["name"][0]["family"] + "*", birth_date=p["birthDate"],
                limit=settings.fhir.default_page_size))))
            for p in searchable
        ]
        print("core search:               " + percentiles(await timed(core_pdq)))
        core_match = [
            (lambda p=p: _void(mpi.match(demographics_of(p), limit=10))) for p in queries
        ]
        print("core match:                " + percentiles(await timed(core_match)))
    finally:
        await stack.aclose()
        if runner is not None:
            await runner.cleanup()
        await db.close()
    if served is not None:
        figures["service_peak_rss_mb"] = served.peak_rss
        print(f"service peak RSS: {served.peak_rss:,.0f} MB")
    figures["load_average"] = os.getloadavg()[0]
    write_figures(args.json, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--index", metavar="URL",
        help="an existing index to run against (e.g. the 1M import, made with "
        "benchmarks/bench.toml) instead of a scratch database: the patients get fresh "
        "identifiers and stay in the index",
    )
    parser.add_argument(
        "--profile-out", metavar="FILE",
        help="profile the server's process (cProfile) during the update phase and write the "
        "data to FILE (for pstats); the update rate is then not a figure to report",
    )
    parser.add_argument(
        "--workers", type=int, metavar="N",
        help="serve with `identity serve` and N worker processes (the deployed service; the "
        "server's CPU is the whole process tree) instead of a server in this process",
    )
    parser.add_argument("--same-process", action="store_true",
                        help="run the HTTP client in the server's event loop")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the figures to FILE as JSON (python -m benchmarks)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("IDENTITY_BENCH_DATABASE_URL",
                               "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    if args.workers and (args.profile_out or args.same_process):
        parser.error("--profile-out and --same-process need the server in this process")
    run_loop(run(args))


if __name__ == "__main__":
    main()
