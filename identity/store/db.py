"""The asyncpg pool and the one way to run work in a transaction."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from identity.errors import StoreConflict, StoreUnavailable

log = logging.getLogger("identity.store")

# Errors that mean "the database is not there right now": nothing was applied.
_UNAVAILABLE = (
    OSError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def _jsonb_encode(value: object) -> bytes:
    return b"\x01" + json.dumps(value, separators=(",", ":")).encode()


def _jsonb_decode(data: bytes) -> object:
    return json.loads(data[1:])  # binary jsonb: a version byte (1), then the text


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary format, so that COPY (bulk import) can carry JSON too.
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """Owns the connection pool. ``transaction()`` is the unit of work of every MPI command."""

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 20,
        command_timeout: float = 30.0,
        server_settings: dict[str, str] | None = None,
    ) -> Database:
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                init=_init_connection,
                server_settings={"application_name": "identity", **(server_settings or {})},
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to the database: {exc}") from exc
        assert pool is not None
        return cls(pool, url)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction; commits when the block ends without error, else rolls back.

        Connection loss anywhere (including at COMMIT) surfaces as StoreUnavailable: the caller
        must then not acknowledge, since the change may not be durable.
        """
        async with self.connection() as conn:
            try:
                async with conn.transaction():
                    yield conn
            except asyncpg.exceptions.TransactionRollbackError as exc:
                raise StoreConflict(f"transaction rolled back, nothing applied: {exc}") from exc
            except _UNAVAILABLE as exc:
                raise StoreUnavailable(f"database unavailable: {exc}") from exc

    async def healthy(self) -> tuple[bool, str]:
        try:
            async with self.connection() as conn:
                version = await conn.fetchval("SHOW server_version")
            return True, str(version)
        except Exception as exc:  # noqa: BLE001 - health reports any failure as text
            return False, f"{type(exc).__name__}: {exc}"
