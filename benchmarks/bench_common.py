"""What the door benchmarks share: the client in a process of its own (as a real sender is, so
that its parsing and framing do not share the server's event loop), the database they run
against (a scratch one, or an existing index), fresh identifiers for an existing index, and
latency percentiles."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import socket
import statistics
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg

from identity.loop import run as run_loop
from matching.synth import SynthRecord

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(server: int | None = None) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process and the process tree of ``server``
    (the server: a `identity serve` started by ``ServeProcess``), this process's other child
    processes (the client) and PostgreSQL's processes on this machine (backends, WAL writer,
    checkpointer, ...), from /proc."""
    me = os.getpid()
    totals = {"server": 0.0, "client": 0.0, "postgres": 0.0}
    processes: dict[int, tuple[str, int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                head, _, rest = f.read().rpartition(")")
        except OSError:
            continue  # gone meanwhile
        fields = rest.split()
        seconds = (int(fields[11]) + int(fields[12])) / _TICK
        processes[int(entry)] = (head.partition("(")[2], int(fields[1]), seconds)
    tree = {me} if server is None else {me, server}
    grown = True
    while grown:
        found = {pid for pid, (_, ppid, _) in processes.items() if ppid in tree and ppid != me}
        grown = not found <= tree
        tree |= found
    for pid, (name, ppid, seconds) in processes.items():
        if pid in tree:
            totals["server"] += seconds
        elif ppid == me:
            totals["client"] += seconds
        elif name == "postgres":
            totals["postgres"] += seconds
    return totals


class CpuMeter:
    """CPU per operation of the server, the client and PostgreSQL over a timed phase: a figure
    that shared, noisy machines disturb far less than a rate (a rate here varied by ±20% between
    runs of the same code). With PostgreSQL on another machine its column reads as 0.

        meter = CpuMeter(); ...timed phase...; print(meter.per(n, "update"))"""

    def __init__(self, server: int | None = None) -> None:
        self.available = os.path.isdir("/proc/self")
        self.server = server
        self.start = cpu_seconds(server) if self.available else {}

    def figures(self, operations: int) -> dict[str, float]:
        """Milliseconds of CPU per operation since the start: ``server``, ``postgres``,
        ``client`` and their ``total`` (empty without /proc)."""
        if not self.available or operations == 0:
            return {}
        end = cpu_seconds(self.server)
        ms = {k: 1000 * (end[k] - self.start[k]) / operations for k in end}
        return {**ms, "total": sum(ms.values())}

    def per(self, operations: int, what: str) -> str:
        ms = self.figures(operations)
        if not ms:
            return "CPU per operation: not measured (no /proc)"
        total = ms["total"]
        cores = os.cpu_count() or 1
        return (f"CPU per {what}: server {ms['server']:.2f} ms, PostgreSQL {ms['postgres']:.2f}"
                f" ms, client {ms['client']:.2f} ms; {total:.2f} ms in all = at most "
                f"{1000 * cores / total:,.0f}/s on {cores} cores fully used")


class ServeProcess:
    """`identity serve` with ``workers`` worker processes against ``url`` (the service as it
    is deployed, instead of a server in the benchmark's own event loop), on free ports.

        async with ServeProcess(url, domains, workers=2) as served: ... served.http ..."""

    def __init__(self, url: str, domains: list[dict[str, Any]], workers: int) -> None:
        self.url, self.domains, self.workers = url, domains, workers
        self.http = self.mllp = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.peak_rss = 0.0  # MB, read as the service stops (peak_rss_mb)

    async def __aenter__(self) -> ServeProcess:
        self.http, self.mllp = _free_port(), _free_port()
        env = {
            **os.environ,
            "IDENTITY_DATABASE__URL": self.url,
            "IDENTITY_DATABASE__MAX_CONNECTIONS": "12",
            "IDENTITY_WORKERS": str(self.workers),
            "IDENTITY_HTTP__PORT": str(self.http),
            "IDENTITY_MLLP__PORT": str(self.mllp),
            "IDENTITY_DOMAINS": json.dumps(self.domains),
            "IDENTITY_LOG_LEVEL": "WARNING",
        }
        env.pop("IDENTITY_CONFIG", None)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "identity", "serve", env=env
        )
        for _ in range(600):
            await asyncio.sleep(0.1)
            if self.proc.returncode is not None:
                raise RuntimeError(f"identity serve exited with {self.proc.returncode}")
            if await _healthy(self.http):
                return self
        raise RuntimeError("identity serve did not answer /healthz in 60 s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def peak_rss_mb(self) -> float:
        """The service's peak resident memory so far, MB: the high-water marks (VmHWM) of its
        process tree added up (with workers, an upper bound: their peaks need not coincide)."""
        if self.proc is None or not os.path.isdir("/proc/self"):
            return 0.0
        tree, grown = {self.proc.pid}, True
        while grown:
            found = set()
            for entry in os.listdir("/proc"):
                if entry.isdigit() and int(entry) not in tree:
                    try:
                        with open(f"/proc/{entry}/stat") as f:
                            ppid = int(f.read().rpartition(")")[2].split()[1])
                    except OSError:
                        continue
                    if ppid in tree:
                        found.add(int(entry))
            grown = bool(found)
            tree |= found
        kb = 0
        for pid in tree:
            try:
                with open(f"/proc/{pid}/status") as f:
                    kb += sum(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
            except OSError:
                continue
        return kb / 1024

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.peak_rss = self.peak_rss_mb()
            self.proc.terminate()
            await self.proc.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _healthy(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                return response.status == 200
    except aiohttp.ClientError:
        return False


def feed_order(records: list[SynthRecord], seed: int) -> list[SynthRecord]:
    """The records in the order a feed of many senders delivers them: shuffled (seeded).
    ``matching.synth.generate`` lists each household's members, and each person's duplicate
    records, next to each other; sent in that order over 8 connections, 61% of new records at
    1M shared a locked blocking key with one of the 7 sent just before (each waits for the
    other's commit), against 0.35% shuffled. That measured the file's order, not the feed."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    return shuffled


class Client:
    """Runs client coroutine functions (module-level, picklable arguments) in a child process
    or, with ``same_process``, in the caller's event loop."""

    def __init__(self, same_process: bool) -> None:
        self.pool = None if same_process else ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        )

    async def run(self, function: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        if self.pool is None:
            return await function(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, _in_child, function, args)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def _in_child(function: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
    return run_loop(function(*args))


def _with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    return f"{base.rpartition('/')[0]}/{database}" + (f"?{query}" if query else "")


@asynccontextmanager
async def bench_database(index: str | None, server_url: str) -> AsyncIterator[str]:
    """The URL to run against: ``index`` as it is (kept), else a scratch database on the
    server of ``server_url``, dropped at the end."""
    if index:
        yield index
        return
    name = f"identity_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield _with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def renumber(records: Iterable[SynthRecord], prefix: str) -> None:
    """Prefix each record's own identifier (in its source domain), so that the records are new
    to an index imported from another generated population (whose numbering restarts)."""
    for record in records:
        for identifier in record.identifiers:
            if identifier["domain"] == record.source_domain:
                identifier["value"] = prefix + identifier["value"]


def latency_figures(samples: list[float]) -> dict[str, float]:
    """``n``, ``p50``, ``p95``, ``p99`` and ``mean`` of ``samples`` (seconds) in ms, as
    ``percentiles`` prints them."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"n": len(ordered), "p50": at(0.50), "p95": at(0.95), "p99": at(0.99),
            "mean": statistics.fmean(ordered) * 1000}


def write_figures(path: str | None, figures: dict[str, Any]) -> None:
    """The figures a script printed, as JSON in ``path`` (its ``--json FILE``), for
    ``python -m benchmarks``."""
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2)


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return (f"n={len(ordered)} p50={at(0.50):.2f} ms p95={at(0.95):.2f} ms "
            f"p99={at(0.99):.2f} ms mean={statistics.fmean(ordered) * 1000:.2f} ms")
