"""The service path of the matching library: one record against its N candidates.

    PYTHONPATH=. python benchmarks/matching_score_small.py --persons 20000 --seed 1

For N in (1, 5, 20, 200) candidates, given as normalised dicts (as read from the database):
median and p95 latency of ``MatchModel.score``
- ``dicts``: no cache (every candidate encoded on every call);
- ``dicts_cache_warm``: with ``keys=`` (record id, version) and every candidate encoded before
  (the steady state of the service: candidates are records already in the index);
- ``dicts_cache_cold``: with ``keys=`` never seen before (first sight of every candidate);
- ``pre_encoded``: candidates already encoded by the caller (``model.encode``).
Candidates are the query's blocked candidates (records sharing a blocking key), filled up with
random records. Also the batch ``score_pairs`` throughput on the blocked pairs and on 1M random
pairs with 1 and 2 worker threads. Prints one JSON document with the load average.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import time
from collections import defaultdict

import numpy as np

from matching.blocking import blocking_keys, candidate_pairs
from matching.model import MatchModel
from matching.normalize import normalize_record
from matching.synth import generate

SIZES = (1, 5, 20, 200)


def throughput(model: MatchModel, encoded, pairs: np.ndarray, workers: int) -> float:
    model.score_pairs(encoded, pairs[:1000, 0], encoded, pairs[:1000, 1])  # warm up
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        model.score_pairs(encoded, pairs[:, 0], encoded, pairs[:, 1], workers=workers)
        best = max(best, len(pairs) / (time.perf_counter() - started))
    return best


def candidate_blocks(normalized: list[dict], size: int, count: int,
                     rng: np.random.Generator) -> list[tuple[int, list[int]]]:
    """(query row, candidate rows): blocked candidates first, random records after."""
    index: dict[str, list[int]] = defaultdict(list)
    keys = [blocking_keys(r) for r in normalized]
    for row, record_keys in enumerate(keys):
        for key in record_keys:
            index[key].append(row)
    out = []
    for query in rng.integers(0, len(normalized), count):
        query = int(query)
        seen: dict[int, None] = {}
        for key in keys[query]:
            for row in index[key]:
                if row != query and len(seen) < size:
                    seen[row] = None
        while len(seen) < size:
            row = int(rng.integers(0, len(normalized)))
            if row != query:
                seen[row] = None
        out.append((query, list(seen)))
    return out


def summary(timings: list[float]) -> dict[str, float]:
    ms = np.array(timings) * 1000
    return {"median_ms": round(float(np.median(ms)), 4),
            "p95_ms": round(float(np.percentile(ms, 95)), 4)}


def latency(model: MatchModel, normalized: list[dict], blocks, mode: str,
            rounds: int) -> dict[str, float]:
    timings = []
    version = [0]
    encoded = {}
    if mode == "pre_encoded":
        encoded = {q: model.encode([normalized[i] for i in rows]) for q, rows in blocks}
    if mode == "dicts_cache_warm":
        for query, rows in blocks:
            model.score(normalized[query], [normalized[i] for i in rows],
                        keys=[(i, 0) for i in rows])
    for k in range(rounds):
        query, rows = blocks[k % len(blocks)]
        record = normalized[query]
        if mode == "pre_encoded":
            started = time.perf_counter()
            model.score(record, encoded[query])
        elif mode == "dicts":
            candidates = [normalized[i] for i in rows]
            started = time.perf_counter()
            model.score(record, candidates)
        else:
            candidates = [normalized[i] for i in rows]
            if mode == "dicts_cache_cold":
                version[0] += 1
                keys = [(i, version[0]) for i in rows]
            else:
                keys = [(i, 0) for i in rows]
            started = time.perf_counter()
            model.score(record, candidates, keys=keys)
        timings.append(time.perf_counter() - started)
    return summary(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--duplicate-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--no-batch", action="store_true", help="skip the score_pairs figures")
    parser.add_argument("--out")
    args = parser.parse_args()

    model = MatchModel.default()
    has_keys = "keys" in inspect.signature(model.score).parameters
    records = generate(args.persons, args.duplicate_rate, args.seed, hard=True)
    normalized = [normalize_record(r.demographics, r.identifiers) for r in records]
    model = model.with_prior(model.prior)
    rng = np.random.default_rng(args.seed)
    report: dict = {
        "command": "PYTHONPATH=. python benchmarks/matching_score_small.py "
                   f"--persons {args.persons} --seed {args.seed} --rounds {args.rounds}",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "records": len(records),
        "cache_keyword": has_keys,
    }
    modes = ["pre_encoded", "dicts"]
    if has_keys:
        modes += ["dicts_cache_cold", "dicts_cache_warm"]
    one_vs_n = {}
    for size in SIZES:
        blocks = candidate_blocks(normalized, size, 50, rng)
        rounds = args.rounds if size < 200 else max(args.rounds // 4, 50)
        one_vs_n[str(size)] = {
            mode: latency(model, normalized, blocks, mode, rounds) for mode in modes
        }
    report["one_vs_n"] = one_vs_n
    if not args.no_batch:
        encoded = model.encode(normalized)
        blocked = candidate_pairs([blocking_keys(r) for r in normalized])
        random_pairs = rng.integers(0, len(records), (1_000_000, 2))
        report["batch_pairs_per_second"] = {
            "blocked_pairs": int(len(blocked)),
            "blocked_1_worker": round(throughput(model, encoded, blocked, 1)),
            "blocked_2_workers": round(throughput(model, encoded, blocked, 2)),
            "random_1_worker": round(throughput(model, encoded, random_pairs, 1)),
            "random_2_workers": round(throughput(model, encoded, random_pairs, 2)),
        }
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
