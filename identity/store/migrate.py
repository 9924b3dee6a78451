"""The database schema: numbered migrations, then one current definition per SQL function.

Two kinds of files, applied by :func:`migrate` in one transaction under one advisory lock (so
that several processes starting at once apply them once, and a failure leaves the database as
it was):

``migrations/NNNN_name.sql``
    Numbered migrations, applied once each, in order, and recorded in ``schema_migration``.
    They hold tables, indexes, data changes, and every change to a function that
    ``CREATE OR REPLACE`` cannot make: a new signature or result type (``DROP FUNCTION`` then
    ``CREATE FUNCTION``) and dropping a function. A released migration is never edited:
    existing databases have it recorded as applied.

``sql/NAME.sql``
    Repeatable scripts, one per function (triggers' functions included): the function's
    current ``CREATE OR REPLACE FUNCTION``, settings (``SET ...``) included, so that a reader
    finds what runs in one file. After the pending numbered migrations, each file whose text
    (sha256) differs from the checksum recorded in ``schema_function`` is applied and its
    checksum recorded, like Flyway's repeatable migrations; when numbered migrations ran, every
    file is applied again, so that a migration re-creating a function cannot leave another
    body in place than the file's. To change a function's body or settings, edit its file;
    to change its signature or result type, add a numbered migration that drops and creates
    it (with any body: the file's replaces it in the same run) and update the file; to drop
    one, a numbered migration drops it and its file is deleted. A new function needs only its
    file, unless a numbered migration uses it (a migration runs before the files: it creates
    what it needs itself). The files are applied in name order: a SQL-language function (whose
    body is checked when it is created) that calls another must sort after it.

``schema.sql`` is a dump of the resulting schema (identity.store.schema_dump, which says how
to regenerate it; tests/core/test_schema.py checks it).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from dataclasses import dataclass, field
from importlib import resources

import asyncpg

log = logging.getLogger("identity.store.migrate")

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_FUNCTION_NAME = re.compile(r"^([a-z_][a-z0-9_]*)\.sql$")
_LOCK_KEY = 0x1D3E7171  # advisory lock id for "identity migrations"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class Function:
    """A repeatable script ``sql/NAME.sql``: the current definition of function NAME."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Applied:
    """What one :func:`apply_migrations` run applied."""

    versions: list[int] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)


def available_migrations() -> list[Migration]:
    folder = resources.files("identity.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


def available_functions() -> list[Function]:
    """The repeatable scripts of ``sql/``, in name order."""
    folder = resources.files("identity.store") / "sql"
    found = []
    for entry in folder.iterdir():
        match = _FUNCTION_NAME.match(entry.name)
        if match:
            found.append(Function(match[1], entry.read_text(encoding="utf-8")))
        elif entry.name.endswith(".sql"):
            raise RuntimeError(f"sql/{entry.name}: expected a lower-case function name")
    found.sort(key=lambda f: f.name)
    return found


async def apply_migrations(
    conn: asyncpg.Connection,
    migrations: list[Migration] | None = None,
    functions: list[Function] | None = None,
) -> Applied:
    """Apply the pending numbered migrations, then the changed repeatable scripts.

    By default both come from the package. A caller that passes its own ``migrations`` and no
    ``functions`` gets no repeatable scripts (the package's need the package's tables).
    """
    packaged = migrations is None and functions is None
    migrations = available_migrations() if migrations is None else migrations
    if functions is None:
        functions = available_functions() if packaged else []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migration (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_function (
                   name text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
        newest = max((m.version for m in migrations), default=0)
        newer = sorted(v for v in done if v > newest)
        if newer:
            # A newer release migrated this database (a rolling upgrade, docs/operations.md
            # "Upgrades"): its migrations expanded the schema for this release to keep running,
            # and its function definitions are the ones in force. Apply nothing, or this
            # release would put its own function bodies back under the newer one.
            missing = [m.version for m in migrations if m.version not in done]
            if missing:
                raise RuntimeError(
                    f"the database has migrations {newer} newer than this release's but "
                    f"lacks its migrations {missing}: not a schema this release can run on")
            log.warning("event=schema_newer_than_release newer=%s release_newest=%d",
                        ",".join(map(str, newer)), newest)
            return Applied()
        versions = []
        for migration in migrations:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migration (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            versions.append(migration.version)
            log.info(
                "event=migration_applied version=%d name=%s", migration.version, migration.name
            )

        recorded = {
            r["name"]: r["checksum"]
            for r in await conn.fetch("SELECT name, checksum FROM schema_function")
        }
        names = []
        for function in functions:
            if not versions and recorded.get(function.name) == function.checksum:
                continue
            await conn.execute(function.sql)
            await conn.execute(
                """INSERT INTO schema_function (name, checksum) VALUES ($1, $2)
                   ON CONFLICT (name) DO UPDATE
                   SET checksum = excluded.checksum, applied_at = excluded.applied_at""",
                function.name,
                function.checksum,
            )
            names.append(function.name)
            log.info(
                "event=function_applied name=%s checksum=%s",
                function.name,
                function.checksum[:12],
            )
        if packaged:
            # A file deleted (its function dropped by a numbered migration): forget its
            # checksum, so that a file of that name added later is applied.
            gone = sorted(set(recorded) - {f.name for f in functions})
            if gone:
                await conn.execute("DELETE FROM schema_function WHERE name = ANY($1)", gone)
                log.info("event=function_records_removed names=%s", ",".join(gone))
    return Applied(versions, names)


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[int]:
    """Apply pending migrations and changed function definitions (:func:`apply_migrations`);
    return the versions of the numbered migrations applied now."""
    return (await apply_migrations(conn, migrations)).versions


@functools.cache
def _known_versions() -> list[int]:
    return [m.version for m in available_migrations()]


async def pending_versions(conn: asyncpg.Connection) -> list[int]:
    """The package's numbered migrations not applied to the database (all of them when it has
    no schema yet): what ``/readyz`` checks. Versions the database has and the package does not
    know (a newer release ran) are not pending."""
    known = _known_versions()
    exists = await conn.fetchval("SELECT to_regclass('schema_migration') IS NOT NULL")
    if not exists:
        return known
    done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migration")}
    return [v for v in known if v not in done]
