"""The ``identity`` command: serve, migrate, domains, generate, train, calibrate, import,
evaluate, and the steward's review and person commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from identity import __version__
from identity.config import Settings, load_settings
from identity.errors import ConfigError, IdentityError
from identity.logs import setup_logging
from identity.loop import run

#: ``identity import`` takes the set path (``--bulk``) by itself from this many records on.
BULK_AUTO_RECORDS = 20_000


class InvalidArgument(IdentityError):
    """A command-line argument that cannot be used."""


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

    generate = commands.add_parser(
        "generate",
        parents=[common],
        help="write a synthetic population with ground truth",
        description="Write a synthetic population (persons with duplicate records spread over "
        "several source domains, realistic errors, twins, Jr/Sr pairs, families) as "
        "population.csv (with the true person id), patients.ndjson (FHIR Patients) and "
        "adt.hl7 (HL7 v2.5 ADT^A04 messages, MLLP-framed). By default the records come from "
        "the demo configuration's sources (identity/demo/demo.toml), so that what is written "
        "can be sent to, or imported into, the demo service as it is.",
    )
    generate.add_argument("--persons", type=int, required=True, metavar="N")
    generate.add_argument("--duplicates", type=float, default=0.2, metavar="RATE",
                          help="share of persons with more than one record (default 0.2)")
    generate.add_argument("--seed", type=int, default=1, metavar="S")
    generate.add_argument("--hard", action="store_true",
                          help="more twins, Jr/Sr pairs, common-name clusters and errors")
    generate.add_argument("--out", default=".", metavar="DIR", help="output folder")
    generate.add_argument("--formats", default="csv,ndjson,hl7",
                          help="comma-separated subset of csv, ndjson, hl7")
    generate.add_argument(
        "--domains", default="demo", metavar="SPEC",
        help="the records' source domains: 'demo' (default: HOSPA, HOSPB and LAB, sent by "
        "ADT_A, ADT_B and LIS, as identity/demo/demo.toml allows), 'synthetic' (the "
        "generator's own five, as benchmarks/bench.toml configures) or a list "
        "NAMESPACE=APPLICATION,... (domains named by namespace only)",
    )

    train = commands.add_parser(
        "train",
        parents=[common],
        help="estimate a match model from the records in the index",
        description="Estimate u from random pairs, m by EM per training rule (u fixed, the "
        "rule's comparisons held out) and the prior from those passes, using the index's "
        "active records and, as labels, the pairs stewards decided. Writes one readable JSON "
        "model; point matching.model at it.",
    )
    train.add_argument("--output", required=True, metavar="FILE")
    train.add_argument("--report", action="store_true",
                       help="also show what the stewards' decisions change: the weights "
                       "(against training without them, and against the model in service), "
                       "the open review queue and the steward-decided pairs as each model "
                       "decides them; nothing is stored but FILE")
    train.add_argument("--json", action="store_true", help="print the report as JSON")
    train.add_argument("--seed", type=int, default=0, metavar="S")

    calibrate = commands.add_parser(
        "calibrate",
        parents=[common],
        help="estimate a model from the index and show (or --apply) what it changes",
        description="Estimate a match model from the index's active records (stewards' "
        "decisions as labels), store it as a new version, write it to "
        "OUTPUT_DIR/model-v<N>.json with a diff against the model in service, and re-score the "
        "index under it: links that would be made (by probability band), review items opened, "
        "closed or dismissed, links that would no longer hold (reported, never undone), hard-rule "
        "hits, expected false links and how it judges the pairs stewards decided. The "
        "auto-link threshold is proposed from matching.false_link_budget (default 10 false "
        "links per 10,000), never below matching.auto_link_floor (default 0.98); the review "
        "threshold is raised, when needed, to keep the queue within matching.review_budget "
        "(default 20 open items per 1,000 records); a threshold set in the configuration "
        "wins. --apply puts the model in service in every "
        "running worker without a restart and makes the changes, as one command in history "
        "(undo reverts it). The default is the dry run.",
    )
    mode = calibrate.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="report only (the default)")
    mode.add_argument("--apply", action="store_true", help="put the model in service")
    calibrate.add_argument("--output-dir", default="models", metavar="DIR",
                           help="where model-v<N>.json and its diff go (default: ./models)")
    calibrate.add_argument("--json", action="store_true", help="print the report as JSON")
    calibrate.add_argument("--seed", type=int, default=0, metavar="S")

    load = commands.add_parser(
        "import",
        parents=[common],
        help="bulk load of an empty or populated index from CSV, FHIR NDJSON or HL7 v2 files",
        description="Load records from files into the index, streamed, with the feeds' "
        "matching decisions: set at a time (--bulk: a chunk per transaction, written with "
        "COPY; the default from 20,000 records on) or each registered as the feeds register "
        "it (--no-bulk). CSV read through a "
        "column mapping (--columns; the layout `identity generate` writes by default), NDJSON "
        "of FHIR Patients, HL7 v2 batch files (FHS/BHS, or messages one after the other, MLLP "
        "framed or not; ADT A01, A04, A05, A08, A28 and A31 only). A record already loaded "
        "with the same content is skipped, so a re-run resumes. Records that cannot be loaded "
        "are listed with their reason in a rejects file. See docs/operations.md, Bulk import.",
    )
    load.add_argument("file", metavar="FILE", nargs="+")
    load.add_argument("--format", choices=("auto", "csv", "ndjson", "hl7"), default="auto",
                      help="the files' format (default: from the name, else the first bytes)")
    load.add_argument(
        "--columns", default=None, metavar="MAPPING",
        help="CSV: our fields to the file's columns, FIELD=COLUMN,... (e.g. mrn=patient_id,"
        "given=first_name,family=surname,birth_date=dob); COLUMN may be A+B (joined by a "
        "space); an item without '=' is a preset: 'generator' (the default, the layout "
        "`identity generate` writes), later items override it. Fields: source_domain, mrn, "
        "family, given, middle, prefix, suffix, previous_family, birth_date, sex, "
        "address_line1, address_line2, city, state, postal_code, country, phone, ssn, "
        "mothers_maiden_name, multiple_birth")
    load.add_argument("--domain", default=None, metavar="NAMESPACE",
                      help="CSV: the domain of rows whose mapping names none (a file of one "
                      "source without a source_domain column)")
    load.add_argument("--source", default=None,
                      help="register as this source (the application a domain's sources name;"
                      " HL7 v2: default MSH-3 of each message)")
    load.add_argument("--concurrency", type=int, default=4, metavar="N",
                      help="registrations in flight at once, each on its own database "
                      "connection (default 4)")
    load.add_argument("--no-update", action="store_true",
                      help="skip a record already in the index even when its content differs "
                      "(default: update it, as the feed does)")
    load.add_argument("--rejects", default=None, metavar="FILE",
                      help="where the refused records go (default: FILE.rejects.csv next to "
                      "each input)")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    load.add_argument("--json", action="store_true", help="print the summary as JSON")
    load.add_argument("--bulk", action=argparse.BooleanOptionalAction, default=None,
                      help="the set path: records new to the index matched a chunk at a "
                      "time (--chunk) with the feed's decisions and written with COPY, one "
                      "transaction per chunk (memory bounded by the chunk; empty or populated "
                      "index; any format). Default: on when the files hold at least "
                      f"{BULK_AUTO_RECORDS:,} records; --no-bulk registers each record on "
                      "its own as a feed would")
    load.add_argument("--chunk", type=int, default=None, metavar="N",
                      help="--bulk: records matched and written per transaction (default "
                      "20000)")
    load.add_argument("--workers", type=int, default=1,
                      help="--bulk: processes that normalise the records (default 1: on a "
                      "two-core host PostgreSQL needs the other)")

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="accuracy of the engine on a labelled CSV",
        description="Run blocking, scoring, decisions and the joining of persons (as the "
        "service joins them) on a labelled CSV (the "
        "layout `identity generate` writes, or any layout with --columns) and print as JSON: "
        "pairwise and cluster precision, recall and F1, pair completeness, auto-link "
        "precision, review items per 1,000 records, the share of true pairs per probability "
        "band and, per hard rule, the pairs it fired on and how many were true pairs.",
    )
    evaluate.add_argument("file", metavar="FILE")
    evaluate.add_argument(
        "--columns", default=None, metavar="MAPPING",
        help="our fields to the file's columns: FIELD=COLUMN,... (e.g. given=first_name,"
        "family=surname,birth_date=dob); COLUMN may be A+B (joined by a space); unmapped "
        "fields are empty. Fields: those of the generator's CSV (record_id, person_id, "
        "source_domain, mrn, family, given, middle, suffix, birth_date, sex, address_line1, "
        "address_line2, city, state, postal_code, phone, ssn, ...). Dates: YYYY-MM-DD or "
        "YYYYMMDD. Default: the preset 'synth' (the layout `identity generate` writes)",
    )
    evaluate.add_argument("--truth-column", default=None, metavar="COLUMN",
                          help="the column naming the true person (default: person_id, or "
                          "as --columns maps person_id)")
    evaluate.add_argument("--truth-pattern", default=None, metavar="REGEX",
                          help="the person is this regular expression's first group in the "
                          "truth column (e.g. 'rec-(\\d+)' for Febrl's rec-12-dup-0)")
    evaluate.add_argument("--model", default=None, metavar="FILE",
                          help="model JSON (default: the configured one, else the shipped one)")
    evaluate.add_argument("--auto-link", type=float, default=None, metavar="P",
                          help="auto-link probability (default: the configured one)")
    evaluate.add_argument("--review", type=float, default=None, metavar="P",
                          help="review probability (default: the configured one)")
    _steward_parsers(commands, common)
    return parser


def _steward_parsers(commands: Any, common: argparse.ArgumentParser) -> None:
    """`identity review ...` and `identity person ...`: the steward's work without a browser
    (docs/steward.md), through the core as the API's."""
    steward = argparse.ArgumentParser(add_help=False)
    steward.add_argument("--steward", default=None, metavar="NAME",
                         help="who decides (history, audit: steward:NAME; default: $USER)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON instead of text")

    review = commands.add_parser(
        "review", parents=[common], help="the review queue: list, show, decide, undo",
        description="Work through the review queue: list items, show one with both records "
        "and why the engine paired them, decide it, undo a decision.",
    )
    actions = review.add_subparsers(dest="action", metavar="ACTION", required=True)
    listed = actions.add_parser("list", parents=[common, as_json], help="a page of the queue")
    listed.add_argument("--status", default="open",
                        choices=["open", "linked", "rejected", "dismissed", "all"])
    listed.add_argument("--rule", default=None, help="a hard rule that fired ('none': none)")
    listed.add_argument("--domain", default=None, help="a record's domain (namespace or OID)")
    listed.add_argument("--min-probability", type=float, default=None, metavar="P")
    listed.add_argument("--max-probability", type=float, default=None, metavar="P")
    listed.add_argument("--sort", default="oldest",
                        choices=["oldest", "newest", "impact", "probability_desc",
                                 "probability_asc", "uncertain"],
                        help="uncertain: the probability closest to 0.5 first (the labels "
                        "that teach the model most)")
    listed.add_argument("--limit", type=int, default=20)
    listed.add_argument("--offset", type=int, default=0)
    listed.add_argument("--after", default=None, metavar="CURSOR",
                        help="the page after the one whose next cursor this is (same --sort; "
                        "not with --offset)")
    shown = actions.add_parser("show", parents=[common, as_json],
                               help="one item: both records, the explanation, history")
    shown.add_argument("item", type=int, metavar="ID")
    decide = actions.add_parser("decide", parents=[common, steward, as_json],
                                help="decide an item: same, different or dismiss")
    decide.add_argument("item", type=int, metavar="ID")
    decide.add_argument("decision", choices=["same", "different", "dismiss"])
    decide.add_argument("--reason", default=None)
    decide.add_argument("--version", type=int, default=None, metavar="N",
                        help="the item's version you decided on (refused if it changed)")
    undo = actions.add_parser("undo", parents=[common, steward, as_json],
                              help="undo a command (a decision, a merge, a feed's merge)")
    undo.add_argument("command_id", metavar="COMMAND_ID")

    person = commands.add_parser(
        "person", parents=[common], help="a person: records, identifiers, golden view",
        description="Show a person: its records, identifiers, golden view, open review items "
        "and history.",
    )
    person_actions = person.add_subparsers(dest="action", metavar="ACTION", required=True)
    person_show = person_actions.add_parser("show", parents=[common, as_json],
                                            help="show one person (by id or enterprise id)")
    person_show.add_argument("person", metavar="ID",
                             help="the person's id, or its enterprise id (10 digits)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"identity: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, with_pid=args.command == "serve" and settings.workers > 1)
    try:
        if args.command == "serve":
            from identity.app import serve

            run(serve(settings), settings.event_loop)
        elif args.command == "migrate":
            print(run(_migrate(settings)))
        elif args.command == "domains":
            print(run(_domains(settings, as_json=args.json)))
        elif args.command == "generate":
            print(_generate(args))
        elif args.command == "train":
            if args.report:
                print(run(_train_report(settings, args.output, as_json=args.json,
                                        seed=args.seed)))
            else:
                print(run(_train(settings, args.output)))
        elif args.command == "calibrate":
            print(run(_calibrate(settings, apply=args.apply, output_dir=Path(args.output_dir),
                                 as_json=args.json, seed=args.seed)))
        elif args.command == "import":
            print(run(_import(settings, args)))
        elif args.command == "evaluate":
            print(_evaluate(settings, args))
        elif args.command in ("review", "person"):
            print(run(_steward(settings, args)))
    except IdentityError as exc:
        print(f"identity: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


async def _migrate(settings: Settings) -> str:
    from identity.app import migrated_database

    async with migrated_database(settings) as (_, applied):
        pass
    return f"applied migrations: {applied}" if applied else "database is up to date"


async def _domains(settings: Settings, *, as_json: bool) -> str:
    from identity.app import migrated_database
    from identity.mpi import Mpi

    async with migrated_database(settings) as (db, _):
        mpi = Mpi(db, settings)
        await mpi.start()
        domains = mpi.domains.all()
    if as_json:
        return json.dumps([d.model_dump() for d in domains], indent=2)
    lines = [f"{'namespace':<16} {'oid':<32} {'person-id':<9} {'enterprise':<10} sources"]
    for d in domains:
        lines.append(
            f"{d.namespace:<16} {d.oid or '-':<32} {'yes' if d.identifies_person else 'no':<9} "
            f"{'yes' if d.is_enterprise else 'no':<10} {','.join(d.sources) or '(any)'}"
        )
    return "\n".join(lines)


#: The demo configuration's source domains (identity/demo/demo.toml): namespace, the
#: application that assigns in it (MSH-3, FHIR client id), OID.
DEMO_SOURCES = (
    ("HOSPA", "ADT_A", "1.3.6.1.4.1.21367.2026.2.1"),
    ("HOSPB", "ADT_B", "1.3.6.1.4.1.21367.2026.2.2"),
    ("LAB", "LIS", "1.3.6.1.4.1.21367.2026.2.3"),
)
#: The demo's namespace for the national identifier (the SSN, under its OID).
DEMO_NATIONAL = "NATIONAL"


@dataclass(frozen=True)
class GeneratedDomains:
    """Where generated records come from: source domains (namespace, application, OID or
    None) and the namespace the national identifier is written under (empty: its OID only).
    No sources: the generator's own domains, written as they are."""

    sources: tuple[tuple[str, str, str | None], ...]
    national: str


def _generated_domains(spec: str) -> GeneratedDomains:
    if spec == "demo":
        return GeneratedDomains(DEMO_SOURCES, DEMO_NATIONAL)
    if spec == "synthetic":
        return GeneratedDomains((), "")
    sources = []
    for item in (i.strip() for i in spec.split(",")):
        namespace, _, application = item.partition("=")
        if not namespace or not application:
            raise InvalidArgument(
                f"--domains: {item!r} is not NAMESPACE=APPLICATION (or 'demo', 'synthetic')"
            )
        sources.append((namespace, application, None))
    if len({ns for ns, _, _ in sources}) != len(sources):
        raise InvalidArgument("--domains: a namespace is named twice")
    return GeneratedDomains(tuple(sources), "")


def _assign_domains(records: list[Any], namespaces: Sequence[str]) -> list[Any]:
    """The generated records moved to ``namespaces``. A person's records in different domains
    of the generator go to different domains here, as long as there are enough (a person's
    first domain rotates over ``namespaces``); each domain numbers its records from 1. The
    national identifier is left as it is."""
    from itertools import groupby

    counters = dict.fromkeys(namespaces, 0)
    moved = []
    for ordinal, (_, group) in enumerate(groupby(records, key=lambda r: r.person_id)):
        targets: dict[str, str] = {}
        for record in group:
            if record.source_domain not in targets:
                index = (ordinal + len(targets)) % len(namespaces)
                targets[record.source_domain] = namespaces[index]
            namespace = targets[record.source_domain]
            counters[namespace] += 1
            mrn = f"{counters[namespace]:08d}"
            identifiers = [
                {**i, "domain": namespace, "value": mrn} if i["domain"] == record.source_domain
                else i
                for i in record.identifiers
            ]
            moved.append(replace(record, source_domain=namespace, identifiers=identifiers))
    return moved


def _generate(args: argparse.Namespace) -> str:
    from identity.batch import NATIONAL_ID_OID
    from matching import synth

    formats = {f.strip() for f in args.formats.split(",") if f.strip()}
    unknown = formats - {"csv", "ndjson", "hl7"}
    if unknown:
        raise InvalidArgument(f"unknown formats: {', '.join(sorted(unknown))}")
    domains = _generated_domains(args.domains)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = synth.generate(args.persons, args.duplicates, args.seed, hard=args.hard)
    authorities: dict[str, tuple[str, str | None]] | None = None
    applications: dict[str, str] | None = None
    if domains.sources:
        records = _assign_domains(records, [ns for ns, _, _ in domains.sources])
        authorities = {ns: (ns, oid) for ns, _, oid in domains.sources}
        authorities[synth.SSN_DOMAIN] = (domains.national, NATIONAL_ID_OID)
        applications = {ns: app for ns, app, _ in domains.sources}
    written = []
    if "csv" in formats:
        synth.write_csv(records, out / "population.csv")
        written.append("population.csv")
    if "ndjson" in formats:
        synth.write_ndjson(records, out / "patients.ndjson", authorities=authorities)
        written.append("patients.ndjson")
    if "hl7" in formats:
        synth.write_hl7(
            records, out / "adt.hl7",
            authorities=authorities, applications=applications, framed=True,
        )
        written.append("adt.hl7")
    persons = len({r.person_id for r in records})
    return f"{len(records)} records of {persons} persons written to {out}: {', '.join(written)}"


async def _train(settings: Settings, output: str) -> str:
    from identity.app import migrated_database
    from identity.calibration import labelled_pairs
    from identity.store.calibration import CalibrationQueries
    from identity.store.repository import Repository
    from matching.estimate import train

    async with migrated_database(settings) as (db, _), db.connection() as conn:
        rows = await CalibrationQueries(conn).index_rows()
        labels = await Repository(conn).steward_labels()
    if len(rows) < 2:
        raise InvalidArgument("the index holds fewer than two records: nothing to train on")
    pairs = labelled_pairs(rows, labels)
    model = train([row.normalized for row in rows], labels=pairs)
    model.save(output)
    return f"model trained on {len(rows)} records and {len(pairs)} steward labels: {output}"


async def _train_report(settings: Settings, output: str, *, as_json: bool, seed: int) -> str:
    from identity.app import migrated_database
    from identity.calibration import train_report
    from identity.mpi import Mpi

    async with migrated_database(settings) as (db, _):
        mpi = Mpi(db, settings)
        await mpi.start()
        try:
            trained = await train_report(mpi, seed=seed)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc
        finally:
            await mpi.stop()
    trained.model.save(output)
    report = trained.report
    if as_json:
        return json.dumps({"file": output, **report, "labels_diff": trained.labels_diff,
                           "service_diff": trained.service_diff}, indent=2)

    def table(figures: dict[str, Any]) -> list[str]:
        if not figures.get("pairs"):
            return ["  none"]
        lines = [f"  {figures['pairs']} pairs; in service: {figures['in_service']}; trained: "
                 f"{figures['trained']}"]
        lines += [f"  {move}: {n}" for move, n in figures["moves"].items()] or ["  no change"]
        return lines

    decisions = report["steward_decisions"]
    return "\n".join([
        f"model trained on {report['records']} records and {report['steward_labels']} "
        f"steward labels: {output}",
        f"thresholds in service: {report['thresholds']}",
        "", "what the stewards' decisions change in the weights:", trained.labels_diff,
        "", "the trained model against the model in service:", trained.service_diff,
        "", "open review items, decided by each model:", *table(report["open_review_items"]),
        "", "pairs stewards called the same person:", *table(decisions["same_person"]),
        "", "pairs stewards called different persons:", *table(decisions["not_a_duplicate"]),
    ])


async def _calibrate(
    settings: Settings, *, apply: bool, output_dir: Path, as_json: bool, seed: int
) -> str:
    import asyncio

    from identity.app import migrated_database
    from identity.calibration import apply as apply_proposal
    from identity.calibration import propose, save
    from identity.mpi import Mpi

    async with migrated_database(settings) as (db, _):
        mpi = Mpi(db, settings)
        await mpi.start()
        try:
            proposal = await propose(mpi, actor="calibrate", seed=seed)
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from exc
        path = await asyncio.to_thread(save, proposal, output_dir)
        result = await apply_proposal(mpi, proposal, actor="calibrate") if apply else None
    report = {
        "version": proposal.version,
        "file": str(path),
        "applied": apply,
        "command_id": result.command_id if result is not None else None,
        **proposal.report,
    }
    if as_json:
        return json.dumps(report, indent=2, default=str)
    links = report["links"]
    reviews = report["review_items"]
    lines = [
        f"model version {proposal.version} estimated from {report['records']} records and "
        f"{report['steward_labels']} steward decisions: {path}",
        f"thresholds: auto_link {proposal.auto_link}, review {proposal.review}",
        *([f"review threshold from the review budget: at most {budget['items_allowed']} open "
           f"items; {budget['pairs_left_out']} pairs left out {budget['pairs_left_out_by_band']}"]
          if (budget := report.get("review_proposal")) else []),
        "",
        proposal.diff,
        "",
        f"links to make: {links['pairs']} pairs joining {links['persons_joined']} persons "
        f"{links['by_band']}",
        f"links left to a steward (manual or verified links): {report['links_for_a_steward']}",
        f"links held for a steward (a hard rule between the persons they would join, or a "
        f"record reaching two persons a rule keeps apart): {report['links_in_conflict']}",
        f"review items: {reviews['to_open']} to open, {reviews['closed_by_a_link']} closed by a "
        f"link, {reviews['to_dismiss']} to dismiss",
        f"automatic links that would no longer hold (not undone): "
        f"{report['links_no_longer_holding']}",
        f"hard rules: {report['hard_rules']}",
        f"expected false links: {report['expected_false_links']}",
        f"steward decisions: {report['steward_decisions']}",
    ]
    if "threshold_proposal" in report:
        lines.append(f"auto-link from the false-link budget: {report['threshold_proposal']}")
    if "with_a_budget" in report:
        lines.append("auto-link from the false-link budget, not applied, for comparison: "
                     f"{report['with_a_budget']}")
    lines.append(
        f"applied as command {result.command_id}: the running service uses version "
        f"{proposal.version} now (undo: that command id)" if result is not None
        else "dry run: nothing changed (--apply to put it in service)"
    )
    return "\n".join(lines)


async def _import(settings: Settings, args: argparse.Namespace) -> str:
    import logging

    from identity.app import migrated_database
    from identity.importer import (
        ColumnMappingError,
        Importer,
        Progress,
        Rejects,
        Summary,
        column_mapping,
        count_records,
        detect_format,
        progress_wanted,
        read_file,
    )
    from identity.mpi import Mpi
    from identity.mpi.bulk import CHUNK

    try:
        columns = column_mapping(args.columns)
    except ColumnMappingError as exc:
        raise InvalidArgument(f"--columns: {exc}") from exc
    files = [Path(f) for f in args.file]
    for path in files:
        if not path.is_file():
            raise InvalidArgument(f"{path}: no such file")
    formats = [detect_format(f) if args.format == "auto" else args.format for f in files]
    bulk = args.bulk
    if bulk is None:
        bulk = sum(count_records(f, fmt) for f, fmt in zip(files, formats, strict=True)) \
            >= BULK_AUTO_RECORDS
    show = progress_wanted(args.quiet)
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        # one INFO line per registration would cost more than the progress bar it breaks;
        # the summary counts them
        logging.getLogger("identity.mpi").setLevel(logging.WARNING)
    shared = Rejects(args.rejects) if args.rejects else None
    summary = Summary()
    async with migrated_database(settings) as (db, _):
        mpi = Mpi(db, settings)
        await mpi.start()
        concurrency = min(args.concurrency, settings.database.max_connections)
        importer = Importer(mpi, source=args.source, update=not args.no_update,
                            concurrency=concurrency, actor=f"import:{files[0].name}",
                            bulk=bulk, workers=args.workers, chunk=args.chunk or CHUNK)
        summary = importer.summary
        try:
            for path, fmt in zip(files, formats, strict=True):
                rejects = shared or Rejects(f"{path}.rejects.csv")
                if rejects.path not in summary.rejects_files:
                    summary.rejects_files.append(rejects.path)
                items = read_file(path, fmt, columns=columns, domain=args.domain)
                progress = Progress(count_records(path, fmt) if show else None, enabled=show,
                                    description=path.name)
                try:
                    await importer.run(items, file=str(path), rejects=rejects, progress=progress)
                finally:
                    progress.close()
                    if shared is None:
                        rejects.close()
        finally:
            importer.close()
            if shared is not None:
                shared.close()
        await importer.finish()
    if args.json:
        return json.dumps(summary.as_dict(), indent=2)
    rejected = f"; rejects: {', '.join(summary.rejects_files)}" if summary.rejected else ""
    return summary.line() + rejected


_DECISIONS = {"same": "same_person", "different": "different_persons", "dismiss": "dismiss"}


async def _steward(settings: Settings, args: argparse.Namespace) -> str:
    """`identity review ...` and `identity person show`."""
    import getpass

    from identity.app import migrated_database
    from identity.model import QueueFilter, QueueSort, ReviewStatus
    from identity.mpi import DecideReview, Envelope, Mpi, StewardDecision, Undo
    from identity.steward import text

    def dumped(model: Any) -> str:
        return str(model.model_dump_json(indent=2))

    async with migrated_database(settings) as (db, _):
        mpi = Mpi(db, settings)
        await mpi.start()
        try:
            name = getattr(args, "steward", None) or getpass.getuser() or "anonymous"
            envelope = Envelope(actor=f"steward:{name}")
            if args.command == "person":
                person_id = await _person_id(mpi, args.person)
                view = await mpi.person_view(person_id)
                return dumped(view) if args.json else text.person_text(view)
            if args.action == "list":
                filters = QueueFilter(
                    status=None if args.status == "all" else ReviewStatus(args.status),
                    rule=args.rule, domain=args.domain, min_probability=args.min_probability,
                    max_probability=args.max_probability,
                )
                page = await mpi.review_queue(filters, QueueSort(args.sort), args.limit,
                                              args.offset, after=args.after)
                if args.json:
                    return dumped(page)
                shown = text.queue_text(page)
                return shown + (f"\nnext page: --after {page.next}" if page.next else "")
            if args.action == "show":
                detail = await mpi.review_detail(args.item)
                return dumped(detail) if args.json else text.detail_text(detail)
            if args.action == "decide":
                decision = StewardDecision(_DECISIONS[args.decision])
                result = await mpi.handle(
                    DecideReview(item_id=args.item, decision=decision, reason=args.reason,
                                 version=args.version), envelope)
                if args.json:
                    return dumped(result)
                return text.outcome_text(f"review item {args.item}: {decision.value}", result)
            result = await mpi.handle(Undo(command_id=args.command_id), envelope)
            return dumped(result) if args.json else text.outcome_text(
                f"undid {args.command_id}", result)
        finally:
            await mpi.stop()


async def _person_id(mpi: Any, given: str) -> int:
    """A person id from the command line: an enterprise id (10 digits, as the index writes
    them), else the person's id."""
    if not given.isdigit():
        raise InvalidArgument(f"not a person id: {given!r}")
    if len(given) == 10:
        person = await mpi.get_person_by_enterprise_id(given)
        return int(person.id)
    return int(given)


def _evaluate(settings: Settings, args: argparse.Namespace) -> str:
    from identity.mpi.matcher import load_model
    from matching.columns import ColumnMapping, ColumnMappingError
    from matching.evaluate import evaluate_csv
    from matching.model import MatchModel

    matching = settings.matching
    auto_link = matching.auto_link if args.auto_link is None else args.auto_link
    review = matching.review if args.review is None else args.review
    if not 0.0 < review <= auto_link <= 1.0:
        raise InvalidArgument(
            f"thresholds must satisfy 0 < review <= auto-link <= 1 (review {review}, "
            f"auto-link {auto_link})"
        )
    try:
        columns = ColumnMapping.parse(args.columns)
    except ColumnMappingError as exc:
        raise InvalidArgument(f"--columns: {exc}") from exc
    try:
        if args.model:
            try:
                model = MatchModel.load(args.model)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise InvalidArgument(f"--model {args.model}: {exc}") from exc
        else:
            model = load_model(matching)
        figures = evaluate_csv(
            args.file,
            model,
            columns=columns,
            truth_column=args.truth_column,
            truth_pattern=args.truth_pattern,
            auto_link=auto_link,
            review=review,
            max_block=matching.max_block,
        )
    except ColumnMappingError as exc:
        raise InvalidArgument(f"{args.file}: {exc}") from exc
    except OSError as exc:
        raise InvalidArgument(f"{args.file}: {exc.strerror or exc}") from exc
    figures["model"] = str(args.model or matching.model or "default")
    used = columns.with_truth(args.truth_column, args.truth_pattern)
    figures["columns"] = {name: "+".join(sources) for name, sources in used.columns.items()}
    figures["truth_pattern"] = used.truth_pattern
    return json.dumps(figures, indent=2, default=str)


if __name__ == "__main__":
    raise SystemExit(main())
