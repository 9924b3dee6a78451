"""Where the true duplicates of a record rank among its candidates, against an index imported
from a generated population (its CSV holds the truth): the evidence for a candidate cap.

For ``--sample`` records of persons with several records, the record's blocking keys are looked
up as a registration does (the SQL function register_candidates, the record itself left out,
the configured max_block, no cap) and the rank of its first true partner in the candidate
ranking (shared keys, then first appearance) is noted. Prints, for caps of 10 to 200, the
share of records whose partner is within the cap and the mean number of candidates scored.

    python benchmarks/candidate_recall.py --url postgresql://postgres@127.0.0.1:5432/bench1m \\
        --csv /tmp/p1m/population.csv [--sample 1000] [--rows 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
from collections import defaultdict
from pathlib import Path

from identity.batch import record_input
from identity.config import load_settings
from identity.mpi import Mpi
from identity.store.db import Database
from matching.synth import iter_csv

CONFIG = Path(__file__).with_name("bench.toml")
CAPS = (10, 25, 50, 100, 200)


async def run(args: argparse.Namespace) -> None:
    by_person = defaultdict(list)
    for record in itertools.islice(iter_csv(args.csv), args.rows):
        by_person[record.person_id].append(record)
    groups = [records for records in by_person.values() if len(records) > 1]
    rng = random.Random(args.seed)
    sample = [(rng.choice(g), g) for g in rng.sample(groups, min(args.sample, len(groups)))]
    db = await Database.connect(args.url, min_size=1, max_size=2)
    try:
        settings = load_settings(CONFIG, log_level="WARNING")
        mpi = Mpi(db, settings)
        await mpi.start()
        block = settings.matching.max_block
        ranks: list[int | None] = []
        found: list[int] = []
        async with db.connection() as conn:
            for record, group in sample:
                inp = record_input(record)
                domain = await mpi.domains.resolve(inp.identifier.authority)
                ids = {}
                for other in group:
                    row = await conn.fetchrow(
                        "SELECT r.id FROM source_record r JOIN domain d ON d.id = r.domain_id"
                        " WHERE d.namespace = $1 AND r.identifier = $2",
                        other.source_domain, other.mrn,
                    )
                    if row is not None:
                        ids[other.record_id] = row["id"]
                own = ids.get(record.record_id)
                partners = {v for k, v in ids.items() if k != record.record_id}
                if own is None or not partners:
                    continue
                identifiers = [(domain.id, inp.identifier.value, None)]
                for ref in inp.other_identifiers:
                    other_domain = await mpi.domains.resolve(ref.authority)
                    identifiers.append((other_domain.id, ref.value, ref.type))
                keys = mpi.matcher.prepare(inp.demographics.as_matching_input(), identifiers).keys
                row = await conn.fetchrow(
                    "SELECT prefetched FROM register_candidates($1::text[], $2, $3, $4, $5)",
                    keys, own, block + 1, block, 1_000_000,
                )
                ranking = list(row["prefetched"])
                found.append(len(ranking))
                ranks.append(next((i for i, rid in enumerate(ranking) if rid in partners), None))
    finally:
        await db.close()
    n = len(ranks)
    print(f"{n} records with a true partner in the index; candidates per record without a cap:"
          f" mean {statistics.fmean(found):.1f}, p50 {sorted(found)[n // 2]},"
          f" p90 {sorted(found)[int(n * 0.9)]}")
    print(f"partner not among the candidates at all (blocking): "
          f"{sum(r is None for r in ranks) / n:.2%}")
    for cap in CAPS:
        within = sum(r is not None and r < cap for r in ranks) / n
        scored = statistics.fmean(min(f, cap) for f in found)
        print(f"cap {cap:>3}: partner within the cap for {within:.2%}; "
              f"mean candidates scored {scored:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", required=True, help="the index (an `identity import` of --csv)")
    parser.add_argument("--csv", type=Path, required=True, help="the population it was made from")
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=300_000, help="CSV rows read for the sample")
    parser.add_argument("--seed", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
