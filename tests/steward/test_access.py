"""Who may call the steward API: with ``[auth] mode = "jwt"`` every route needs a token with the
``steward`` scope (401 without a token, 403 without the scope, problem JSON with an RFC 6750
challenge), and the steward is the token's subject; the whole service serves the API at /api;
a steward's link is notified to PIX consumers (ITI-10)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from identity.app import Service
from identity.auth import READ, WRITE
from identity.config import Settings
from identity.hl7v2.service import Hl7Service
from identity.mpi import Mpi
from identity.store.db import Database
from tests.conftest import with_search_path
from tests.fhir.test_auth import AUDIENCE, EC, ISSUER, RSA, bearer, jwks, token
from tests.hl7v2.test_iti10_notify import Consumer
from tests.steward.conftest import Api, duplicate_pair, serve


@pytest.fixture
async def secured(
    db: Database, make_settings: Callable[..., Settings], tmp_path: Path
) -> AsyncIterator[Api]:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(RSA, EC)))
    settings = make_settings(auth={"mode": "jwt", "issuer": ISSUER, "audience": AUDIENCE,
                                   "jwks_file": str(keys)})
    mpi = Mpi(db, settings)
    await mpi.start()
    async with serve(mpi) as api:
        api.steward = None
        yield api


async def test_every_route_needs_a_token(secured: Api) -> None:
    document_paths = ["/openapi.json", "/review", "/review/1", "/persons/1", "/records/1",
                      "/search?family=x", "/decisions", "/dashboard",
                      "/commands/00000000-0000-0000-0000-000000000000"]
    for path in document_paths:
        status, body, response = await secured.call("GET", path)
        assert status == 401, path
        assert response.content_type == "application/problem+json"
        assert body["type"] == "https://identity.example.org/problems/unauthorized"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="identity"'
    status, body, _ = await secured.call("POST", "/review/1/decision",
                                         {"decision": "dismiss", "version": 1})
    assert status == 401
    status, body, response = await secured.call(
        "GET", "/review", headers=bearer(token(expires_in=-3600, scope="steward")))
    assert status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


async def test_a_token_without_the_steward_scope_is_403(secured: Api) -> None:
    status, body, response = await secured.call(
        "GET", "/review", headers=bearer(token(scope=f"{READ} {WRITE}")))
    assert status == 403
    assert body["type"] == "https://identity.example.org/problems/forbidden"
    challenge = response.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="steward"' in challenge


async def test_the_steward_is_the_tokens_subject_not_a_header(secured: Api) -> None:
    _, _, item = await duplicate_pair(secured.mpi)
    headers = {**bearer(token(scope="steward", sub="carol", client="console")),
               "X-Steward": "mallory"}
    status, body, _ = await secured.call(
        "POST", f"/review/{item.id}/decision", {"decision": "dismiss", "version": 1},
        headers=headers)
    assert status == 200, body
    assert body["review_item"]["resolved_by"] == "steward:carol"
    status, log, _ = await secured.call("GET", "/decisions", headers=headers)
    assert [e["actor"] for e in log["entries"]] == ["steward:carol"]


async def test_mode_none_names_the_steward_by_header_or_anonymous(api: Api) -> None:
    _, _, item = await duplicate_pair(api.mpi)
    status, body, _ = await api.call("POST", f"/review/{item.id}/decision",
                                     {"decision": "dismiss", "version": 1}, steward="dave")
    assert body["review_item"]["resolved_by"] == "steward:dave"
    api.steward = None
    status, body, _ = await api.call("GET", "/decisions")
    assert status == 200 and body["entries"][0]["actor"] == "steward:dave"
    status, body, _ = await api.call("GET", "/review", headers={"X-Steward": "x" * 500})
    assert status == 400


async def test_the_service_serves_the_api(
    run_database_url: str, schema: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        database={"url": with_search_path(run_database_url, schema)},
        http={"host": "127.0.0.1", "port": 0}, mllp={"host": "127.0.0.1", "port": 0},
    )
    service = Service(settings)
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{service.http_port}"
            async with session.get(f"{base}/api/openapi.json") as response:
                assert response.status == 200
                assert (await response.json())["openapi"] == "3.1.0"
            async with session.get(f"{base}/api/review") as response:
                assert response.status == 200
                assert (await response.json())["total"] == 0
    finally:
        await service.stop()


@pytest.fixture
async def consumer() -> AsyncIterator[Consumer]:
    test_consumer = Consumer()
    await test_consumer.server.start()
    yield test_consumer
    await test_consumer.server.stop(grace=1.0)


async def test_a_stewards_link_and_its_undo_are_notified_to_pix_consumers(
    db: Database, make_settings: Callable[..., Settings], consumer: Consumer
) -> None:
    settings = make_settings(mllp={"port": 0, "idle_timeout": 30.0}, **consumer.settings())
    mpi = Mpi(db, settings)
    await mpi.start()
    feed = Hl7Service(mpi, db, settings)  # runs the ITI-10 notifier
    await feed.start()
    try:
        one, two, item = await duplicate_pair(mpi)
        a1, a2 = "A1^^^HOSPA&1.2.3.4.5.1&ISO", "A2^^^HOSPA&1.2.3.4.5.1&ISO"
        await consumer.wait_until(lambda: [a2] in consumer.sets())
        async with serve(mpi) as api:
            done = await api.post(f"/review/{item.id}/decision",
                                  {"decision": "same_person", "version": 1})
            await consumer.wait_until(lambda: consumer.sets()[-1] == [a1, a2])
            count = len(consumer.messages)
            await api.post(done["undo"])
            await consumer.wait_until(lambda: len(consumer.messages) >= count + 2)
            assert sorted(consumer.sets()[count:]) == [[a1], [a2]]
            owner = (await api.get(f"/persons/{one.person.id}"))["person"]
            unmerged = (await api.get(f"/persons/{two.person.id}"))["person"]
            await api.post(f"/persons/{one.person.id}/merge",
                           {"merged": two.person.id, "version": owner["version"],
                            "merged_version": unmerged["version"]})
            await consumer.wait_until(lambda: consumer.sets()[-1] == [a1, a2])
    finally:
        await feed.stop(grace=2.0)
