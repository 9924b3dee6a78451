"""`identity serve` with several worker processes: shared ports, one index, restarts, stop."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import psutil
import pytest

from identity.hl7v2.mllp import MLLPClient
from identity.workers import _CRASH_WINDOW

from ..conftest import DEMO_DOMAINS
from ..waiting import eventually

A04 = (
    "MSH|^~\\&|ADT_A|HOSP|IDENTITY|MPI|20260101120000||ADT^A04^ADT_A01|{id}|P|2.5\r"
    "EVN|A04|20260101120000\r"
    "PID|||{pid}^^^HOSPA||Doe^Jane||19700101|F\r"
    "PV1||O\r"
)


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    http: int = 0
    mllp: int = 0
    started: float = 0.0
    lines: list[str] = field(default_factory=list)

    async def until(self, pattern: str) -> re.Match[str]:
        """Read the log until a line matches ``pattern`` (60 s at most)."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} in:\n" + "".join(self.lines)
            line = (await asyncio.wait_for(self.proc.stderr.readline(), remaining)).decode()
            assert line, f"serve exited before {pattern!r}:\n" + "".join(self.lines)
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    async def stop(self) -> tuple[int, str]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stderr is not None
        rest = await asyncio.wait_for(self.proc.stderr.read(), 60)
        code = await self.proc.wait()
        return code, "".join(self.lines) + rest.decode()


@pytest.fixture
async def served(fresh_database: str) -> AsyncIterator[Served]:
    env = {
        **os.environ,
        "IDENTITY_WORKERS": "2",
        "IDENTITY_DATABASE__URL": fresh_database,
        "IDENTITY_HTTP__PORT": "0",
        "IDENTITY_MLLP__PORT": "0",
        "IDENTITY_DOMAINS": json.dumps(DEMO_DOMAINS),
    }
    env.pop("IDENTITY_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "identity", "serve",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    service = Served(proc)
    try:
        match = await service.until(
            r"event=service_started workers=2 http=127\.0\.0\.1:(\d+) mllp=127\.0\.0\.1:(\d+)"
        )
        service.http, service.mllp = int(match[1]), int(match[2])
        service.started = time.monotonic()
        yield service
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _workers(parent: int) -> set[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    return {p.pid for p in psutil.Process(parent).children()
            if "spawn_main" in " ".join(p.cmdline())}


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (exited, not yet reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _serving_processes(port: int, tries: int = 200) -> set[int]:
    """The processes that answer /healthz on new connections (each request its own)."""
    seen: set[int] = set()
    for _ in range(tries):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                seen.add((await response.json())["process"])
        if len(seen) == 2:
            break
    return seen


async def test_two_workers_share_the_ports_and_the_index(served: Served) -> None:
    workers = _workers(served.proc.pid)
    assert len(workers) == 2
    # both workers answer on the one HTTP port
    assert await _serving_processes(served.http) == workers
    # a record fed over MLLP (whichever worker) is found over FHIR (whichever worker)
    async with MLLPClient("127.0.0.1", served.mllp) as client:
        reply = (await client.send(A04.format(id="W1", pid="W77"))).decode()
    assert "MSA|AA|W1" in reply
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for _ in range(4):  # new connections: both workers see the committed record
            async with s.get(
                f"http://127.0.0.1:{served.http}/fhir/Patient/$ihe-pix",
                params={"sourceIdentifier": "urn:oid:1.2.3.4.5.1|W77"},
            ) as response:
                assert response.status == 200, await response.text()
                body = await response.json(content_type=None)
            assert body["resourceType"] == "Parameters"
            names = {p["name"] for p in body.get("parameter", ())}
            assert "targetIdentifier" in names, body  # the enterprise ID at least

    # a worker that dies after it has run a while is started again. The supervisor tells a
    # crash from a failed start by the time alone (no event to wait for): this sleep waits out
    # that window
    await asyncio.sleep(max(0.0, served.started + _CRASH_WINDOW + 0.5 - time.monotonic()))
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    await served.until(rf"event=worker_exited worker=\d pid={victim} code=-9")
    await served.until(r"event=worker_started worker=\d pid=\d+")
    replaced = _workers(served.proc.pid)
    assert victim not in replaced

    async def both_answer() -> bool:
        return len(await _serving_processes(served.http)) == 2

    await eventually(both_answer, 60, 0.2, what="the new worker answering on the HTTP port")

    code, text = await served.stop()
    assert code == 0, text
    assert text.count("event=worker_ready") == 3
    # every line names its process: the workers' own and the supervisor's
    ready = re.findall(r"pid=(\d+) logger=identity\.app event=worker_ready", text)
    assert workers | replaced == {int(p) for p in ready}
    assert f"pid={served.proc.pid} logger=identity.workers event=service_stopped" in text
    assert "logger=identity.workers event=service_stopped" in text
    assert not any(psutil.pid_exists(p) for p in replaced)


async def test_a_worker_dying_at_start_stops_the_service(served: Served) -> None:
    """A worker that exits right after it started is not retried forever: the supervisor
    stops the others and exits with an error (a supervisor such as systemd decides)."""
    workers = _workers(served.proc.pid)
    os.kill(min(workers), signal.SIGKILL)
    await served.until(r"event=worker_exited")
    await asyncio.wait_for(served.proc.wait(), 60)  # exits by itself, no signal sent
    code, text = await served.stop()
    assert code == 1, text
    assert "after it started" in text
    assert not any(psutil.pid_exists(p) for p in workers)


async def test_workers_stop_when_the_supervisor_is_killed(served: Served) -> None:
    """Killed without the chance to stop its workers (SIGKILL, OOM), the supervisor leaves no
    worker holding the ports: each notices and stops by itself."""
    workers = _workers(served.proc.pid)
    assert len(workers) == 2
    served.proc.kill()
    await served.proc.wait()
    await eventually(lambda: not any(_running(p) for p in workers), 20, 0.1,
                     what="every worker gone after its supervisor")
