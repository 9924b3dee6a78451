"""The steward API served on a real socket over a real PostgreSQL (fixtures of
tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from identity.mpi import Envelope, Mpi, Register
from identity.steward import add_routes
from tests.core.helpers import person

FEED = Envelope(source="ADT_A", actor="hl7:ADT_A")


@dataclass
class Api:
    base: str
    session: aiohttp.ClientSession
    mpi: Mpi
    steward: str | None = "ann"

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Any = None,
        headers: dict[str, str] | None = None,
        steward: str | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        sent: dict[str, str] = {}
        if steward or self.steward:
            sent["X-Steward"] = steward or self.steward or ""
        sent.update(headers or {})
        if path.startswith("/api/"):  # as the API names its own routes (an outcome's undo)
            path = path.removeprefix("/api")
        async with self.session.request(
            method, self.base + path, json=body, params=params, headers=sent
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None, response

    async def get(self, path: str, **params: Any) -> Any:
        status, body, _ = await self.call("GET", path, params=params or None)
        assert status == 200, body
        return body

    async def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        status, data, _ = await self.call("POST", path, body if body is not None else {}, **kw)
        assert status == 200, data
        return data


@asynccontextmanager
async def serve(mpi: Mpi) -> AsyncIterator[Api]:
    """The API on 127.0.0.1, an ephemeral port, with a client session."""
    app = web.Application()
    add_routes(app, mpi, mpi.settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            yield Api(f"http://127.0.0.1:{port}/api", session, mpi)
    finally:
        await runner.cleanup()


@pytest.fixture
async def api(mpi: Mpi) -> AsyncIterator[Api]:
    async with serve(mpi) as door:
        yield door


async def duplicate_pair(mpi: Mpi, first: str = "A1", second: str = "A2", **demographics: Any):  # type: ignore[no-untyped-def]
    """Two HOSPA records of one patient: the second opens a review item against the first."""
    one = await mpi.handle(Register(subject=person("HOSPA", first, **demographics)), FEED)
    two = await mpi.handle(Register(subject=person("HOSPA", second, **demographics)), FEED)
    assert two.review_items, "expected a review item"
    return one, two, two.review_items[0]


PEOPLE = [
    {"family": "Mohr", "given": "Alice", "birth_date": "1958-01-30", "sex": "F"},
    {"family": "Okafor", "given": "Chidi", "birth_date": "1971-06-02", "sex": "M"},
    {"family": "Lindqvist", "given": "Greta", "birth_date": "1990-11-17", "sex": "F"},
    {"family": "Tanaka", "given": "Hiro", "birth_date": "1949-03-08", "sex": "M"},
]


@dataclass
class Console:
    base: str  # http://127.0.0.1:PORT
    session: aiohttp.ClientSession
    mpi: Mpi

    async def page(self, path: str, **kw: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.session.get(self.base + path, allow_redirects=False, **kw) as r:
            return r.status, await r.text(), r

    async def act(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        async with self.session.post(
            self.base + "/steward/act" + path, json=body if body is not None else {},
            headers=headers,
        ) as r:
            text = await r.text()
            return r.status, json.loads(text) if text else None, r


@asynccontextmanager
async def console_of(mpi: Mpi) -> AsyncIterator[Console]:
    async with serve(mpi) as api:
        base = api.base.removesuffix("/api")
        jar = aiohttp.CookieJar(unsafe=True)  # cookies of 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            yield Console(base, session, mpi)


@pytest.fixture
async def console(mpi: Mpi) -> AsyncIterator[Console]:
    async with console_of(mpi) as door:
        yield door
