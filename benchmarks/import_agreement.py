"""Do the two paths of `identity import` decide alike? One generated population loaded into two
empty databases, by the set path (``--bulk``) and record by record (``--no-bulk
--concurrency 1``, the feed's own registrations in file order); then the persons of each
against the generator's truth and against each other, and the review items of each.

    python benchmarks/import_agreement.py [--persons 3000] [--duplicates 0.25] [--seed 5] \\
        [--database-url postgresql://postgres@127.0.0.1:5432/] [--head N]

With ``--head N`` the first N records are loaded record by record into both databases first,
so that the comparison is of loads into a populated index. Prints JSON: for each path its
decisions, review items and pairwise precision/recall against the truth; ``agreement``: the
set path's same-person pairs scored against the record-by-record path's (precision: of the
set path's pairs, the share the other path made too; recall: the converse), and the records
whose person differs (as the set of records it holds).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from matching.evaluate import pairwise_figures  # noqa: E402

CONFIG = HERE / "bench.toml"


def identity(args: list[str], url: str | None = None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if url:
        env["IDENTITY_DATABASE__URL"] = url
    done = subprocess.run([sys.executable, "-m", "identity", "--config", str(CONFIG), *args],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout) if "--json" in args else {}


async def persons(url: str) -> tuple[dict[tuple[str, str], int], int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT d.namespace, r.identifier, l.person_id FROM source_record r"
            " JOIN domain d ON d.id = r.domain_id JOIN link l ON l.source_record_id = r.id")
        reviews = await conn.fetchval("SELECT count(*) FROM review_item WHERE status = 'open'")
    finally:
        await conn.close()
    return {(r["namespace"], r["identifier"]): r["person_id"] for r in rows}, int(reviews)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=3000)
    parser.add_argument("--duplicates", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--head", type=int, default=0)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/")
    args = parser.parse_args()
    base = args.database_url.rstrip("/")
    names = {"bulk": f"agree_bulk_{os.getpid()}", "feed": f"agree_feed_{os.getpid()}"}
    pg = ["-h", base.split("@")[-1].split(":")[0], "-U", "postgres"]
    result: dict[str, Any] = {"persons": args.persons, "duplicates": args.duplicates,
                              "seed": args.seed, "head": args.head}
    with tempfile.TemporaryDirectory() as work:
        identity(["generate", "--persons", str(args.persons), "--duplicates",
                  str(args.duplicates), "--seed", str(args.seed), "--domains", "synthetic",
                  "--formats", "csv", "--out", work])
        path = Path(work) / "population.csv"
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        head, tail = Path(work) / "head.csv", Path(work) / "tail.csv"
        for target, part in ((head, rows[: args.head]), (tail, rows[args.head :])):
            with open(target, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(part)
        try:
            for path_name, name in names.items():
                subprocess.run(["createdb", *pg, name], check=True)
                url = f"{base}/{name}"
                if args.head:
                    identity(["import", str(head), "--no-bulk", "--concurrency", "1",
                              "--quiet", "--json"], url)
                flags = (["--bulk", "--chunk", "1000"] if path_name == "bulk"
                         else ["--no-bulk", "--concurrency", "1"])
                summary = identity(["import", str(tail), *flags, "--quiet", "--json"], url)
                result[path_name] = {k: summary[k] for k in
                                     ("read", "new_person", "linked", "review", "rate")}
            keys = [(r["source_domain"], r["mrn"]) for r in rows]
            truth = [r["person_id"] for r in rows]
            found: dict[str, list[int]] = {}
            for path_name, name in names.items():
                by_key, reviews = asyncio.run(persons(f"{base}/{name}"))
                found[path_name] = [by_key[k] for k in keys]
                figures = pairwise_figures(truth, found[path_name])
                result[path_name].update(
                    open_review_items=reviews,
                    pairwise_precision=round(figures["pairwise_precision"], 5),
                    pairwise_recall=round(figures["pairwise_recall"], 5))
            agreement = pairwise_figures(found["feed"], found["bulk"])
            members: dict[str, dict[int, frozenset[int]]] = {}
            for path_name, labels in found.items():
                sets: dict[int, set[int]] = {}
                for row, label in enumerate(labels):
                    sets.setdefault(label, set()).add(row)
                members[path_name] = {label: frozenset(s) for label, s in sets.items()}
            differing = sum(
                1 for row in range(len(keys))
                if members["bulk"][found["bulk"][row]] != members["feed"][found["feed"][row]]
            )
            result["agreement"] = {
                "pairwise_precision": round(agreement["pairwise_precision"], 5),
                "pairwise_recall": round(agreement["pairwise_recall"], 5),
                "records_whose_person_differs": differing,
                "records": len(keys),
            }
        finally:
            for name in names.values():
                subprocess.run(["dropdb", "--if-exists", *pg, name], check=False)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
