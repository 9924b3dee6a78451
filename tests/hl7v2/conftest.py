"""Fixtures of the HL7 v2 front door tests: a real Hl7Service on 127.0.0.1 (port 0) over the
real PostgreSQL of tests/conftest.py, and MLLP clients to talk to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from identity.config import Settings
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.mpi import Mpi
from identity.store.db import Database

Start = Callable[..., Awaitable[Hl7Service]]


@pytest.fixture
async def start_service(
    db: Database, make_settings: Callable[..., Settings]
) -> AsyncIterator[Start]:
    """Start an Hl7Service (and its Mpi) with settings overrides; stopped at teardown."""
    started: list[Hl7Service] = []

    async def start(**overrides: Any) -> Hl7Service:
        overrides.setdefault("mllp", {"port": 0, "idle_timeout": 30.0})
        settings = make_settings(**overrides)
        mpi = Mpi(db, settings)
        await mpi.start()
        service = Hl7Service(mpi, db, settings)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop(grace=2.0)


@pytest.fixture
async def service(start_service: Start) -> Hl7Service:
    return await start_service()


@pytest.fixture
async def client(service: Hl7Service) -> AsyncIterator[MLLPClient]:
    async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as mllp:
        yield mllp
