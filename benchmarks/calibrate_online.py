"""Matching quality as a site lives it: a labelled set fed through the core one record at a
time into an empty index (as ITI-8 feeds it), then `identity calibrate --apply`; the persons
are compared with the truth before and after.

    pip install -e '.[bench]'
    python benchmarks/outside_sets.py --work /tmp/os      # writes the labelled CSVs
    python benchmarks/calibrate_online.py --csv /tmp/os/febrl4-two-source.csv \\
        --url postgresql://postgres@127.0.0.1:5432/postgres [--records 5000] [--json FILE]

Each record is registered from its source domain (a record without one: the n-th record of a
person comes from source S<n>, so that one person's records come from different sources, as
in a health-information exchange) with its record id as the identifier; an SSN goes to the
national domain. A scratch database is created on the server and dropped afterwards.

Prints, before and after calibration: pairwise precision, recall and F1 of the persons against
the truth, open review items per 1,000 records, and the records joined to a person holding
another true person (false links), with the pairs of true persons wrongly joined by their
relation (``wrongly_joined_pairs``: twin, jr_sr, sibling, spouse, their sum ``family``, a
common-name cluster, other; the generator's sets only); plus the calibration's own report
(links made, links held for a steward, review items opened and closed, the thresholds).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from identity.calibration import CalibrationSchedule, apply, propose
from identity.config import load_settings
from identity.loop import run as run_loop
from identity.model import AuthorityRef, Demographics, IdentifierRef, RecordInput
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database
from identity.store.migrate import migrate
from matching.columns import read_records
from matching.evaluate import pairwise_figures
from matching.normalize import SSN_OID
from matching.synth import SynthRecord


def _inputs(records: list[SynthRecord]) -> tuple[list[RecordInput], list[str]]:
    """The records as the core registers them, and the source domains they use."""
    seen: Counter[str] = Counter()
    inputs, sources = [], set()
    for record in records:
        source = record.source_domain or f"S{seen[record.person_id]}"
        seen[record.person_id] += 1
        sources.add(source)
        others = tuple(
            IdentifierRef(value=x["value"], authority=AuthorityRef(oid=SSN_OID), type="SS")
            for x in record.identifiers if x["domain"] == SSN_OID
        )
        inputs.append(RecordInput(
            identifier=IdentifierRef(value=record.record_id,
                                     authority=AuthorityRef(namespace=source)),
            demographics=Demographics.model_validate(record.demographics),
            other_identifiers=others,
        ))
    return inputs, sorted(sources)


#: Relations (SynthRecord.relations) between members of one family.
FAMILY = ("twin", "jr_sr", "sibling", "spouse", "household")


def family_members_linked(
    members: dict[Any, set[str]], relations: dict[str, dict[str, str]]
) -> dict[str, int]:
    """Per relation (and ``other``): the pairs of true persons held by one predicted person
    (``members``: predicted person -> true persons) that share a relation group (``relations``:
    true person -> {kind: group}); ``family`` sums the family relations (:data:`FAMILY`)."""
    counts = dict.fromkeys((*FAMILY, "common", "other"), 0)
    for people in members.values():
        for x, y in itertools.combinations(sorted(people), 2):
            rx, ry = relations.get(x, {}), relations.get(y, {})
            kind = next((k for k, g in rx.items() if ry.get(k) == g), "other")
            counts[kind if kind in counts else "other"] += 1
    counts["family"] = sum(counts[k] for k in FAMILY)
    return counts


async def _figures(db: Database, truth: dict[tuple[str, str], str], n: int,
                   relations: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    async with db.read() as conn:
        rows = await conn.fetch(
            "SELECT d.namespace, r.identifier, l.person_id FROM source_record r"
            " JOIN domain d ON d.id = r.domain_id JOIN link l ON l.source_record_id = r.id"
            " WHERE r.status = 'active'"
        )
        reviews = await conn.fetchval("SELECT count(*) FROM review_item WHERE status = 'open'")
    pairs = [(truth[(r["namespace"], r["identifier"])], r["person_id"]) for r in rows]
    figures = pairwise_figures([t for t, _ in pairs], [p for _, p in pairs])
    members: dict[int, set[str]] = {}
    for true_person, person in pairs:
        members.setdefault(person, set()).add(true_person)
    return {
        "precision": round(figures["pairwise_precision"], 4),
        "recall": round(figures["pairwise_recall"], 4),
        "f1": round(figures["pairwise_f1"], 4),
        "review_per_1000": round(1000 * reviews / n, 1),
        "false_links": sum(len(people) - 1 for people in members.values()),
        "wrongly_joined_pairs": family_members_linked(members, relations or {}),
    }


async def run(args: argparse.Namespace) -> None:
    records = list(itertools.islice(read_records(args.csv), args.records))
    inputs, sources = _inputs(records)
    truth = {(i.identifier.authority.namespace or "", i.identifier.value): r.person_id
             for i, r in zip(inputs, records, strict=True)}
    relations: dict[str, dict[str, str]] = {}
    for r in records:
        relations.setdefault(r.person_id, {}).update(r.relations)
    domains = [{"namespace": s} for s in sources] + [
        {"namespace": "SSN", "oid": SSN_OID, "identifies_person": True}
    ]
    matching: dict[str, Any] = {}
    if args.false_link_budget is not None:  # negative: none, the threshold stays at 0.999
        matching["false_link_budget"] = (None if args.false_link_budget < 0
                                         else args.false_link_budget)
    if args.auto_link_floor is not None:
        matching["auto_link_floor"] = args.auto_link_floor
    settings = load_settings(None, log_level="WARNING", domains=domains, matching=matching)
    name = f"identity_calibrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(args.url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = args.url.rsplit("/", 1)[0] + f"/{name}"
    try:
        db = await Database.connect(url, min_size=1, max_size=4)
        try:
            async with db.connection() as conn:
                await migrate(conn)
            mpi = Mpi(db, settings)
            await mpi.start()
            schedule = CalibrationSchedule(mpi)  # as the service runs it: name counts refitted
            started = checked = time.perf_counter()  # each minute when the index has grown
            for record in inputs:
                await mpi.handle(Register(subject=record), Envelope(actor="feed"))
                if time.perf_counter() - checked >= schedule.refresh:
                    await schedule.refresh_if_grown()
                    checked = time.perf_counter()
            fed = time.perf_counter() - started
            before = await _figures(db, truth, len(records), relations)
            started = time.perf_counter()
            proposal = await propose(mpi, actor="calibrate")
            await apply(mpi, proposal, actor="calibrate")
            calibrated = time.perf_counter() - started
            after = await _figures(db, truth, len(records), relations)
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    result = {
        "csv": str(args.csv),
        "records": len(records),
        "feed_seconds": round(fed, 1),
        "calibrate_seconds": round(calibrated, 1),
        "before": before,
        "after": after,
        "calibration": {k: proposal.report[k] for k in
                        ("thresholds", "threshold_proposal", "review_proposal", "links",
                         "links_in_conflict", "review_items", "links_no_longer_holding",
                         "expected_false_links")
                        if k in proposal.report},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--csv", type=Path, required=True,
                        help="a labelled CSV in our layout (benchmarks/outside_sets.py)")
    parser.add_argument("--url", required=True, help="a PostgreSQL server's maintenance URL")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--false-link-budget", type=float, default=None, metavar="PER_10K",
                        help="matching.false_link_budget for the calibration (default: the "
                        "configuration's, 10; negative: none, auto-link stays 0.999)")
    parser.add_argument("--auto-link-floor", type=float, default=None, metavar="P",
                        help="matching.auto_link_floor for the calibration (default 0.98)")
    parser.add_argument("--json", default=None, metavar="FILE")
    run_loop(run(parser.parse_args()))


if __name__ == "__main__":
    main()
