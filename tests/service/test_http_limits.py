"""The HTTP door's limits on the real service over real sockets: request time (a slow query, a
body sent slowly, and a write that must not be reported as failed), idle connections, header
size and the page size. Each shows the protocol's answer, that nothing was changed, and that the
service goes on serving. The body size limit is in test_service.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest

from identity.app import Service
from identity.config import Settings

from ..conftest import DEMO_DOMAINS
from ..waiting import eventually

HOSPA = "urn:oid:1.2.3.4.5.1"
JSON = "application/fhir+json"
TIMEOUT = 0.5  # [http] request_timeout of these tests


@asynccontextmanager
async def running(url: str, **sections: Any) -> AsyncIterator[Service]:
    http = {"port": 0, "request_timeout": TIMEOUT, **sections.pop("http", {})}
    settings = Settings(database={"url": url}, http=http, mllp={"port": 0},
                        domains=DEMO_DOMAINS, **sections)
    service = Service(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def patient(value: str, family: str = "Limit") -> dict[str, Any]:
    return {"resourceType": "Patient", "identifier": [{"system": HOSPA, "value": value}],
            "name": [{"family": family, "given": ["Ann"]}], "birthDate": "1970-01-01"}


async def put(session: aiohttp.ClientSession, base: str, value: str) -> tuple[int, Any]:
    async with session.put(f"{base}/Patient", params={"identifier": f"{HOSPA}|{value}"},
                           json=patient(value),
                           headers={"X-Client-Id": "ADT_A", "Content-Type": JSON}) as response:
        return response.status, await response.json(content_type=None)


async def search(session: aiohttp.ClientSession, base: str, **params: str) -> tuple[int, Any]:
    async with session.get(f"{base}/Patient", params=params) as response:
        return response.status, await response.json(content_type=None)


@asynccontextmanager
async def records_locked(url: str) -> AsyncIterator[asyncpg.Connection]:
    """source_record locked against reads and writes until the block ends."""
    conn = await asyncpg.connect(url)
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute("LOCK TABLE source_record IN ACCESS EXCLUSIVE MODE")
    try:
        yield conn
    finally:
        await transaction.rollback()
        await conn.close()


async def waiting_on_a_lock(conn: asyncpg.Connection) -> bool:
    """Another session of this database waits for the lock on source_record."""
    return bool(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'source_record'::regclass"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"))


def timed_out(status: int, body: Any) -> bool:
    return (status == 503 and body["resourceType"] == "OperationOutcome"
            and body["issue"][0]["code"] == "timeout")


async def test_a_search_over_request_timeout_is_503_timeout_and_the_service_serves_on(
    fresh_database: str,
) -> None:
    async with running(fresh_database) as service, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{service.http_port}/fhir"
        assert (await put(session, base, "T1"))[0] == 201
        async with records_locked(fresh_database):
            async with asyncio.timeout(10):  # answered, never a hang
                status, body = await search(session, base, family="Limit")
            assert timed_out(status, body), body
            async with session.get(f"{base}/Patient", params={"family": "Limit",
                                                              "_format": "xml"}) as response:
                assert response.status == 503  # in the format asked for
                assert "<OperationOutcome" in await response.text()
        status, body = await search(session, base, family="Limit")
        assert status == 200 and body["total"] == 1


async def test_a_write_waiting_past_request_timeout_is_not_reported_as_failed(
    fresh_database: str,
) -> None:
    async with running(fresh_database) as service, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{service.http_port}/fhir"
        async with records_locked(fresh_database) as conn:
            writing = asyncio.create_task(put(session, base, "W1"))
            await eventually(lambda: waiting_on_a_lock(conn), what="the PUT waiting on the lock")
            await asyncio.sleep(3 * TIMEOUT)  # well past the request's deadline
            assert not writing.done()
        async with asyncio.timeout(10):
            status, body = await writing
        assert status == 201 and body["identifier"][0]["value"] == "W1"  # committed and said so
        status, body = await search(session, base, identifier=f"{HOSPA}|W1")
        assert body["total"] == 1


async def test_a_body_sent_slowly_is_503_timeout(fresh_database: str) -> None:
    async with running(fresh_database) as service:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
        writer.write(b"PUT /fhir/Patient?identifier=urn:oid:1.2.3.4.5.1|S1 HTTP/1.1\r\n"
                     b"Host: localhost\r\nContent-Type: application/fhir+json\r\n"
                     b"X-Client-Id: ADT_A\r\nContent-Length: 400\r\n\r\n"
                     b'{"resourceType": "Patient", ')  # and the rest never comes
        await writer.drain()
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503 ")
            assert b'"code":"timeout"' in await reader.read(4096)
        writer.close()
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{service.http_port}/fhir"
            status, body = await search(session, base, identifier=f"{HOSPA}|S1")
            assert status == 200 and body["total"] == 0  # nothing was written


async def test_a_connection_without_a_whole_request_is_closed_after_idle_timeout(
    fresh_database: str,
) -> None:
    async with running(fresh_database, http={"idle_timeout": 0.5}) as service:
        quiet = await asyncio.open_connection("127.0.0.1", service.http_port)
        slow = await asyncio.open_connection("127.0.0.1", service.http_port)
        slow[1].write(b"GET /fhir/metadata HTTP/1.1\r\nHost: local")  # headers never end
        async with asyncio.timeout(10):
            for reader, writer in (quiet, slow):
                assert await reader.read() == b""  # closed, no response
                writer.close()
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{service.http_port}/healthz") as response:
                assert response.status == 200


async def test_a_header_over_aiohttp_s_limit_is_400_and_the_service_serves_on(
    fresh_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = "Bearer eyJSECRET" + "x" * 9000  # a token over the header limit: never logged
    async with running(fresh_database) as service, aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{service.http_port}/fhir"
        async with session.get(f"{base}/metadata", headers={"Authorization": token}) as response:
            assert response.status == 400
        async with session.get(f"{base}/metadata") as response:
            assert response.status == 200
    assert "event=http_bad_request error=LineTooLong" in caplog.text
    assert "eyJSECRET" not in caplog.text


@pytest.mark.parametrize("asked", ["3", "100000"])
async def test_count_over_max_page_size_is_lowered_and_said(
    fresh_database: str, asked: str
) -> None:
    async with running(fresh_database, fhir={"max_page_size": 2}) as service, \
            aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{service.http_port}/fhir"
        for value in ("C1", "C2", "C3"):
            assert (await put(session, base, value))[0] == 201
        status, body = await search(session, base, family="Limit", _count=asked)
        assert status == 200 and body["total"] == 3
        modes = [entry["search"]["mode"] for entry in body["entry"]]
        assert modes == ["match", "match", "outcome"]
        outcome = body["entry"][-1]["resource"]
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "information"
        assert outcome["issue"][0]["expression"] == ["_count"]
        links = {link["relation"]: link["url"] for link in body["link"]}
        assert "_count=2" in links["self"] and "_count=2" in links["next"]
        status, body = await search(session, base, family="Limit", _count="2")
        assert [entry["search"]["mode"] for entry in body["entry"]] == ["match", "match"]
