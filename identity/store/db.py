"""The asyncpg pool and the one way to run work in a transaction."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import TypeVar

import asyncpg
import orjson

from identity.errors import InvalidInput, StoreConflict, StoreUnavailable
from identity.store.replica import POSITION, Replica

log = logging.getLogger("identity.store")

_ATOMIC: ContextVar[asyncpg.Connection | None] = ContextVar("identity_atomic", default=None)
"""The connection of the ``Database.atomic()`` block the current task runs in, if any."""

_WRITER: ContextVar[str | None] = ContextVar("identity_writer", default=None)
"""Who the current task's changes are for (``Database.writing_as``): after a commit, its
position in the WAL is remembered for the caller's reads from the replica."""

_ATOMIC_WRITERS: ContextVar[set[str] | None] = ContextVar("identity_atomic_writers", default=None)
"""The writers of the ``atomic()`` block the current task runs in: remembered at its commit."""

T = TypeVar("T")

read_observer: Callable[[str], None] | None = None
"""Told where each ``Database.query()`` with a replica configured was served ("replica" or
"primary"); set by identity.metrics (which imports this module)."""

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

# Errors of a read on the replica after which the primary serves it: the replica's connection
# lost or refused, a query cancelled by a conflict with recovery (a rollback error), a timeout,
# a write refused because the replica is read-only.
_REPLICA_ERRORS = (
    *_UNAVAILABLE,
    TimeoutError,
    asyncpg.exceptions.TransactionRollbackError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,
    asyncpg.exceptions.QueryCanceledError,
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
        replica: Replica | None = None,
    ) -> None:
        self.pool = pool
        self.url = url
        self.replica = replica
        """The streaming replica that serves the doors' queries, when configured."""
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
        replica_url: str | None = None,
        replica_max_lag: float = 5.0,
        replica_max_connections: int | None = None,
        replica_status_ttl: float = 0.05,
        replica_retry_after: float = 5.0,
    ) -> Database:
        """The pool on ``url``; with ``replica_url``, a second pool on a streaming replica
        of it for the doors' queries (``query()``). The replica's pool opens no connection
        here: a replica that is down does not keep the service from starting."""
        clean: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()
        settings = {"application_name": "identity", **(server_settings or {})}
        try:
            pool = await asyncpg.create_pool(
                url,
                reset=_pool_reset(clean),
                min_size=min_size,
                max_size=max_size,
                command_timeout=command_timeout,
                init=_init_connection,
                server_settings=settings,
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot connect to the database: {_describe(exc)}") from exc
        assert pool is not None
        replica = None
        if replica_url is not None:
            replica_clean: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()
            replica_pool = asyncpg.create_pool(
                replica_url,
                reset=_pool_reset(replica_clean),
                min_size=0,
                max_size=replica_max_connections or max_size,
                command_timeout=command_timeout,
                timeout=min(command_timeout, 5.0),  # connecting: a replica down is skipped
                init=_init_connection,
                server_settings={**settings, "application_name": "identity-replica-reads"},
            )
            await replica_pool  # min_size=0: connects nothing yet
            replica = Replica(replica_pool, replica_url, max_lag=replica_max_lag,
                              status_ttl=replica_status_ttl, retry_after=replica_retry_after,
                              clean=replica_clean)
        return cls(pool, url, clean, replica)

    async def close(self) -> None:
        if self.replica is not None:
            await self.replica.close()
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
        writers_token = _ATOMIC_WRITERS.set(set())
        try:
            async with self.transaction() as conn:
                token = _ATOMIC.set(conn)
                try:
                    yield conn
                finally:
                    _ATOMIC.reset(token)
        finally:
            _ATOMIC_WRITERS.reset(writers_token)

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

        With a replica and a writer (``writing_as``), the commit's WAL position is asked on the
        same connection after COMMIT and remembered for the writer; a connection lost then is
        StoreUnavailable as at COMMIT.
        """
        shared = None if detached else _ATOMIC.get()
        writer = _WRITER.get() if self.replica is not None else None
        async with self.connection(detached=detached) as conn:
            try:
                async with conn.transaction():
                    yield conn
                if shared is None:
                    if self.replica is not None:
                        await self._remember_position(conn, writer)
                    # Committed: the connection goes back to the pool without the reset query.
                    self._mark_clean(conn)
                elif writer is not None:
                    writers = _ATOMIC_WRITERS.get()
                    if writers is not None:  # remembered when the atomic block commits
                        writers.add(writer)
            except asyncpg.exceptions.TransactionRollbackError as exc:
                raise StoreConflict(f"transaction rolled back, nothing applied: {exc}") from exc
            except _INVALID as exc:
                raise _invalid(exc) from exc
            except _UNAVAILABLE as exc:
                raise StoreUnavailable(f"database unavailable: {_describe(exc)}") from exc

    # --- the replica --------------------------------------------------------------------------

    @staticmethod
    @contextmanager
    def writing_as(caller: str) -> Iterator[None]:
        """The changes committed in this block are ``caller``'s: with a replica, the position
        of each commit is remembered, and ``query(..., caller=caller)`` reads from the replica
        only once it has replayed that far."""
        token = _WRITER.set(caller)
        try:
            yield
        finally:
            _WRITER.reset(token)

    async def _remember_position(self, conn: asyncpg.Connection, writer: str | None) -> None:
        """After a commit: remember its WAL position for the writer(s) (one round trip on the
        committing connection). Asked after COMMIT, so that it lies at or past the end of the
        commit record."""
        assert self.replica is not None
        writers = set(_ATOMIC_WRITERS.get() or ())
        if writer is not None:
            writers.add(writer)
        if not writers:
            return
        position = await conn.fetchval(POSITION)
        for caller in writers:
            self.replica.wrote(caller, int(position))

    async def query(
        self, read: Callable[[asyncpg.Connection], Awaitable[T]], *, caller: str | None
    ) -> T:
        """Run ``read`` (plain statements, as in ``read()``) on the replica when one is
        configured and may serve ``caller`` (see identity.store.replica), else on the primary.
        A read the replica fails for its own reasons (connection, recovery conflict, timeout)
        runs again on the primary: the replica never makes a read fail. Inside ``atomic()``,
        the block's connection."""
        replica = self.replica
        if replica is not None and _ATOMIC.get() is None and await replica.usable_for(caller):
            try:
                async with replica.pool.acquire() as conn:
                    result = await read(conn)
                    replica._mark_clean(conn)
            except _INVALID as exc:
                self._served("replica")
                raise _invalid(exc) from exc
            except _REPLICA_ERRORS as exc:
                replica.failed(exc)
            except BaseException:  # the read's own answer (e.g. not found): served
                self._served("replica")
                raise
            else:
                self._served("replica")
                return result
        try:
            async with self.read() as conn:
                return await read(conn)
        finally:
            if replica is not None:
                self._served("primary")

    def _served(self, server: str) -> None:
        assert self.replica is not None
        self.replica.served[server] += 1
        if read_observer is not None:
            read_observer(server)

    async def healthy(self) -> tuple[bool, str]:
        try:
            async with self.connection() as conn:
                version = await conn.fetchval("SHOW server_version")
            return True, str(version)
        except Exception as exc:  # noqa: BLE001 - health reports any failure as text
            return False, f"{type(exc).__name__}: {exc}"
