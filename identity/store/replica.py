"""Reads from a streaming replica, with read-your-writes (docs/operations.md, *Read replicas*).

A ``Replica`` owns a second pool, on the replica, and decides for each read whether the
replica may serve it: the replica is reachable, in recovery, no further behind than
``max_lag`` seconds, and has replayed the WAL of the caller's own last change (the position
``Database.transaction()`` remembers for the caller after its commit). Otherwise the read goes
to the primary. The positions live in this process's memory only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

import asyncpg

log = logging.getLogger("identity.store")

_STATUS = """
SELECT pg_is_in_recovery(),
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()
            THEN 0.0
            ELSE coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0.0)
       END::float8
"""
"""Is it a replica; how far it has replayed (bytes of WAL); how far behind it is: nothing when
it has replayed all it received, else the age of the last transaction it replayed."""

POSITION = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"
"""The primary's WAL position after a commit, on the committing connection (see
docs/operations.md: why after the commit, and why the insert position)."""

MAX_CALLERS = 100_000
"""Positions kept at most; beyond that the oldest are dropped (their callers then read from
the replica without waiting for it: only when this many senders wrote within the lag)."""


class Replica:
    """The replica's pool and what this process knows of the replica and its callers."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        *,
        max_lag: float,
        status_ttl: float,
        retry_after: float,
        clean: weakref.WeakSet[asyncpg.Connection],
    ) -> None:
        self.pool = pool
        self.url = url
        self.max_lag = max_lag
        self.status_ttl = status_ttl
        self.retry_after = retry_after
        self.clean = clean
        self.positions: dict[str, int] = {}
        """caller -> the WAL position of its last commit, until the replica has replayed it"""
        self.replayed = -1
        self.lag = 0.0
        self.in_recovery = False
        self.checked = -1e9  # time.monotonic() of the last status
        self.down = False
        """The replica failed: reads go to the primary until a probe (every ``retry_after``
        seconds, in the background) reaches it again."""
        self.down_until = 0.0
        self._probe: asyncio.Task[None] | None = None
        self.warned = False
        self._lock = asyncio.Lock()
        self.served = {"replica": 0, "primary": 0}
        """Reads by ``Database.query()``, by where they were served."""

    # --- writes ---------------------------------------------------------------------------

    def wrote(self, caller: str, position: int) -> None:
        """Remember ``caller``'s change, committed at ``position``."""
        positions = self.positions
        if position <= self.replayed:
            return
        if positions.get(caller, -1) >= position:
            return
        positions.pop(caller, None)  # re-inserted last: the dict stays in order of writes
        positions[caller] = position
        if len(positions) > MAX_CALLERS:
            del positions[next(iter(positions))]

    # --- reads ----------------------------------------------------------------------------

    async def usable_for(self, caller: str | None) -> bool:
        """May the replica serve a read for ``caller`` now (its status read at most
        ``status_ttl`` seconds ago, or now when the caller's change is not known replayed)?"""
        now = time.monotonic()
        if self.down:  # probed in the background: no read waits for a replica that is down
            if self._probe is None and now >= self.down_until:
                self._probe = asyncio.get_running_loop().create_task(self._probe_once())
            return False
        position = self.positions.get(caller) if caller is not None else None
        stale = now - self.checked > self.status_ttl
        if stale or (position is not None and position > self.replayed):
            try:
                await self._refresh(now)
            except Exception as exc:  # noqa: BLE001 - any failure: read from the primary
                self.failed(exc)
                return False
            if self.down:  # found down by another task meanwhile
                return False
        if not self.in_recovery or self.lag > self.max_lag:
            return False
        if position is None:
            return True
        if position > self.replayed:
            return False
        if self.positions.get(caller) == position:  # not a newer change meanwhile
            del self.positions[caller]
        return True

    async def _probe_once(self) -> None:
        try:
            await self._refresh(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - still down: tried again after retry_after
            self.failed(exc)
        else:
            self.down = False
        finally:
            self._probe = None

    async def _refresh(self, asked_at: float) -> None:
        async with self._lock:
            if self.checked >= asked_at:  # another task read it while this one waited
                return
            if self.down and asyncio.current_task() is not self._probe:
                return  # found down while this one waited: only the probe tries again
            checked = time.monotonic()
            async with self.pool.acquire() as conn:
                in_recovery, replayed, lag = await conn.fetchrow(_STATUS)
                self._mark_clean(conn)
            self.in_recovery = bool(in_recovery)
            self.replayed = -1 if replayed is None else int(replayed)
            self.lag = float(lag or 0.0)
            self.checked = checked
        if not self.in_recovery:
            self._warn("the replica is not in recovery (promoted, or not a replica)")
        elif self.lag > self.max_lag:
            self._warn(f"the replica is {self.lag:.1f} s behind (replica_max_lag "
                       f"{self.max_lag:g} s)")
        elif self.warned:
            self.warned = False
            log.info("event=replica_back replica=%s", self.url_for_logs)
        if len(self.positions) > 1000:  # forget the changes the replica has now
            replayed_now = self.replayed
            self.positions = {c: p for c, p in self.positions.items() if p > replayed_now}

    def failed(self, exc: BaseException) -> None:
        """The replica could not serve a read: the primary serves reads until a probe, made
        in the background ``retry_after`` seconds from now, finds it again."""
        self.down = True
        self.down_until = time.monotonic() + self.retry_after
        self.checked = -1e9
        self._warn(f"the replica is unavailable: {type(exc).__name__}: {exc}")

    def _warn(self, why: str) -> None:
        if not self.warned:
            self.warned = True
            log.warning("event=replica_unused replica=%s reason=%r (reads go to the primary)",
                        self.url_for_logs, why)

    def _mark_clean(self, conn: asyncpg.Connection) -> None:
        raw = getattr(conn, "_con", conn)
        if isinstance(raw, asyncpg.Connection):
            self.clean.add(raw)

    @property
    def url_for_logs(self) -> str:
        """The URL without its password."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.pool.close()
