"""Matching quality of the online path: a generated population registered one record at a time
through `Mpi.register` (as a feed would send it), the persons it ends up with compared to the
truth. The batch figures (`identity evaluate`, benchmarks/matching_bench.py) score every blocked
pair; this one goes through what a registration sees: the candidate selection (cap, floor,
margin), the decision per person, and the order of arrival.

    python benchmarks/online_quality.py --csv /tmp/p10k/population.csv \\
        --url postgresql://postgres@127.0.0.1:5432/postgres [--records 5000] \\
        [--min-keys 0 --margin 1000]   # the selection before the floor and the margin

Prints pairwise precision and recall of the persons against the truth, the records linked to a
person holding another true person's record (false links), and the review items opened.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from bench_common import bench_database

from identity.batch import record_input
from identity.config import load_settings
from identity.loop import run as run_loop
from identity.mpi import Envelope, Mpi, Register
from identity.store.db import Database
from identity.store.migrate import migrate
from matching.evaluate import pairwise_figures
from matching.synth import iter_csv

CONFIG = Path(__file__).with_name("bench.toml")


async def run(args: argparse.Namespace) -> None:
    records = list(itertools.islice(iter_csv(args.csv), args.records))
    matching = {"candidate_min_keys": args.min_keys, "candidate_margin": args.margin}
    settings = load_settings(CONFIG, log_level="WARNING", matching=matching)
    async with bench_database(None, args.url) as url:
        db = await Database.connect(url, min_size=1, max_size=2)
        try:
            async with db.connection() as conn:
                await migrate(conn)
            mpi = Mpi(db, settings)
            await mpi.start()
            started = time.perf_counter()
            for record in records:
                await mpi.handle(
                    Register(subject=record_input(record)), Envelope(actor="bench")
                )
            elapsed = time.perf_counter() - started
            async with db.connection() as conn:
                rows = await conn.fetch(
                    "SELECT d.namespace, r.identifier, l.person_id FROM source_record r"
                    " JOIN domain d ON d.id = r.domain_id JOIN link l ON l.source_record_id = r.id"
                )
                reviews = await conn.fetchval(
                    "SELECT count(*) FROM review_item WHERE status = 'open'"
                )
        finally:
            await db.close()
    truth = {(r.source_domain, r.mrn): r.person_id for r in records}
    pairs = [(truth[(row["namespace"], row["identifier"])], row["person_id"]) for row in rows]
    figures = pairwise_figures([t for t, _ in pairs], [p for _, p in pairs])
    members: dict[int, set[str]] = {}
    for true_person, person in pairs:
        members.setdefault(person, set()).add(true_person)
    mixed = sum(len(people) - 1 for people in members.values())
    print(f"{len(records)} records registered in {elapsed:.0f} s "
          f"(min_keys {args.min_keys}, margin {args.margin}): "
          f"{len(members)} persons for {len(set(truth.values()))} true persons")
    print(f"pairwise precision {figures['pairwise_precision']:.5f}, recall "
          f"{figures['pairwise_recall']:.5f}; true persons joined to another in one person: "
          f"{mixed}; review items open: {reviews}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--csv", type=Path, required=True, help="a generated population")
    parser.add_argument("--url", required=True, help="a PostgreSQL server (scratch database)")
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--min-keys", type=int, default=2)
    parser.add_argument("--margin", type=int, default=6)
    run_loop(run(parser.parse_args()))


if __name__ == "__main__":
    main()
