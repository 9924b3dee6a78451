"""Fuzz targets over a real core on a real PostgreSQL: the HL7 door's handler and the FHIR door
over HTTP (aiohttp on 127.0.0.1).

They find what the pure targets cannot: values the database refuses, numbers it cannot hold,
errors raised by the core that the door does not map. Properties: the HL7 handler always
answers (a frameable ACK/RSP that parses, MSA-1 AA/AE/AR) and logs no internal error; every
FHIR response is < 500, and a 4xx carries an OperationOutcome.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import yarl
from aiohttp import web

from fuzz.targets import DOMAINS, Defect, check_reply
from identity.config import Settings
from identity.fhir import add_routes
from identity.hl7v2.handler import Hl7Handler
from identity.mpi import Mpi
from identity.store.db import Database
from identity.store.migrate import migrate


class _Errors(logging.Handler):
    """Keeps the ERROR records (log.exception: an error no door mapped) of the identity loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> str:
        text = "\n".join(
            record.getMessage() + ("\n" + self.format(record) if record.exc_info else "")
            for record in self.records
        )
        self.records.clear()
        return text


@dataclass
class Live:
    """A core with both doors, as the service runs them."""

    mpi: Mpi
    handler: Hl7Handler
    base: str
    session: aiohttp.ClientSession
    errors: _Errors = field(default_factory=_Errors)


def live_settings() -> Settings:
    return Settings(domains=DOMAINS)


@asynccontextmanager
async def serve(mpi: Mpi) -> AsyncIterator[Live]:
    """The HL7 handler and the FHIR app (with the service's body limit) over ``mpi``."""
    settings = mpi.settings
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    add_routes(app, mpi, settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    errors = _Errors()
    errors.setFormatter(logging.Formatter())
    logger = logging.getLogger("identity")
    logger.addHandler(errors)
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield Live(mpi, Hl7Handler(mpi, settings), f"http://127.0.0.1:{port}/fhir", session,
                       errors)
    finally:
        logger.removeHandler(errors)
        await runner.cleanup()


@asynccontextmanager
async def scratch_core(server_url: str) -> AsyncIterator[Mpi]:
    """A core on a database of its own on ``server_url``'s server, dropped at the end."""
    name = f"identity_fuzz_{uuid.uuid4().hex[:12]}"
    base, _, rest = server_url.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (f"?{rest}" if rest else "")
    conn = await asyncpg.connect(server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        db = await Database.connect(url, min_size=1, max_size=10)
        try:
            async with db.connection() as conn:
                await migrate(conn)
            mpi = Mpi(db, live_settings())
            await mpi.start()
            yield mpi
        finally:
            await db.close()
    finally:
        conn = await asyncpg.connect(server_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def check_hl7_door(live: Live, raw: bytes) -> None:
    """The handler the MLLP server calls: it must answer every message, and no error may end
    up as an internal error (AE 207) or escape it (a dropped connection)."""
    live.errors.take()
    try:
        reply = await live.handler.handle(raw)
    except Exception as exc:
        raise Defect(f"the HL7 handler raised {type(exc).__name__}: {exc}") from exc
    logged = live.errors.take()
    if logged:
        raise Defect(f"internal error logged: {logged}")
    if b"database unavailable" in reply:  # the database is there: an error taken for an outage
        raise Defect(f"answered as if the database were unavailable: {reply!r}")
    check_reply(reply, None)


async def check_fhir_http(live: Live, request: dict[str, Any]) -> None:
    """One request to the FHIR door: status < 500, and a 4xx answers an OperationOutcome."""
    live.errors.take()
    url = live.base + request["path"]
    if request["query"]:
        url += "?" + urlencode(request["query"], errors="surrogatepass")
    try:
        target = yarl.URL(url, encoded=True)
        context = live.session.request(request["method"], target, data=request["body"],
                                       headers=request["headers"])
    except (ValueError, UnicodeError):
        return  # the client cannot send it
    try:
        async with context as response:
            status = response.status
            body = await response.read()
            ctype = response.content_type
    except (ValueError, UnicodeError, aiohttp.InvalidURL):
        return  # the client cannot send it
    except aiohttp.ClientError as exc:
        raise Defect(f"{request['method']} {url}: no response ({type(exc).__name__}: {exc})") \
            from exc
    logged = live.errors.take()
    if status >= 500:
        raise Defect(f"{request['method']} {url} -> {status}: {body[:400]!r}\n{logged}")
    if logged:
        raise Defect(f"{request['method']} {url} -> {status} but logged: {logged}")
    if status >= 400 and b"OperationOutcome" not in body:
        raise Defect(f"{request['method']} {url} -> {status} ({ctype}) without an "
                     f"OperationOutcome: {body[:400]!r}")
