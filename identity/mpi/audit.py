"""The audit trail of the core (ITI-20, docs/audit.md): where audit records are written.

- A change's records are written **in the change's transaction** (``write``, called by the
  unit of work at flush from the envelope's ``audit``): a committed change always has its
  record, a rolled-back one never does.
- Reads (PIX/PDQ queries, FHIR reads) and refusals change nothing: their records are queued
  (``later``) and written by a background task in batches, one statement per batch, so that a
  query is not slowed by a round trip of its own. A record queued but not yet written when the
  process is killed (at most ``FLUSH_SECONDS`` of them) is lost; ``stop`` writes the queue.

With ``[audit.syslog]`` every write also puts the records on the outbox topic ``audit``,
which identity.audit.deliver sends to the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg

from identity.audit.record import AUDIT_TOPIC, Auditor, AuditRecord, Outcome
from identity.config import Settings
from identity.errors import InvalidInput, MpiError, StoreUnavailable
from identity.store.audit import AuditStore, StoredAudit, audit_rows
from identity.store.db import Database

log = logging.getLogger("identity.audit")

FLUSH_SECONDS = 0.05
BATCH = 500
CHUNK = 4
"""Records made into rows between two turns of the event loop: a batch's rows are made a chunk
at a time, so that a request arriving meanwhile waits for one chunk (a fraction of a
millisecond), not the whole batch (a batch of reads can take milliseconds)."""
MAX_QUEUED = 100_000
RETRY_SECONDS = 1.0

AuditOf = Callable[[Outcome, str | None], Sequence[AuditRecord]]
"""An envelope's audit: the records of its command, given how it ended (success, or a failure
outcome with the reason)."""

Making = Callable[[], Sequence[AuditRecord]]
"""What ``defer`` queues: a function the writer calls to make the records."""


class AuditTrail:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.auditor = Auditor(settings)
        self.topic = AUDIT_TOPIC if settings.audit.syslog is not None else None
        self._queue: list[AuditRecord | Making] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._flushing = asyncio.Lock()
        self.dropped = 0

    async def write(self, conn: asyncpg.Connection, records: Sequence[AuditRecord]) -> None:
        """Write ``records`` on ``conn``, in the transaction open there."""
        if records:
            await AuditStore(conn).insert(records, topic=self.topic)

    async def record(self, records: Sequence[AuditRecord]) -> None:
        """Write ``records`` now, in a transaction of their own (an event that is its own
        change, such as a look at the audit log)."""
        async with self.db.transaction() as conn:
            await self.write(conn, records)

    async def search(self, **criteria: Any) -> list[StoredAudit]:
        """Stored records, newest first (identity.store.audit.AuditStore.search)."""
        async with self.db.read() as conn:
            return await AuditStore(conn).search(**criteria)

    async def get(self, record_id: int) -> StoredAudit | None:
        async with self.db.read() as conn:
            return await AuditStore(conn).get(record_id)

    def later(self, records: Sequence[AuditRecord]) -> None:
        """Queue records of something that changed nothing, for the background writer."""
        if not records:
            return
        if len(self._queue) + len(records) > MAX_QUEUED:
            self.dropped += len(records)
            log.error("event=audit_dropped records=%d queued=%d", len(records), len(self._queue))
            return
        self._queue.extend(records)
        self._started()

    def defer(self, make: Making) -> None:
        """Queue a function that makes records of something that changed nothing: the writer
        calls it, so that a read's records are made off the read's path (``make`` must use
        only what it was given: it runs up to FLUSH_SECONDS later; pass the event's time as
        the records' ``at``)."""
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            log.error("event=audit_dropped records=1 queued=%d", len(self._queue))
            return
        self._queue.append(make)
        self._started()

    def _started(self) -> None:
        if (self._task is None or self._task.done()) and not self._stopping:
            # A context of its own: the writer outlives the request that first queues a record,
            # which may be inside an atomic block (a refused PMIR entry) whose connection the
            # writer must not inherit (identity.store.db routes a task's statements there).
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )
        self._wake.set()

    def failed(self, audit: AuditOf | None, exc: BaseException) -> None:
        """Queue the failure records of a command that was refused or failed."""
        if audit is None:
            return
        outcome = Outcome.MINOR_FAILURE if _refused(exc) else Outcome.SERIOUS_FAILURE
        try:
            self.later(audit(outcome, f"{type(exc).__name__}: {exc}"[:500]))
        except Exception:  # noqa: BLE001 - an audit of a failure must not hide the failure
            log.exception("event=audit_failure_record_error")

    async def flush(self) -> None:
        """Write everything queued so far, not what is queued meanwhile: that waits for the
        writer's next round, FLUSH_SECONDS on, so that reads arriving one by one are written a
        batch at a time, not one statement each as soon as the last one returns. One flush at a
        time: the background writer's and a caller's would otherwise both write the head of
        the queue."""
        async with self._flushing:
            left = len(self._queue)
            while left > 0 and self._queue:
                batch = self._queue[:min(BATCH, left)]
                left -= len(batch)
                rows = _rows(batch[:CHUNK])
                for start in range(CHUNK, len(batch), CHUNK):
                    await asyncio.sleep(0)  # let the requests waiting run
                    rows.extend(_rows(batch[start:start + CHUNK]))
                if rows:
                    await self._insert(rows)
                del self._queue[: len(batch)]

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        """One statement for the batch; if PostgreSQL refuses its content (a value it cannot
        store, such as a NUL character), one per row, and a refused row is logged and dropped:
        it must not hold back every record queued behind it for the life of the process."""
        try:
            async with self.db.read() as conn:
                await AuditStore(conn).insert_rows(rows, topic=self.topic)
            return
        except _REFUSED_CONTENT:
            if len(rows) == 1:
                log.error("event=audit_record_refused records=1")
                return
        for row in rows:
            try:
                async with self.db.read() as conn:
                    await AuditStore(conn).insert_rows([row], topic=self.topic)
            except _REFUSED_CONTENT as exc:
                log.error("event=audit_record_refused records=1 error=%s", type(exc).__name__)

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except Exception as exc:  # noqa: BLE001
            log.error("event=audit_unwritten records=%d error=%s", len(self._queue),
                      type(exc).__name__)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(FLUSH_SECONDS)  # gather a batch
            try:
                await self.flush()
            except (StoreUnavailable, OSError, asyncpg.PostgresError,
                    asyncpg.InterfaceError) as exc:
                log.warning("event=audit_write_retry records=%d error=%s", len(self._queue),
                            type(exc).__name__)
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()


_REFUSED_CONTENT = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, InvalidInput)
"""What a statement's content is refused with (SQLSTATE classes 22, 23; identity.store.db
raises InvalidInput for a value the database cannot hold): retrying cannot help."""


def _rows(items: Sequence[AuditRecord | Making]) -> list[dict[str, Any]]:
    """The rows of queued records, the deferred ones made now (one that fails is logged and
    left out: it must not hold back the records queued behind it)."""
    records: list[AuditRecord] = []
    for item in items:
        if isinstance(item, AuditRecord):
            records.append(item)
            continue
        try:
            records.extend(item())
        except Exception:  # noqa: BLE001
            log.exception("event=audit_record_error")
    return audit_rows(records)


def _refused(exc: BaseException) -> bool:
    """A command refused (bad input, not allowed): a minor failure; anything else (the
    database away, a bug) a serious one."""
    return isinstance(exc, MpiError)
