"""Shared fixtures: a real PostgreSQL for every test that needs one.

``IDENTITY_TEST_DATABASE_URL`` names a server to use; otherwise an embedded PostgreSQL
(pgserver) is started for the session in a temporary directory. Each test run creates its own
database (dropped at the end), and each test its own schema in it, so that runs and tests do
not interfere.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from identity.config import Settings
from identity.loop import loop_factory
from identity.mpi import Mpi
from identity.store.db import Database
from identity.store.embedded import EmbeddedPostgres
from identity.store.migrate import migrate

DEMO_DOMAINS = [
    {"namespace": "HOSPA", "oid": "1.2.3.4.5.1", "sources": ["ADT_A"]},
    {"namespace": "HOSPB", "oid": "1.2.3.4.5.2", "sources": ["ADT_B"]},
    {"namespace": "LAB", "oid": "1.2.3.4.5.3", "sources": ["LIS", "ADT_A"]},
    {"namespace": "NATIONAL", "oid": "2.16.840.1.113883.4.1", "identifies_person": True},
]


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any] | None:
    """The tests run on the event loop the service runs on (identity.loop: uvloop when it is
    installed)."""
    factory = loop_factory()
    return None if factory is None else {"uvloop": factory}


def _with_database(url: str, database: str) -> str:
    base, _, query = url.partition("?")
    scheme_host, _, _ = base.rpartition("/")
    return f"{scheme_host}/{database}" + (f"?{query}" if query else "")


def with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (a test's own): the query string may already
    hold parameters (the embedded server's ``host=``)."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@contextmanager
def private_directory(prefix: str) -> Iterator[Path]:
    """A temporary directory of our own. Not pytest's tmp_path: pytest deletes old basetemp
    directories when other pytest runs start, which would pull a live server's data away."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A maintenance URL of the test server (its ``postgres`` database)."""
    url = os.environ.get("IDENTITY_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with private_directory("identity-test-pg-") as directory:
        embedded = EmbeddedPostgres(directory)
        embedded_url = embedded.start_sync()
        try:
            yield _with_database(embedded_url, "postgres")
        finally:
            embedded.stop_sync()


@pytest.fixture(scope="session")
async def run_database_url(server_url: str) -> AsyncIterator[str]:
    """A database of this test run's own, dropped when the run ends."""
    name = f"identity_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield _with_database(server_url, name)
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def migrated_schema(url: str, prefix: str = "t_") -> str:
    """A new schema in the database ``url`` names, migrated by this release; its name."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        await conn.execute(f'SET search_path TO "{name}"')
        await migrate(conn)
    finally:
        await conn.close()
    return name


@pytest.fixture
async def schema(run_database_url: str) -> AsyncIterator[str]:
    """A fresh, migrated schema for one test."""
    yield await migrated_schema(run_database_url)


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"domains": DEMO_DOMAINS}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def db(run_database_url: str, schema: str) -> AsyncIterator[Database]:
    database = await Database.connect(
        run_database_url, min_size=1, max_size=10, server_settings={"search_path": schema}
    )
    yield database
    await database.close()


@pytest.fixture
async def mpi(db: Database, make_settings: Callable[..., Settings]) -> Mpi:
    core = Mpi(db, make_settings())
    await core.start()
    return core


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A service data directory (embedded PostgreSQL lives in it) for one test."""
    with private_directory("identity-test-data-") as directory:
        yield directory / "identity-data"
