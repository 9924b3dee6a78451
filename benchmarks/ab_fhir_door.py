"""Two versions of the FHIR door side by side: latency and server CPU of each, measured in
interleaved batches so that the load of a shared machine falls on both alike.

Starts `identity serve` (one process) from each source tree (``--a``, ``--b``: directories put
first on PYTHONPATH, e.g. a `git worktree` of the baseline and this checkout), each on a scratch
database of its own, feeds both the same synthetic population through ITI-104 (batches sent to
A and B in turn), then runs ITI-83 ``$ihe-pix``, ITI-78 family+birthdate and ITI-119 ``$match``
one request at a time in batches, A and B in turn (ABBA order), and prints for each side the
latency percentiles and the CPU the server's process spent per request (from /proc; PostgreSQL
is shared by both, so its CPU is not split).

    python benchmarks/ab_fhir_door.py --a /tmp/fhirbase --b . [--persons 2000] \\
        [--queries 2000] [--batch 100] \\
        [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from bench_common import ServeProcess, bench_database, feed_order, percentiles

from identity.loop import run as run_loop
from matching.synth import SOURCE_DOMAINS, SSN_DOMAIN, generate, to_fhir_patient

JSON = "application/fhir+json"
HEADERS = {"Accept": JSON, "Content-Type": JSON}
_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of process ``root`` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        seconds[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    tree, grown = {root}, True
    while grown:
        found = {pid for pid, ppid in parents.items() if ppid in tree}
        grown = not found <= tree
        tree |= found
    return sum(seconds.get(pid, 0.0) for pid in tree)


class Side:
    def __init__(self, name: str, source: Path) -> None:
        self.name, self.source = name, source
        self.base = ""
        self.pid = 0
        self.samples: dict[str, list[float]] = {}
        self.cpu: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, phase: str, samples: list[float], cpu: float, count: int) -> None:
        self.samples.setdefault(phase, []).extend(samples)
        self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu
        self.count[phase] = self.count.get(phase, 0) + count


@contextlib.asynccontextmanager
async def serving(side: Side, url: str, domains: list[dict[str, Any]]) -> AsyncIterator[None]:
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(side.source)
    try:
        served = ServeProcess(url, domains, 1)
        await served.__aenter__()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    side.base, side.pid = f"http://127.0.0.1:{served.http}/fhir", served.pid
    try:
        yield
    finally:
        await served.__aexit__(None, None, None)


async def puts(session: aiohttp.ClientSession, side: Side, batch: list[dict[str, Any]],
               clients: int, phase: str) -> None:  # fmt: skip
    queue = list(reversed(batch))

    async def worker() -> None:
        while queue:
            patient = queue.pop()
            ident = patient["identifier"][0]
            async with session.put(f"{side.base}/Patient", json=patient, headers=HEADERS,
                                   params={"identifier": f"{ident['system']}|{ident['value']}"}
                                   ) as response:  # fmt: skip
                await response.read()
                assert response.status in (200, 201), response.status

    cpu = tree_cpu(side.pid)
    await asyncio.gather(*(worker() for _ in range(clients)))
    side.add(phase, [], tree_cpu(side.pid) - cpu, len(batch))


async def queries(session: aiohttp.ClientSession, side: Side,
                  calls: list[tuple[str, str, Any]], phase: str) -> None:  # fmt: skip
    samples = []
    cpu = tree_cpu(side.pid)
    for method, path, data in calls:
        kwargs = {"params": data} if method == "GET" else {"json": data}
        start = time.perf_counter()
        async with session.request(method, side.base + path, headers=HEADERS,
                                   **kwargs) as response:  # fmt: skip
            await response.read()
        samples.append(time.perf_counter() - start)
        assert response.status == 200, (path, response.status)
    side.add(phase, samples, tree_cpu(side.pid) - cpu, len(calls))


def batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


async def run(args: argparse.Namespace) -> None:
    a, b = Side("A", args.a), Side("B", args.b)
    domains: list[dict[str, Any]] = [{"namespace": ns, "oid": oid}
                                     for ns, oid in SOURCE_DOMAINS.items()]  # fmt: skip
    domains.append({"namespace": "SSN", "oid": SSN_DOMAIN, "identifies_person": True})
    async with contextlib.AsyncExitStack() as stack:
        url_a = await stack.enter_async_context(bench_database(None, args.database_url))
        url_b = await stack.enter_async_context(bench_database(None, args.database_url))
        await stack.enter_async_context(serving(a, url_a, domains))
        await stack.enter_async_context(serving(b, url_b, domains))
        print(f"A: {a.source} (pid {a.pid})\nB: {b.source} (pid {b.pid})")
        records = feed_order(generate(args.persons, 0.2, seed=args.seed), args.seed)
        patients = [to_fhir_patient(r) for r in records]
        for p in patients:
            p.pop("id", None)
        rng = random.Random(args.seed)
        updates = []
        for p in rng.sample(patients, min(args.updates, len(patients))):
            changed = dict(p)
            changed["telecom"] = [{"system": "phone", "value": f"555-{rng.randint(0, 9999):04d}"}]
            updates.append(changed)
        chosen = [rng.choice(patients) for _ in range(args.queries)]

        def token(p: dict[str, Any]) -> str:
            return f"{p['identifier'][0]['system']}|{p['identifier'][0]['value']}"

        pix = [("GET", "/Patient/$ihe-pix", {"sourceIdentifier": token(p)}) for p in chosen]
        pdq = [("GET", "/Patient", {"family": p["name"][0]["family"],
                                    "birthdate": p["birthDate"]})
               for p in chosen if p.get("name") and p["name"][0].get("family")
               and p.get("birthDate")]  # fmt: skip
        match = [("POST", "/Patient/$match", {"resourceType": "Parameters", "parameter": [
                     {"name": "resource", "resource": {**p, "identifier": []}},
                     {"name": "count", "valueInteger": 10}]}) for p in chosen]  # fmt: skip
        connector = aiohttp.TCPConnector(limit=args.clients * 4)
        async with aiohttp.ClientSession(connector=connector) as session:
            for i, batch in enumerate(batches(patients, args.batch * 2)):
                for side in (a, b) if i % 2 == 0 else (b, a):
                    await puts(session, side, batch, args.clients, "ITI-104 create")
            for i, batch in enumerate(batches(updates, args.batch * 2)):
                for side in (a, b) if i % 2 == 0 else (b, a):
                    await puts(session, side, batch, args.clients, "ITI-104 update")
            for side in (a, b):  # warm-up, not counted
                await queries(session, side, pix[:20] + pdq[:20] + match[:20], "warm-up")
            for phase, calls in (("ITI-83 $ihe-pix", pix), ("ITI-78 family+birthdate", pdq),
                                 ("ITI-119 $match", match)):  # fmt: skip
                for i, batch in enumerate(batches(calls, args.batch)):
                    for side in (a, b) if i % 2 == 0 else (b, a):
                        await queries(session, side, batch, phase)
        print(f"records={len(patients)} updates={len(updates)} queries={len(chosen)} "
              f"batch={args.batch}; load {os.getloadavg()[0]:.1f}")
        for phase in ("ITI-104 create", "ITI-104 update", "ITI-83 $ihe-pix",
                      "ITI-78 family+birthdate", "ITI-119 $match"):  # fmt: skip
            cpu = {s.name: 1000 * s.cpu[phase] / s.count[phase] for s in (a, b)}
            print(f"{phase}: server CPU per request A {cpu['A']:.2f} ms, B {cpu['B']:.2f} ms "
                  f"(B/A {cpu['B'] / cpu['A']:.3f})")
            if a.samples.get(phase):
                for s in (a, b):
                    print(f"  {s.name}: " + percentiles(s.samples[phase]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="source tree of version A (the baseline)")
    parser.add_argument("--b", required=True, help="source tree of version B")
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("IDENTITY_BENCH_DATABASE_URL",
                               "postgresql://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    args.a, args.b = Path(args.a).resolve(), Path(args.b).resolve()
    run_loop(run(args))


if __name__ == "__main__":
    main()
