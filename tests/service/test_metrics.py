"""GET /metrics and /readyz over real sockets: the doors' counts and latencies, match decisions,
the review queue read from the database, the sum of two workers, readiness while draining and
with the database gone (docs/operations.md, *Metrics and health*)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from joserfc.jwk import RSAKey
from prometheus_client.parser import text_string_to_metric_families

from identity.app import Service
from identity.config import Settings
from identity.hl7v2.mllp import MLLPClient

from ..conftest import DEMO_DOMAINS
from ..hl7v2.messages import adt, msa, pix_query, reply
from .test_workers import A04, Served

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, by name and labels (parsed by prometheus-client)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(session: aiohttp.ClientSession, port: int) -> Samples:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(await response.text())


async def ready(session: aiohttp.ClientSession, port: int) -> tuple[int, dict]:
    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
        return response.status, await response.json()


@pytest.fixture
async def service(fresh_database: str) -> AsyncIterator[Service]:
    service = Service(Settings(database={"url": fresh_database}, http={"port": 0},
                               mllp={"port": 0}, domains=DEMO_DOMAINS,
                               maintenance={"write_unconsumed_topics": True}))
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def test_metrics_count_both_doors_and_read_the_queue_from_the_database(
    service: Service, fresh_database: str
) -> None:
    assert service.hl7 is not None and service.http_port and service.facts is not None
    port = service.http_port
    service.facts.ttl = 0.0  # the facts read at each scrape (kept 5 s otherwise)
    async with aiohttp.ClientSession() as http:
        # counters are per process: a test measures what it adds
        before = await scrape(http, port)
        async with MLLPClient("127.0.0.1", service.hl7.port) as mllp:
            # twins-like records: the second and third are possible duplicates of the first
            for i in range(3):
                ack = reply(await mllp.send(adt("A04", f"M{i}^^^HOSPA", name="DOE^JANE",
                                                dob="19700101", sex="F")))
                assert msa(ack) == "AA"
            assert msa(reply(await mllp.send(pix_query("M0^^^HOSPA")))) == "AA"
            unsupported = A04.format(id="U1", pid="U1").replace("ADT^A04^ADT_A01", "ORU^R01")
            assert b"MSA|AR|" in await mllp.send(unsupported)
        base = f"http://127.0.0.1:{port}/fhir"
        async with http.get(f"{base}/Patient/$ihe-pix",
                            params={"sourceIdentifier": "urn:oid:1.2.3.4.5.1|M0"}) as response:
            assert response.status == 200
        async with http.get(f"{base}/Patient", params={"family": "doe"}) as response:
            assert response.status == 200
        async with http.get(f"{base}/Patient/999999999") as response:
            assert response.status == 404
        async with http.get(f"{base}/Patient/123/not-a-route") as response:
            assert response.status == 404
        after = await scrape(http, port)

        def added(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert added("identity_hl7_messages_total", message_type="ADT^A04", ack_code="AA") == 3
        assert added("identity_hl7_messages_total", message_type="QBP^Q23", ack_code="AA") == 1
        assert added("identity_hl7_messages_total", message_type="other", ack_code="AR") == 1
        assert added("identity_hl7_message_duration_seconds_count", message_type="ADT^A04") == 3
        assert added("identity_hl7_message_duration_seconds_bucket",
                     message_type="ADT^A04", le="+Inf") == 3
        assert added("identity_hl7_message_duration_seconds_sum", message_type="ADT^A04") > 0
        assert added("identity_fhir_requests_total",
                     transaction="ITI-83", status_class="2xx") == 1
        assert added("identity_fhir_requests_total",
                     transaction="ITI-78", status_class="2xx") == 1
        assert added("identity_fhir_requests_total", transaction="read", status_class="4xx") == 1
        assert added("identity_fhir_requests_total",
                     transaction="unmatched", status_class="4xx") == 1
        assert added("identity_fhir_request_duration_seconds_bucket",
                     transaction="ITI-83", le="+Inf") == 1
        decisions = sum(added("identity_match_decisions_total", decision=d)
                        for d in ("new_person", "linked", "review", "unchanged_link"))
        assert decisions == 3
        # no raw path, identifier or name in any label
        text = json.dumps(sorted(str(k) for k in after))
        assert "999999999" not in text and "M0" not in text and "DOE" not in text

        conn = await asyncpg.connect(fresh_database)
        try:
            open_items = await conn.fetchval(
                "SELECT count(*) FROM review_item WHERE status = 'open'")
        finally:
            await conn.close()
        assert open_items > 0
        assert value(after, "identity_review_queue_items") == open_items
        assert value(after, "identity_review_queue_oldest_age_seconds") >= 0
        assert value(after, "identity_database_facts_up") == 1
        assert value(after, "identity_outbox_pending_rows", topic="identity.changed") >= 3
        assert value(after, "identity_calibration_runs_total") == 0
        assert value(after, "identity_db_pool_connections", state="max") == 20
        assert 1 <= value(after, "identity_db_pool_connections", state="open") <= 20

        assert await ready(http, port) == (200, {
            "status": "ready", "failed": [], "process": os.getpid(),
            "checks": {"draining": {"ok": True}, "database": {"ok": True},
                       "migrations": {"ok": True, "pending": []}}})


async def test_readyz_fails_while_a_migration_is_not_applied(
    service: Service, fresh_database: str
) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        latest = await conn.fetchrow(
            "DELETE FROM schema_migration WHERE version = (SELECT max(version) "
            "FROM schema_migration) RETURNING version, name")
        async with aiohttp.ClientSession() as http:
            status, body = await ready(http, service.http_port or 0)
        assert status == 503 and body["failed"] == ["migrations"], body
        assert body["checks"]["migrations"] == {"ok": False, "pending": [latest["version"]]}
    finally:
        await conn.execute("INSERT INTO schema_migration (version, name) VALUES ($1, $2)",
                           latest["version"], latest["name"])
        await conn.close()
    async with aiohttp.ClientSession() as http:
        assert (await ready(http, service.http_port or 0))[0] == 200


async def test_readyz_fails_when_the_database_is_gone(
    service: Service, fresh_database: str, server_url: str
) -> None:
    port = service.http_port
    assert port and service.facts is not None
    service.facts.ttl = 0.0  # read the facts on every scrape
    name = fresh_database.partition("?")[0].rpartition("/")[2]  # the embedded: ?host=/…
    conn = await asyncpg.connect(server_url)
    try:  # the database goes away under the running service (its connections are ended)
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()
    async with aiohttp.ClientSession() as http:
        status, body = await ready(http, port)
        assert status == 503, body
        assert body["failed"] == ["database", "migrations"]
        assert body["checks"]["database"]["ok"] is False and body["checks"]["database"]["detail"]
        # /metrics still answers: the process's metrics, and the facts reported missing
        samples = await scrape(http, port)
        assert value(samples, "identity_database_facts_up") == 0
        assert ("identity_review_queue_items", frozenset()) not in samples


async def test_metrics_off_and_no_token_under_jwt(fresh_database: str, tmp_path: Path) -> None:
    key = RSAKey.generate_key(2048, parameters={"kid": "k"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    auth = {"mode": "jwt", "issuer": "https://idp.example", "audience": "https://mpi.example",
            "jwks_file": str(jwks)}
    for metrics_on in (True, False):
        service = Service(Settings(database={"url": fresh_database},
                                   http={"port": 0, "metrics": metrics_on}, mllp={"port": 0},
                                   domains=DEMO_DOMAINS, auth=auth))
        await service.start()
        try:
            base = f"http://127.0.0.1:{service.http_port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{base}/fhir/Patient") as response:
                    assert response.status == 401  # the FHIR door wants a token ...
                for probe in ("/healthz", "/readyz"):  # ... the probes do not
                    async with http.get(base + probe) as response:
                        assert response.status == 200
                async with http.get(f"{base}/metrics") as response:
                    assert response.status == (200 if metrics_on else 404)
        finally:
            await service.stop()


async def _connection_to(port: int, pid: int | None = None, tries: int = 200
                         ) -> tuple[aiohttp.ClientSession, int]:  # fmt: skip
    """A keep-alive session of one connection and the worker serving it (other than ``pid``)."""
    for _ in range(tries):
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            served_by = (await response.json())["process"]
        if served_by != pid:
            return session, served_by
        await session.close()
    raise AssertionError("no connection reached another worker")


@pytest.fixture
async def draining_served(fresh_database: str) -> AsyncIterator[Served]:
    """`identity serve` with two workers that drain 3 s after SIGTERM."""
    env = {
        **os.environ,
        "IDENTITY_WORKERS": "2",
        "IDENTITY_DATABASE__URL": fresh_database,
        "IDENTITY_HTTP__PORT": "0",
        "IDENTITY_HTTP__DRAIN_SECONDS": "3",
        "IDENTITY_MLLP__PORT": "0",
        "IDENTITY_DOMAINS": json.dumps(DEMO_DOMAINS),
    }
    env.pop("IDENTITY_CONFIG", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "identity", "serve",
        env=env, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )
    served = Served(proc)
    try:
        match = await served.until(
            r"event=service_started workers=2 http=127\.0\.0\.1:(\d+) mllp=127\.0\.0\.1:(\d+)")
        served.http, served.mllp = int(match[1]), int(match[2])
        yield served
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_two_workers_are_summed_and_readyz_fails_while_draining(
    draining_served: Served,
) -> None:
    served = draining_served
    first, a = await _connection_to(served.http)
    second, b = await _connection_to(served.http, a)
    try:
        assert a != b
        # FHIR requests on a connection known to each worker: 3 on one, 5 on the other
        for session, count in ((first, 3), (second, 5)):
            for _ in range(count):
                async with session.get(f"http://127.0.0.1:{served.http}/fhir/metadata") as r:
                    assert r.status == 200
        sent = 12
        for i in range(sent):  # a connection each: the kernel hands them to either worker
            async with MLLPClient("127.0.0.1", served.mllp) as mllp:
                ack = await mllp.send(A04.format(id=f"W{i}", pid=f"WM{i}"))
            assert b"MSA|AA|" in ack
        # each worker answers a scrape with both workers' counts
        for session in (first, second):
            samples = await scrape(session, served.http)
            assert value(samples, "identity_fhir_requests_total",
                         transaction="capabilities", status_class="2xx") == 8
            assert value(samples, "identity_fhir_request_duration_seconds_bucket",
                         transaction="capabilities", le="+Inf") == 8
            assert value(samples, "identity_hl7_messages_total",
                         message_type="ADT^A04", ack_code="AA") == sent
            assert sum(value(samples, "identity_match_decisions_total", decision=d)
                       for d in ("new_person", "linked", "review", "unchanged_link")) == sent
            # each live worker's pool, summed: at least one open connection each
            assert value(samples, "identity_db_pool_connections", state="max") == 40
            assert value(samples, "identity_db_pool_connections", state="open") >= 2
            assert (await ready(session, served.http))[0] == 200

        assert served.proc.pid is not None
        served.proc.send_signal(signal.SIGTERM)
        await served.until(r"event=draining seconds=3")
        status, body = 0, {}
        for _ in range(50):  # both workers drain (new connections: either one answers)
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)) as http:
                status, body = await ready(http, served.http)
            if status == 503:
                break
            await asyncio.sleep(0.05)
        assert status == 503 and body["failed"] == ["draining"], body
        assert served.proc.stderr is not None  # it stops by itself once drained
        rest = await asyncio.wait_for(served.proc.stderr.read(), 60)
        code = await served.proc.wait()
        text = "".join(served.lines) + rest.decode()
        assert code == 0, text
        assert text.count("event=draining seconds=3") == 2  # each worker
        assert "event=service_stopped" in text
    finally:
        await first.close()
        await second.close()


def test_a_killed_supervisors_metrics_directory_is_removed_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from identity.workers import _metrics_directory

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    gone = tmp_path / "identity-metrics-999999999-abc"  # no such process
    gone.mkdir()
    (gone / "counter_1.db").write_bytes(b"")
    running = tmp_path / f"identity-metrics-{os.getpid()}-def"  # its supervisor runs
    running.mkdir()
    made = Path(_metrics_directory())
    assert made.parent == tmp_path and made.name.startswith(f"identity-metrics-{os.getpid()}-")
    assert not gone.exists() and running.exists()
