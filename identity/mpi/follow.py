"""Every worker scores with the match model version active in the database.

``identity calibrate --apply`` (another process) activates a version and notifies
``identity_match_model`` when it commits; each running service listens on a connection of its
own and loads the version, with its thresholds, before its next registration can use it. At
start the active version (if any) replaces the configured model file; with none active, the
file is used. A threshold set in the configuration wins over a calibrated one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import asyncpg

from identity.mpi.matcher import load_model
from identity.store.calibration import MODEL_CHANNEL, CalibrationQueries
from matching.model import MatchModel

if TYPE_CHECKING:
    from identity.mpi.service import Mpi

log = logging.getLogger("identity.mpi.follow")


class ModelFollower:
    def __init__(self, mpi: Mpi) -> None:
        self.mpi = mpi
        self.version: int | None = None
        self._lock = asyncio.Lock()
        self._conn: asyncpg.Connection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def sync(self, *, refresh: bool = True) -> bool:
        """Load the active version if it is not the one in use; True if it changed. Then the
        name frequencies and the prior's fit to the index are recomputed (``refresh``)."""
        mpi = self.mpi
        config = mpi.settings.matching
        async with self._lock:
            async with mpi.db.read() as conn:
                active = await CalibrationQueries(conn).active_model()
            version = active.version if active is not None else None
            if version == self.version:
                return False
            if active is not None:
                model = MatchModel.from_dict(active.model)
                explicit = config.model_fields_set
                auto_link = config.auto_link if "auto_link" in explicit else active.auto_link
                review = config.review if "review" in explicit else active.review
            else:
                model, auto_link, review = load_model(config), config.auto_link, config.review
            mpi.matcher.use_model(model, auto_link=auto_link, review=min(review, auto_link))
            self.version = version
        log.info("event=match_model_in_use version=%s auto_link=%s review=%s",
                 version if version is not None else "file", auto_link, review)
        if refresh:
            await mpi.refresh_term_frequencies()
        return True

    async def listen(self) -> None:
        """Follow activations as they are committed (a connection of its own)."""
        if self._conn is not None:
            return
        self._conn = await asyncpg.connect(self.mpi.db.url)
        await self._conn.add_listener(MODEL_CHANNEL, self._notified)
        await self.sync()  # an activation between start and now

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        task = asyncio.get_running_loop().create_task(self.sync())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("event=match_model_follow_failed error=%s", task.exception())

    async def stop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
