"""The FHIR door served on a real socket over a real PostgreSQL (fixtures of tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from identity.config import Settings
from identity.fhir import add_routes
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.mpi import Mpi
from identity.store.db import Database

HOSPA = "urn:oid:1.2.3.4.5.1"
HOSPB = "urn:oid:1.2.3.4.5.2"
LAB = "urn:oid:1.2.3.4.5.3"
NATIONAL = "urn:oid:2.16.840.1.113883.4.1"
MPI_SYSTEM = "urn:oid:1.3.6.1.4.1.21367.2026.1.1"
JSON = "application/fhir+json"


@dataclass
class Fhir:
    base: str
    session: aiohttp.ClientSession
    mpi: Mpi

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        client: str | None = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        all_headers = {"Accept": JSON}
        if client:
            all_headers["X-Client-Id"] = client
        if body is not None:
            all_headers["Content-Type"] = JSON
        all_headers.update(headers or {})
        async with self.session.request(
            method, self.base + path, json=body, params=params, headers=all_headers
        ) as response:
            text = await response.text()
            import json

            data = json.loads(text) if text else None
            return response.status, data, response

    async def put_patient(
        self, system: str, value: str, patient: dict[str, Any], client: str = "ADT_A"
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        return await self.call(
            "PUT", "/Patient", patient, client=client, params={"identifier": f"{system}|{value}"}
        )


def patient(
    system: str,
    value: str,
    family: str = "Smith",
    given: str = "John",
    birth_date: str | None = "1980-03-12",
    gender: str | None = "male",
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": family, "given": [given]}],
    }
    if birth_date:
        resource["birthDate"] = birth_date
    if gender:
        resource["gender"] = gender
    resource.update(extra)
    return resource


@asynccontextmanager
async def serve(mpi: Mpi) -> AsyncIterator[Fhir]:
    """The door on 127.0.0.1, an ephemeral port, with a client session."""
    app = web.Application()
    add_routes(app, mpi, mpi.settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            yield Fhir(f"http://127.0.0.1:{port}/fhir", session, mpi)
    finally:
        await runner.cleanup()


@pytest.fixture
async def fhir(mpi: Mpi) -> AsyncIterator[Fhir]:
    async with serve(mpi) as door:
        yield door


@pytest.fixture
async def doors(
    db: Database, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[Fhir, MLLPClient]]:
    """The FHIR door and an MLLP client of the HL7 v2 service, on one core."""
    settings = make_settings(mllp={"port": 0, "idle_timeout": 30.0})
    mpi = Mpi(db, settings)
    await mpi.start()
    service = Hl7Service(mpi, db, settings)
    await service.start()
    try:
        async with serve(mpi) as fhir, MLLPClient("127.0.0.1", service.port, timeout=10.0) as mllp:
            yield fhir, mllp
    finally:
        await service.stop(grace=2.0)
