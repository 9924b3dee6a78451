"""identity/store/schema.sql is the schema a fresh database gets from identity.store.migrate."""

from __future__ import annotations

import difflib
from importlib import resources

import asyncpg

from identity.store.schema_dump import dump_schema

REGENERATE = "python -m identity.store.schema_dump > identity/store/schema.sql"


def committed_schema() -> str:
    return (resources.files("identity.store") / "schema.sql").read_text(encoding="utf-8")


async def test_committed_schema_is_what_migrate_makes(run_database_url: str, schema: str) -> None:
    """The ``schema`` fixture is a new schema that migrate() ran in."""
    conn = await asyncpg.connect(run_database_url)
    try:
        dumped = await dump_schema(conn, schema)
    finally:
        await conn.close()
    committed = committed_schema()
    if dumped != committed:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                dumped.splitlines(keepends=True),
                "identity/store/schema.sql (committed)",
                "schema of a freshly migrated database",
            )
        )
        raise AssertionError(
            "identity/store/schema.sql differs from the schema migrate() makes. If the change"
            f" is intended (a migration or sql/ file changed), regenerate it with\n\n"
            f"    {REGENERATE}\n\nand commit it.\n\n{diff}"
        )


def test_dump_names_no_schema() -> None:
    """Names are relative to the schema dumped: the committed file holds no test's schema."""
    text = committed_schema()
    assert "schema_dump_" not in text.replace("identity.store.schema_dump", "")
    assert "CREATE OR REPLACE FUNCTION register_candidates(" in text
