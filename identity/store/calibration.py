"""What `identity calibrate` reads from the index, and the versions of the match model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from identity.store.rows import index_row_from_row, model_version_from_row
from identity.store.state import IndexRow, ModelVersion

__all__ = ["CalibrationQueries", "IndexRow", "ModelVersion", "MODEL_CHANNEL"]

#: The channel a running service listens on for a new active model (its version as payload).
MODEL_CHANNEL = "identity_match_model"
#: Seconds for a read of the whole index: [database] command_timeout bounds the doors'
#: statements (30 s by default), and at 1.25M records the calibration's read of every active
#: record took longer than that.
WHOLE_INDEX_TIMEOUT = 1800.0


class CalibrationQueries:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def index_rows(self) -> list[IndexRow]:
        """Every active record with its person, link kind and source domain, by id."""
        rows = await self.conn.fetch(
            """SELECT r.id, d.namespace, l.person_id, l.kind, r.normalized
               FROM source_record r
               JOIN domain d ON d.id = r.domain_id
               LEFT JOIN link l ON l.source_record_id = r.id
               WHERE r.status = 'active'
               ORDER BY r.id""",
            timeout=WHOLE_INDEX_TIMEOUT,
        )
        return [index_row_from_row(r) for r in rows]

    async def active_records(self) -> int:
        return await self.conn.fetchval(
            "SELECT count(*) FROM source_record WHERE status = 'active'")

    async def last_calibration(self) -> tuple[int, float] | None:
        """(records it was estimated from, days since) of the newest stored version."""
        row = await self.conn.fetchrow(
            """SELECT (report->>'records')::bigint AS records,
                      extract(epoch FROM now() - created_at) / 86400 AS days
               FROM match_model ORDER BY version DESC LIMIT 1""")
        return None if row is None else (int(row["records"] or 0), float(row["days"]))

    async def runs(self) -> tuple[int, datetime | None, int | None, datetime | None]:
        """(versions stored, the newest's time, the active version, its time): each
        calibration run stores one version; none active is the configured model file."""
        row = await self.conn.fetchrow(
            """SELECT count(*) AS runs, max(created_at) AS last,
                      max(version) FILTER (WHERE active) AS active,
                      max(created_at) FILTER (WHERE active) AS active_at
               FROM match_model""")
        return int(row["runs"]), row["last"], row["active"], row["active_at"]

    async def try_lock(self, key: int) -> bool:
        """A session advisory lock (this connection holds it until :meth:`unlock`)."""
        return bool(await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", key))

    async def unlock(self, key: int) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def open_review_pairs(self) -> list[tuple[int, int, int]]:
        """(item id, record, other record) of the open review items that name a record."""
        rows = await self.conn.fetch(
            """SELECT id, record_id, other_record_id FROM review_item
               WHERE status = 'open' AND other_record_id IS NOT NULL ORDER BY id""",
            timeout=WHOLE_INDEX_TIMEOUT,
        )
        return [(r["id"], r["record_id"], r["other_record_id"]) for r in rows]

    async def active_model(self) -> ModelVersion | None:
        row = await self.conn.fetchrow("SELECT * FROM match_model WHERE active")
        return model_version_from_row(row) if row else None

    async def model(self, version: int) -> ModelVersion | None:
        row = await self.conn.fetchrow("SELECT * FROM match_model WHERE version = $1", version)
        return model_version_from_row(row) if row else None

    async def active_version(self) -> int | None:
        return await self.conn.fetchval("SELECT version FROM match_model WHERE active")

    async def add_model(
        self, *, model: dict[str, Any], auto_link: float, review: float, created_by: str,
        report: dict[str, Any],
    ) -> int:
        """Store a proposed model (not in service); its version is also written into the
        document's ``training`` (``version``, and ``name``: ``calibrated-v<N>``)."""
        version = await self.conn.fetchval(
            """INSERT INTO match_model (model, auto_link, review, created_by, report)
               VALUES ($1::jsonb, $2, $3, $4, $5::jsonb) RETURNING version""",
            model, auto_link, review, created_by, report,
        )
        training = {**model.get("training", {}), "version": version,
                    "name": f"calibrated-v{version}"}
        await self.conn.execute("UPDATE match_model SET model = $2::jsonb WHERE version = $1",
                                version, {**model, "training": training})
        return version

    async def activate(self, version: int | None) -> int | None:
        """Put ``version`` in service (None: none, the configured model file again); returns
        the version that was active. Listeners hear of it when the transaction commits."""
        before = await self.active_version()
        await self.conn.execute("UPDATE match_model SET active = false WHERE active")
        if version is not None:
            await self.conn.execute("UPDATE match_model SET active = true WHERE version = $1",
                                    version)
        await self.conn.execute("SELECT pg_notify($1, $2)", MODEL_CHANNEL,
                                str(version if version is not None else 0))
        return before
