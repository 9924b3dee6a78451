"""Fixtures of the service tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ..conftest import _with_database


@pytest.fixture
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """An empty database of its own (dropped at the end), for a service run as a process."""
    name = f"identity_cli_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(server_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    yield _with_database(server_url, name)
    conn = await asyncpg.connect(server_url)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()
