"""Throughput and latency of the HL7 v2 front door over MLLP on loopback, real PostgreSQL.

Creates a scratch database (dropped at the end), starts an Hl7Service on port 0 and times:

- ITI-8 ADT^A04 ingest of new patients, ACK after commit: one connection, then ``--connections``
  concurrent connections (messages per second, client side);
- PostgreSQL's own durable single-row commit rate in the same run (INSERT with autocommit on
  one connection, and on ``--connections`` connections), the ceiling for an ACK-after-commit
  feed;
- ITI-9 PIX queries and ITI-21 PDQ family+given+birth date queries, one at a time on one
  connection: p50/p95/p99 in milliseconds.

The client runs in a process of its own (as a sender does), so that its parsing and framing do
not share the server's event loop; ``--same-process`` puts it back in the server's loop.

    python benchmarks/bench_hl7_door.py [--records 20000] [--single 3000] [--connections 8] \
        [--queries 2000] [--database-url postgresql://postgres@127.0.0.1:5432/postgres] \
        [--index URL] [--workers N]

``--workers N`` serves with `identity serve` and N worker processes (README, *Worker
processes*) instead of an Hl7Service in the benchmark's own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
import uuid
from pathlib import Path

import asyncpg
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
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.pid import record_input
from identity.hl7v2.replies import ReplyContext, ack
from identity.hl7v2.service import Hl7Service
from identity.hl7v2.tokenizer import parse_message
from identity.loop import run as run_loop
from identity.loop import settle_heap
from identity.mpi import Mpi
from identity.store.db import Database
from identity.store.migrate import migrate
from matching.synth import (
    SOURCE_DOMAINS,
    SSN_DOMAIN,
    SynthRecord,
    generate,
    hl7_escape,
    to_hl7_adt_a04,
)

CONFIG = Path(__file__).with_name("bench.toml")

DOMAINS = [
    *({"namespace": ns, "oid": oid, "sources": [ns]} for ns, oid in SOURCE_DOMAINS.items()),
    {"namespace": "SSA", "oid": SSN_DOMAIN, "identifies_person": True},
]


class Population:
    """matching.synth records (the FHIR door benchmark's population) as ADT^A04 messages;
    ``prefix`` makes their MRNs new to an index built from another generated population."""

    def __init__(self, count: int, seed: int, prefix: str = "", ssn: str = "SSA") -> None:
        self.records = feed_order(generate(count, 0.2, seed=seed), seed)
        self.ssn = ssn  # the namespace of the SSN domain in the index's configuration
        self.run = uuid.uuid4().hex[:6]  # control ids new to an index that keeps replies
        renumber(self.records, prefix)
        self.position = 0

    def a04s(self, count: int) -> list[bytes]:
        start = self.position
        batch = self.records[start : start + count]
        self.position += len(batch)
        return [  # MSH-10 unique per sender: a repeated one would be answered, not applied
            to_hl7_adt_a04(r, f"B{self.run}-{start + i}", "20260101120000")
            .replace("^^^SSA&", f"^^^{self.ssn}&").encode("utf-8")
            for i, r in enumerate(batch)
        ]

    def sent(self) -> list[SynthRecord]:
        return self.records[: self.position]


def door_cpu(messages: list[bytes], settings: Settings) -> float:
    """Microseconds of CPU per A04 for the door's own work: parse, map PID, build the ACK."""
    start = time.perf_counter()
    for raw in messages:
        message = parse_message(raw)
        ctx = ReplyContext.of(message, settings.hl7)
        pid = message.segment("PID")
        assert pid is not None
        record_input(pid)
        ack(ctx, "AA")
    return (time.perf_counter() - start) / len(messages) * 1e6


async def feed(port: int, messages: list[bytes], connections: int) -> float:
    """Send ``messages`` over ``connections`` connections; return messages per second."""
    queue = iter(messages)

    async def worker() -> None:
        async with MLLPClient("127.0.0.1", port, timeout=60) as client:
            for message in queue:
                reply = await client.send(message)
                if b"MSA|AA|" not in reply:
                    raise RuntimeError(f"not AA: {reply[:300]!r}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(messages) / (time.perf_counter() - start)


async def commit_rate(url: str, count: int, connections: int) -> float:
    """Durable single-row INSERT commits per second (autocommit, synchronous_commit as set)."""
    setup = await asyncpg.connect(url)
    await setup.execute("CREATE TABLE IF NOT EXISTS bench_commit (id bigserial PRIMARY KEY, "
                        "v integer NOT NULL)")
    await setup.close()
    per = count // connections

    async def worker() -> None:
        conn = await asyncpg.connect(url)
        try:
            for value in range(per):
                await conn.execute("INSERT INTO bench_commit (v) VALUES ($1)", value)
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return per * connections / (time.perf_counter() - start)


async def query_latencies(port: int, texts: list[str]) -> list[float]:
    samples = []
    async with MLLPClient("127.0.0.1", port, timeout=60) as client:
        for text in texts:
            start = time.perf_counter()
            reply = await client.send(text)
            samples.append(time.perf_counter() - start)
            qak = parse_message(reply).segment("QAK")
            if qak is None or qak.value(2) not in ("OK", "NF"):
                raise RuntimeError(f"query failed: {reply[:300]!r}")
    return samples


async def run(args: argparse.Namespace) -> None:
    async with bench_database(args.index, args.database_url) as url:
        await measure(args, url)


async def measure(args: argparse.Namespace, url: str) -> None:
    conn = await asyncpg.connect(url)
    await migrate(conn)
    indexed = await conn.fetchval("SELECT count(*) FROM source_record")
    await conn.close()
    db = await Database.connect(url, min_size=2, max_size=args.connections + 4)
    if args.index:  # the index's own domains (an `identity import` with bench.toml)
        settings = load_settings(
            CONFIG, mllp={"port": 0}, database={"url": url}, log_level="WARNING"
        )
    else:
        settings = Settings(
            domains=DOMAINS, mllp={"port": 0}, database={"url": url}, log_level="WARNING"
        )
    mpi = Mpi(db, settings)
    await mpi.start()
    stack = contextlib.AsyncExitStack()
    server = None
    served: ServeProcess | None = None
    service: Hl7Service | None = None
    figures: dict = {"index_records": indexed + (0 if args.index else args.records)}
    if args.workers:  # `identity serve` as deployed, in processes of its own
        served = await stack.enter_async_context(ServeProcess(
            url, [d.model_dump(mode="json") for d in settings.domains], args.workers
        ))
        server, port = served.pid, served.mllp
    else:
        service = Hl7Service(mpi, db, settings)
        await service.start()
        port = service.port
    print("server:", f"identity serve, {args.workers} worker process(es)" if args.workers
          else "in the benchmark's process")
    client = Client(args.same_process)
    print("client:", "in the server's event loop" if args.same_process else "own process")
    try:
        records = 0 if args.index else args.records
        total = records + args.single * 3
        population = Population(
            total, args.seed, f"N{args.seed}-" if args.index else "",
            "SSN" if args.index else "SSA",  # bench.toml's name of the SSN domain
        )
        settle_heap()  # as the service does once started
        print(f"index of {indexed + records:,} records before the timed phases")
        print(f"PostgreSQL {await db.pool.fetchval('SHOW server_version')}, "
              f"synchronous_commit={await db.pool.fetchval('SHOW synchronous_commit')}, "
              f"fsync={await db.pool.fetchval('SHOW fsync')}")
        load = population.a04s(records)
        if load:
            rate = await client.run(feed, port, load, args.connections)
            print(f"ITI-8 A04 load of {records} records over {args.connections} "
                  f"connections: {rate:,.0f} msg/s")
        single = population.a04s(args.single)
        print(f"door CPU per A04 (parse, map PID, build ACK): "
              f"{door_cpu(single[:2000], settings):.0f} µs")
        meter = CpuMeter(server)
        rate1 = await client.run(feed, port, single, 1)
        print(f"ITI-8 A04 on 1 connection ({args.single} msgs, index of "
              f"{indexed + records:,}): {rate1:,.0f} msg/s")
        print("  " + meter.per(len(single), "A04"))
        figures["iti8_1"] = {"rate": rate1, "cpu_ms": meter.figures(len(single))}
        multi = population.a04s(args.single * 2)
        meter = CpuMeter(server)
        rate8 = await client.run(feed, port, multi, args.connections)
        print(f"ITI-8 A04 on {args.connections} connections ({len(multi)} msgs): "
              f"{rate8:,.0f} msg/s")
        print("  " + meter.per(len(multi), "A04"))
        figures[f"iti8_{args.connections}"] = {"rate": rate8,
                                                 "cpu_ms": meter.figures(len(multi))}
        pg1 = await commit_rate(url, 3000, 1)
        pg8 = await commit_rate(url, 8000, args.connections)
        if args.index:
            async with db.connection() as conn:
                await conn.execute("DROP TABLE bench_commit")
        print(f"PostgreSQL durable single-row commits: {pg1:,.0f}/s on 1 connection, "
              f"{pg8:,.0f}/s on {args.connections} connections")
        figures["pg_commit"] = {"1": pg1, str(args.connections): pg8}
        # The queries are timed on their own, not against the write-back of the ingest phases
        # (on this 2-core machine a checkpoint in progress doubled the ITI-9 p99).
        async with db.connection() as conn:
            await conn.execute("CHECKPOINT")
        print("checkpoint taken before the query phases")

        rng = random.Random(args.seed + 1)
        people = population.sent()
        pix = []
        for i in range(args.queries):
            record = rng.choice(people)
            pix.append(
                "MSH|^~\\&|PIXC|FAC|IDENTITY|MPI|20260101||QBP^Q23^QBP_Q21|X"
                f"{i}|P|2.5\rQPD|IHE PIX Query|T{i}|{hl7_escape(record.mrn)}^^^"
                f"{record.source_domain}\rRCP|I\r"
            )
        meter = CpuMeter(server)
        samples = await client.run(query_latencies, port, pix)
        print("ITI-9 PIX query:", percentiles(samples))
        figures["iti9"] = {**latency_figures(samples), "cpu_ms": meter.figures(len(pix))}
        pdq = []
        for i in range(args.queries):
            demographics = rng.choice(people).demographics
            first_name = (demographics.get("names") or [{}])[0]
            family = hl7_escape(first_name.get("family", ""))
            given = hl7_escape((first_name.get("given") or [""])[0])
            dob = (demographics.get("birth_date") or "").replace("-", "")
            pdq.append(
                "MSH|^~\\&|PDQC|FAC|IDENTITY|MPI|20260101||QBP^Q22^QBP_Q21|Y"
                f"{i}|P|2.5||||||UNICODE UTF-8\rQPD|IHE PDQ Query|T{i}|@PID.5.1.1^{family}~"
                f"@PID.5.2^{given}~@PID.7^{dob}\rRCP|I|50^RD\r"
            )
        meter = CpuMeter(server)
        samples = await client.run(query_latencies, port, pdq)
        print("ITI-21 PDQ family+given+birth date:", percentiles(samples))
        figures["iti21"] = {**latency_figures(samples), "cpu_ms": meter.figures(len(pdq))}
    finally:
        client.close()
        if service is not None:
            await service.stop()
        await stack.aclose()
        await db.close()
    if served is not None:
        figures["service_peak_rss_mb"] = served.peak_rss
        print(f"service peak RSS: {served.peak_rss:,.0f} MB")
    figures["load_average"] = os.getloadavg()[0]
    write_figures(args.json, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--single", type=int, default=3000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--same-process", action="store_true",
                        help="run the client in the server's event loop (the old way)")
    parser.add_argument(
        "--workers", type=int, metavar="N",
        help="serve with `identity serve` and N worker processes (the deployed service; the "
        "server's CPU is the whole process tree) instead of a server in this process",
    )
    parser.add_argument(
        "--index", metavar="URL",
        help="an existing index to run against (e.g. the 1M import, made with "
        "benchmarks/bench.toml) instead of a scratch database: no initial load, the new "
        "patients get fresh MRNs and stay in the index",
    )
    parser.add_argument("--json", metavar="FILE",
                        help="also write the figures to FILE as JSON (python -m benchmarks)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("IDENTITY_TEST_DATABASE_URL",
                               "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    if args.workers and args.same_process:
        parser.error("--same-process needs the server in this process")
    run_loop(run(args))


if __name__ == "__main__":
    main()
