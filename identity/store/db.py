"""The asyncpg pool and the one way to run work in a transaction."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar

import asyncpg
import orjson

from identity.errors import InvalidInput, StoreConflict, StoreUnavailable

log = logging.getLogger("identity.store")

_ATOMIC: ContextVar[asyncpg.Connection | None] = ContextVar("identity_atomic", default=None)
"""The connection of the ``Database.atomic()`` block the current task runs in, if any."""

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

# Errors that mean "the input holds a value PostgreSQL cannot take" (a NUL character in text, a
# number out of range): the input's fault, nothing was applied. asyncpg's own DataError (an
# argument its encoder refuses) is an InterfaceError: it must be caught before _UNAVAILABLE.
_INVALID = (asyncpg.exceptions.DataError, asyncpg.exceptions._base.DataError)


def _invalid(exc: Exception) -> InvalidInput:
    return InvalidInput(f"a value the database cannot hold: {exc}")


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _jsonb_encode(value: object) -> bytes:
    # orjson: a registration writes several JSON values and reads up to max_candidates
    # records' normalised JSON; the standard library's json was a visible share of its CPU.
    return b"\x01" + orjson.dumps(value, option=_ORJSON_OPTIONS)


def _jsonb_decode(data: bytes) -> object:
    return orjson.loads(memoryview(data)[1:])  # binary jsonb: a version byte (1), then the text


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary format, so that COPY (bulk import) can carry JSON too.
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


def _pool_reset(
    clean: weakref.WeakSet[asyncpg.Connection],
) -> Callable[[asyncpg.Connection], Awaitable[None]]:
    """The pool's reset of a released connection: asyncpg's reset query (unlock session
    advisory locks, close cursors, UNLISTEN, RESET ALL; a round trip), skipped for a
    connection whose only use was one committed ``Database.transaction()``, which leaves no
    session state behind."""

    async def reset(conn: asyncpg.Connection) -> None:
        if conn in clean:
            clean.discard(conn)
            return
        query = conn.get_reset_query()
        if query:
            await conn.execute(query)

    return reset


def _describe(exc: BaseException) -> str:
    """An error's type and text (a timeout has no text of its own)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Database:
    """Owns the connection pool. ``transaction()`` is the unit of work of every MPI command."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        clean: weakref.WeakSet[asyncpg.Connection] | None = None,
    ) -> None:
        self.pool = pool
        self.url = url
        self._clean: weakref.WeakSet[asyncpg.Connection] = (
            clean if clean is not None else weakref.WeakSet()
        )

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
        clean: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()
        try:
            pool = await asyncpg.create_pool(
                url,
                reset=_pool_reset(clean),
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                init=_init_connection,
                server_settings={"application_name": "identity", **(server_settings or {})},
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to the database: {_describe(exc)}") from exc
        assert pool is not None
        return cls(pool, url, clean)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self, *, detached: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; inside ``atomic()`` (unless ``detached``) the atomic block's
        own, so that reads see what the block has written so far."""
        shared = None if detached else _ATOMIC.get()
        if shared is not None:
            yield shared
            return
        try:
            async with self.pool.acquire() as conn:
                yield conn
        except _INVALID as exc:
            raise _invalid(exc) from exc
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"database unavailable: {_describe(exc)}") from exc

    def _mark_clean(self, conn: asyncpg.Connection) -> None:
        """Let the pool skip the reset query when ``conn`` goes back (see _pool_reset)."""
        raw = getattr(conn, "_con", conn)  # the pool's proxy wraps the connection
        if isinstance(raw, asyncpg.Connection):
            self._clean.add(raw)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for plain statements that leave no session state behind
        (queries; single autocommitted writes): no SET, LISTEN, session advisory locks or
        cursors. It goes back to the pool without asyncpg's reset query, a round trip saved on
        every read (ITI-9, ITI-21, FHIR reads); a block that ends in an error is reset as
        usual. Inside ``atomic()``, the block's connection."""
        shared = _ATOMIC.get()
        async with self.connection() as conn:
            yield conn
            if shared is None:  # an atomic block's connection is the block's to release
                self._mark_clean(conn)

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[asyncpg.Connection]:
        """Several commands as one transaction: every ``transaction()`` and ``connection()``
        of this task inside the block runs on the block's connection (each transaction as a
        savepoint), and nothing is committed unless the whole block ends without error.
        Used where a protocol defines a message of several changes as one (PMIR ITI-93).
        Work inside must stay in this task (no ``gather`` of commands on the connection)."""
        if _ATOMIC.get() is not None:
            raise RuntimeError("atomic blocks do not nest")
        async with self.transaction() as conn:
            token = _ATOMIC.set(conn)
            try:
                yield conn
            finally:
                _ATOMIC.reset(token)

    @asynccontextmanager
    async def transaction(self, *, detached: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """One transaction; commits when the block ends without error, else rolls back.

        Connection loss anywhere (including at COMMIT) surfaces as StoreUnavailable: the caller
        must then not acknowledge, since the change may not be durable.

        After a commit the connection goes back to the pool without asyncpg's reset query (one
        round trip less per command): work in here must not change session state (no plain
        SET, LISTEN, session advisory locks or WITH HOLD cursors; SET LOCAL is fine).

        Inside ``atomic()`` (unless ``detached``) it is a savepoint of the atomic block: it
        commits only with the block.
        """
        shared = None if detached else _ATOMIC.get()
        async with self.connection(detached=detached) as conn:
            try:
                async with conn.transaction():
                    yield conn
                if shared is None:
                    # Committed: the connection goes back to the pool without the reset query.
                    self._mark_clean(conn)
            except asyncpg.exceptions.TransactionRollbackError as exc:
                raise StoreConflict(f"transaction rolled back, nothing applied: {exc}") from exc
            except _INVALID as exc:
                raise _invalid(exc) from exc
            except _UNAVAILABLE as exc:
                raise StoreUnavailable(f"database unavailable: {_describe(exc)}") from exc

    async def healthy(self) -> tuple[bool, str]:
        try:
            async with self.connection() as conn:
                version = await conn.fetchval("SHOW server_version")
            return True, str(version)
        except Exception as exc:  # noqa: BLE001 - health reports any failure as text
            return False, f"{type(exc).__name__}: {exc}"
