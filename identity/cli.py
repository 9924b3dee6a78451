"""The ``identity`` command: serve, migrate, domains (more come with their issues)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from identity import __version__
from identity.config import Settings, load_settings
from identity.errors import ConfigError, IdentityError
from identity.logs import setup_logging


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML configuration file (default: $IDENTITY_CONFIG; none: built-in defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="identity",
        description="A PIX/PDQ master patient index (HL7 v2 and FHIR front doors).",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"identity {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "serve",
        parents=[common],
        help="run the service until SIGINT/SIGTERM",
        description="Run the service (HTTP /healthz; embedded PostgreSQL when database.url "
        "is unset) until SIGINT or SIGTERM, then stop gracefully.",
    )
    commands.add_parser(
        "migrate",
        parents=[common],
        help="apply pending database migrations and exit",
        description="Apply pending database migrations in one transaction and exit.",
    )
    domains = commands.add_parser(
        "domains",
        parents=[common],
        help="list the assigning authorities",
        description="Sync the configured domains into the database and list every domain.",
    )
    domains.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"identity: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        if args.command == "serve":
            from identity.app import serve

            asyncio.run(serve(settings))
        elif args.command == "migrate":
            print(asyncio.run(_migrate(settings)))
        elif args.command == "domains":
            print(asyncio.run(_domains(settings, as_json=args.json)))
    except IdentityError as exc:
        print(f"identity: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _migrate(settings: Settings) -> str:
    from identity.app import open_database
    from identity.store.migrate import migrate

    db, embedded = await open_database(settings)
    try:
        async with db.connection() as conn:
            applied = await migrate(conn)
    finally:
        await db.close()
        if embedded is not None:
            await embedded.stop()
    return f"applied migrations: {applied}" if applied else "database is up to date"


async def _domains(settings: Settings, *, as_json: bool) -> str:
    from identity.app import open_database
    from identity.mpi import Mpi
    from identity.store.migrate import migrate

    db, embedded = await open_database(settings)
    try:
        async with db.connection() as conn:
            await migrate(conn)
        mpi = Mpi(db, settings)
        await mpi.start()
        domains = mpi.domains.all()
    finally:
        await db.close()
        if embedded is not None:
            await embedded.stop()
    if as_json:
        return json.dumps([d.model_dump() for d in domains], indent=2)
    lines = [f"{'namespace':<16} {'oid':<32} {'person-id':<9} {'enterprise':<10} sources"]
    for d in domains:
        lines.append(
            f"{d.namespace:<16} {d.oid or '-':<32} {'yes' if d.identifies_person else 'no':<9} "
            f"{'yes' if d.is_enterprise else 'no':<10} {','.join(d.sources) or '(any)'}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
