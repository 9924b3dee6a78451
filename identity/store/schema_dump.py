"""A schema-only dump of one PostgreSQL schema, built from catalog queries.

``identity/store/schema.sql`` is this dump of a freshly migrated schema, committed so that a
reader sees the whole database (tables, indexes, functions as they run) in one file, and so
that a change to it shows in review. tests/core/test_schema.py migrates a fresh schema and
fails, with a diff, when its dump differs from the committed file. After changing a migration
or a file of ``identity/store/sql/``, regenerate the file with::

    python -m identity.store.schema_dump > identity/store/schema.sql

which migrates a temporary schema in the database named by its argument, else by
``IDENTITY_TEST_DATABASE_URL``, else in an embedded server (pgserver) started for the purpose,
and drops the schema afterwards.

Why not pg_dump: the tests run against whatever server is at hand (PostgreSQL 15 on a
developer's machine, the embedded 16 in CI), and pg_dump's output differs between versions
(header, SET lines, ordering details). The catalog functions used here (``format_type``,
``pg_get_constraintdef``, ``pg_get_indexdef``, ``pg_get_functiondef``, ``pg_get_triggerdef``)
give the same text on those versions. Every name is written relative to the dumped schema
(each test migrates its own schema), and every list is sorted in Python, so the dump does not
depend on the server's collation or on object ids.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import asyncpg

HEADER = (
    "-- Schema of a freshly migrated identity database (identity.store.schema_dump).\n"
    "-- Generated: do not edit. Regenerate with\n"
    "--     python -m identity.store.schema_dump > identity/store/schema.sql\n"
)


def _unqualify(text: str, schema: str) -> str:
    """Drop ``schema.`` from qualified names (the catalog functions qualify some always)."""
    quoted = '"' + schema.replace('"', '""') + '"'
    return text.replace(quoted + ".", "").replace(schema + ".", "")


async def _fetch(conn: asyncpg.Connection, query: str, schema: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(query, schema))


async def _sequences(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await _fetch(
        conn,
        """SELECT c.relname, format_type(s.seqtypid, NULL) AS type, s.seqstart, s.seqincrement,
                  s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                  (SELECT quote_ident(t.relname) || '.' || quote_ident(a.attname)
                   FROM pg_depend d
                   JOIN pg_class t ON t.oid = d.refobjid
                   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                  ) AS owned_by
           FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid
           WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'S'""",
        schema,
    )
    out = []
    for r in rows:
        text = (
            f"CREATE SEQUENCE {_ident(r['relname'])} AS {r['type']} START {r['seqstart']}"
            f" INCREMENT {r['seqincrement']} MINVALUE {r['seqmin']} MAXVALUE {r['seqmax']}"
            f" CACHE {r['seqcache']}{' CYCLE' if r['seqcycle'] else ''}"
        )
        if r["owned_by"]:
            text += f" OWNED BY {r['owned_by']}"
        out.append(text + ";")
    return sorted(out)


def _ident(name: str) -> str:
    if name.isidentifier() and name == name.lower() and name.isascii():
        return name
    return '"' + name.replace('"', '""') + '"'


async def _tables(conn: asyncpg.Connection, schema: str) -> list[str]:
    tables = await _fetch(
        conn,
        """SELECT c.oid, c.relname, c.relkind, c.relpersistence, c.reloptions
           FROM pg_class c
           WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r'""",
        schema,
    )
    columns = await _fetch(
        conn,
        """SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
                  a.attnotnull, a.attidentity, a.attgenerated,
                  coalesce(a.attstattarget::integer, -1) AS stattarget,
                  CASE WHEN a.attcollation <> t.typcollation
                       THEN quote_ident(co.collname) END AS collation,
                  pg_get_expr(d.adbin, d.adrelid) AS default
           FROM pg_class c
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_collation co ON co.oid = a.attcollation
           LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
           WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r'""",
        schema,
    )
    by_table: dict[str, list[asyncpg.Record]] = {}
    for col in columns:
        by_table.setdefault(col["relname"], []).append(col)
    out = []
    for table in sorted(tables, key=lambda t: t["relname"]):
        name = table["relname"]
        lines = []
        statistics = []
        for col in sorted(by_table.get(name, []), key=lambda c: c["attnum"]):
            line = f"    {_ident(col['attname'])} {col['type']}"
            if col["collation"]:
                line += f" COLLATE {col['collation']}"
            if col["attgenerated"] == "s":
                line += f" GENERATED ALWAYS AS ({col['default']}) STORED"
            elif col["default"] is not None:
                line += f" DEFAULT {col['default']}"
            if col["attidentity"] in ("a", "d"):
                kind = "ALWAYS" if col["attidentity"] == "a" else "BY DEFAULT"
                line += f" GENERATED {kind} AS IDENTITY"
            if col["attnotnull"]:
                line += " NOT NULL"
            lines.append(line)
            if col["stattarget"] >= 0:
                statistics.append(
                    f"ALTER TABLE {_ident(name)} ALTER COLUMN {_ident(col['attname'])}"
                    f" SET STATISTICS {col['stattarget']};"
                )
        unlogged = "UNLOGGED " if table["relpersistence"] == "u" else ""
        text = f"CREATE {unlogged}TABLE {_ident(name)} (\n" + ",\n".join(lines) + "\n)"
        if table["reloptions"]:
            text += f" WITH ({', '.join(sorted(table['reloptions']))})"
        out.append(text + ";")
        out.extend(statistics)
    return out


async def _constraints(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await _fetch(
        conn,
        """SELECT c.relname, k.conname, pg_get_constraintdef(k.oid) AS def
           FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
           WHERE k.connamespace = $1::regnamespace AND k.contype <> 'n'""",
        schema,
    )
    rows.sort(key=lambda r: (r["relname"], r["conname"]))
    return [
        f"ALTER TABLE {_ident(r['relname'])} ADD CONSTRAINT {_ident(r['conname'])} {r['def']};"
        for r in rows
    ]


async def _indexes(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await _fetch(
        conn,
        """SELECT t.relname AS tablename, i.relname, pg_get_indexdef(i.oid) AS def
           FROM pg_index x
           JOIN pg_class i ON i.oid = x.indexrelid
           JOIN pg_class t ON t.oid = x.indrelid
           WHERE i.relnamespace = $1::regnamespace
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.oid
                             AND k.conrelid = t.oid AND k.contype IN ('p', 'u', 'x'))""",
        schema,
    )
    rows.sort(key=lambda r: (r["tablename"], r["relname"]))
    return [r["def"] + ";" for r in rows]


async def _functions(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await _fetch(
        conn,
        """SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
                  pg_get_functiondef(p.oid) AS def
           FROM pg_proc p
           WHERE p.pronamespace = $1::regnamespace AND p.prokind IN ('f', 'p')""",
        schema,
    )
    rows.sort(key=lambda r: (r["proname"], r["args"]))
    return [r["def"].rstrip() + ";" for r in rows]


async def _triggers(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await _fetch(
        conn,
        """SELECT c.relname, g.tgname, pg_get_triggerdef(g.oid) AS def
           FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
           WHERE c.relnamespace = $1::regnamespace AND NOT g.tgisinternal""",
        schema,
    )
    rows.sort(key=lambda r: (r["relname"], r["tgname"]))
    return [r["def"] + ";" for r in rows]


async def _views(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await _fetch(
        conn,
        """SELECT c.relname, c.relkind, pg_get_viewdef(c.oid) AS def
           FROM pg_class c
           WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('v', 'm')""",
        schema,
    )
    rows.sort(key=lambda r: r["relname"])
    kinds = {"v": "VIEW", "m": "MATERIALIZED VIEW"}
    return [
        f"CREATE {kinds[r['relkind']]} {_ident(r['relname'])} AS\n{r['def'].rstrip(';')};"
        for r in rows
    ]


async def _others(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Objects the migrations do not make (types of their own, partitioned tables, foreign
    tables): named only, so that one made by a later migration shows in the diff until this
    module learns to print it."""
    relations = await _fetch(
        conn,
        """SELECT c.relname, c.relkind FROM pg_class c
           WHERE c.relnamespace = $1::regnamespace
             AND c.relkind NOT IN ('r', 'S', 'i', 'v', 'm', 'c', 't')""",
        schema,
    )
    rows = await _fetch(
        conn,
        """SELECT t.typname, t.typtype FROM pg_type t
           WHERE t.typnamespace = $1::regnamespace AND t.typtype IN ('c', 'd', 'e', 'r', 'm')
             AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c
                                     WHERE c.oid = t.typrelid) = 'c')""",
        schema,
    )
    return sorted(
        [f"-- type {_ident(r['typname'])} (typtype {r['typtype']})" for r in rows]
        + [f"-- relation {_ident(r['relname'])} (relkind {r['relkind']})" for r in relations]
    )


async def _comments(conn: asyncpg.Connection, schema: str) -> list[str]:
    rows = await _fetch(
        conn,
        """SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid) AS object,
                  d.description
           FROM pg_description d
           WHERE (d.classoid = 'pg_class'::regclass AND d.objoid IN
                      (SELECT oid FROM pg_class WHERE relnamespace = $1::regnamespace))
              OR (d.classoid = 'pg_proc'::regclass AND d.objoid IN
                      (SELECT oid FROM pg_proc WHERE pronamespace = $1::regnamespace))""",
        schema,
    )
    return sorted(f"-- comment on {r['object']}: {r['description']!r}" for r in rows)


async def dump_schema(conn: asyncpg.Connection, schema: str) -> str:
    """The schema-only dump of ``schema``, with names relative to it."""
    sections: list[tuple[str, list[str]]] = []
    async with conn.transaction():
        # Names in the schema print unqualified while it is first on the search path (regclass
        # in defaults, types in signatures); what the catalog functions qualify regardless is
        # stripped below.
        await conn.execute(
            "SELECT set_config('search_path', quote_ident($1) || ', pg_catalog', true)", schema
        )
        for title, part in (
            ("Not printed", _others),
            ("Sequences", _sequences),
            ("Tables", _tables),
            ("Constraints", _constraints),
            ("Indexes", _indexes),
            ("Views", _views),
            ("Functions", _functions),
            ("Triggers", _triggers),
            ("Comments", _comments),
        ):
            items = await part(conn, schema)
            if items:
                sections.append((title, items))
    text = HEADER
    for title, items in sections:
        text += f"\n-- {title}\n\n" + "\n\n".join(items) + "\n"
    return _unqualify(text, schema)


async def dump_fresh(url: str) -> str:
    """Migrate a new, temporary schema in the database at ``url`` and dump it."""
    from identity.store.migrate import migrate

    schema = f"schema_dump_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            await conn.execute(f'SET search_path TO "{schema}"')
            await migrate(conn)
            return await dump_schema(conn, schema)
        finally:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    url = args[0] if args else os.environ.get("IDENTITY_TEST_DATABASE_URL")
    if url:
        sys.stdout.write(asyncio.run(dump_fresh(url)))
        return 0
    import tempfile
    from pathlib import Path

    from identity.store.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="identity-schema-dump-") as directory:
        embedded = EmbeddedPostgres(Path(directory))
        embedded_url = embedded.start_sync()
        try:
            text = asyncio.run(dump_fresh(embedded_url))
        finally:
            embedded.stop_sync()
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
