"""Where the true duplicates of a record rank among its candidates, against an index imported
from a generated population (its CSV holds the truth): the evidence for the candidate cap and
margin (matching.blocking.select_candidates).

For ``--sample`` records of persons with several records, the record's blocking keys are looked
up as a registration does (the SQL function register_candidates, the record itself left out,
the configured max_block, no cap, no margin) and the rank of its first true partner in the
candidate ranking (shared keys, then first appearance) is noted. Prints, for caps of 10 to 200
and for other selection policies under ``--cap``, the share of records whose partner is kept
and the mean number of candidates scored. With ``--decisions``, the engine's decision for each
record (link, review, new person) with every candidate scored is compared with its decision
under each cap and margin, and the persons no longer sent to review are checked against the
truth.

    python benchmarks/candidate_recall.py --url postgresql://postgres@127.0.0.1:5432/bench1m \\
        --csv /tmp/p1m/population.csv [--sample 1000] [--rows 300000] [--decisions]
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
from collections import defaultdict
from pathlib import Path

from identity.batch import record_input
from identity.config import load_settings
from identity.loop import run as run_loop
from identity.mpi import Mpi
from identity.mpi.matcher import Party
from identity.store.db import Database
from matching.blocking import select_candidates
from matching.synth import iter_csv

CONFIG = Path(__file__).with_name("bench.toml")
CAPS = (10, 25, 50, 100, 200)


async def blocks_of(conn, keys: list[str], own: int, block: int) -> dict[str, list[int]]:
    """The record's blocks as a registration reads them (record id order, one id beyond
    ``block``), the record itself left out: the input of matching.blocking.select_candidates."""
    rows = await conn.fetch(
        "SELECT k.key, ARRAY(SELECT b.source_record_id FROM blocking_key b WHERE b.key = k.key"
        " AND b.source_record_id <> $2 ORDER BY 1 LIMIT $3) AS ids"
        " FROM unnest($1::text[]) AS k(key)",
        keys, own, block + 1,
    )
    return {r["key"]: list(r["ids"]) for r in rows}


def policies() -> dict[str, dict[str, int | None]]:
    """Selections to compare: select_candidates' floor, margin and rare-block arguments."""
    out: dict[str, dict[str, int | None]] = {}
    for d in (4, 6):
        out[f"margin {d}"] = {"margin": d}
    for f, d, r in ((2, None, None), (2, 6, None), (3, 6, None), (2, 6, 5), (2, 6, 10)):
        name = f"floor {f}" + (f", margin {d}" if d is not None else "")
        out[name + (f", rare block {r}" if r is not None else "")] = {
            "min_keys": f, "margin": d, "rare_block": r}
    return out


async def compare_decisions(
    mpi: Mpi,
    conn,
    truth: dict[tuple[str, str], str],
    decisions: list[tuple[Party, list[int], list[list], str]],
    blocks: list[dict[str, list[int]]],
    block: int,
    cap: int,
) -> None:
    """The engine's decision (person linked, persons sent to review) for each sampled record
    with every candidate scored, against the decision with each policy's selection. Persons
    no longer sent to review are checked against the truth: the same true person (a split the
    steward would have been shown) or another one (a review item saved)."""

    async def true_persons(record_ids: list[int]) -> set[str]:
        rows = await conn.fetch(
            "SELECT d.namespace, r.identifier FROM source_record r JOIN domain d"
            " ON d.id = r.domain_id WHERE r.id = ANY($1::bigint[])", record_ids)
        return {truth.get((r["namespace"], r["identifier"]), "?") for r in rows}

    def decide(subject: Party, selected: list[int], parties: list[list]) -> tuple:
        wanted = set(selected)
        persons_of = {p[2] for p in parties if p[0] in wanted}
        persons: dict[int, list[Party]] = {}
        for rid, domain_id, person_id, normalized, version in parties:
            if person_id in persons_of:
                persons.setdefault(person_id, []).append(Party(
                    rid, mpi.matcher.namespaces.get(domain_id, str(domain_id)), person_id,
                    normalized, version))
        outcome = mpi.matcher.decide(subject, persons, set())
        return outcome.person_id, frozenset(v.person_id for v in outcome.reviews)

    reference = [decide(s, ranking, parties) for s, ranking, parties, _ in decisions]
    print(f"decisions with every candidate scored: "
          f"{sum(r[0] is not None for r in reference)} linked, "
          f"{sum(r[0] is None and bool(r[1]) for r in reference)} to review, "
          f"{sum(r[0] is None and not r[1] for r in reference)} new person")
    plans: dict[str, dict[str, int | None]] = {
        f"cap {c}": {"max_candidates": c} for c in (10, 25, 50)
    }
    plans.update({name: {"max_candidates": cap, **kw} for name, kw in policies().items()})
    for name, kw in plans.items():
        same = lost = riskier = wrong = other = unsure = split = saved = 0
        for (subject, _, parties, person), found, ref in zip(
            decisions, blocks, reference, strict=True
        ):
            selected = select_candidates(found, max_block=block, **kw)  # type: ignore[arg-type]
            got = decide(subject, [int(i) for i in selected], parties)
            for dropped in ref[1] - got[1]:
                records = [p[0] for p in parties if p[2] == dropped]
                if person in await true_persons(records):
                    split += 1
                else:
                    saved += 1
            if got == ref:
                same += 1
            elif ref[0] is not None and got[0] is None:
                lost += 1  # a link became a review or a new person
            elif got[0] is not None and got[0] != ref[0]:
                # linked where the full decision did not (or elsewhere): to the right person?
                records = [p[0] for p in parties if p[2] == got[0]]
                if person in await true_persons(records):
                    riskier += 1
                else:
                    wrong += 1
            elif ref[0] is not None:
                other += 1  # the same link, fewer or other persons sent to review beside it
            else:
                unsure += 1  # no link either way, but the persons sent to review differ
        print(f"{name}: same decision {same}, link lost {lost}, link gained or moved "
              f"{riskier} (to the true person) {wrong} (to another: a false link), "
              f"same link with other reviews {other}, "
              f"no link with other reviews {unsure}; persons no longer sent to review: "
              f"{split} the same true person, {saved} another")


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
        block = args.max_block or settings.matching.max_block
        ranks: list[int | None] = []
        found: list[int] = []
        shares: list[int | None] = []
        blocks: list[dict[str, list[int]]] = []
        partner_ranks: list[dict[str, int | None]] = []
        decisions: list[tuple[Party, list[int], list[list], str]] = []
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
                prepared = mpi.matcher.prepare(inp.demographics.as_matching_input(), identifiers)
                row = await conn.fetchrow(
                    "SELECT prefetched, parties FROM register_candidates($1::text[], $2, $3, $4,"
                    " $5, NULL, NULL, NULL)", keys, own, block + 1, block, 1_000_000,
                )
                ranking = list(row["prefetched"])
                if args.decisions:
                    subject = Party(0, domain.namespace, None, prepared.normalized)
                    parties = [p for p in row["parties"] if p[0] != own]
                    decisions.append((subject, ranking, parties, record.person_id))
                found.append(len(ranking))
                ranks.append(next((i for i, rid in enumerate(ranking) if rid in partners), None))
                found_blocks = await blocks_of(conn, keys, own, block)
                blocks.append(found_blocks)
                shared = [k for k, ids in found_blocks.items()
                          if not k.startswith("id:") and len(ids) <= block
                          and partners & set(ids)]
                by_id = any(k.startswith("id:") and partners & set(ids)
                            for k, ids in found_blocks.items())
                shares.append(None if by_id else len(shared))
                kept_by: dict[str, int | None] = {}
                for name, kw in policies().items():
                    selected = select_candidates(
                        found_blocks, max_block=block, max_candidates=args.cap,
                        **kw,  # type: ignore[arg-type]
                    )
                    kept_by[name] = len(selected) if partners & set(selected) else None
                    kept_by[name + " n"] = len(selected)
                partner_ranks.append(kept_by)
        if args.decisions:
            truth = {(r.source_domain, r.mrn): r.person_id for r in iter_csv(args.csv)}
            async with db.connection() as conn:
                await compare_decisions(mpi, conn, truth, decisions, blocks, block, args.cap)
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
    print("demographic keys the partner shares at most (no identifier shared): "
          + ", ".join(f"{k}: {shares.count(k)}"
                      for k in sorted({k for k in shares if k is not None})))
    for name in policies():
        within = sum(k[name] is not None for k in partner_ranks) / n
        scored = statistics.fmean(k[name + " n"] for k in partner_ranks)  # type: ignore[misc]
        print(f"cap {args.cap}, {name}: partner kept for {within:.2%}; "
              f"mean candidates scored {scored:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", required=True, help="the index (an `identity import` of --csv)")
    parser.add_argument("--csv", type=Path, required=True, help="the population it was made from")
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=300_000, help="CSV rows read for the sample")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--max-block", type=int, default=0,
                        help="blocks larger than this are skipped (default: the configured one)")
    parser.add_argument("--decisions", action="store_true",
                        help="also compare the engine's decisions under each selection")
    parser.add_argument("--cap", type=int, default=50, help="the cap the selections work under")
    run_loop(run(parser.parse_args()))


if __name__ == "__main__":
    main()
