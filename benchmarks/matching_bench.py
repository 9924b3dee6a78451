"""Speed and accuracy of the matching library.

    python benchmarks/matching_bench.py --persons 100000 --duplicate-rate 0.25 --seed 1

Measures
- batch scoring throughput (pairs/s) on the population's blocked pairs and on random pairs,
  with 1 and 2 worker threads;
- one record against 200 candidates: median and p95 latency, with candidates pre-encoded
  (the service's cached path) and from normalised dicts (encoding included);
- accuracy on the generator's hard setting with the shipped model (trained on another seed):
  pairwise/cluster precision, recall, F1, auto-link precision, twin and Jr/Sr links, review
  share and pair completeness of blocking.
Prints one JSON document; ``--out`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from matching.blocking import blocking_keys, candidate_pairs
from matching.evaluate import evaluate_records
from matching.model import MatchModel
from matching.normalize import normalize_record
from matching.synth import generate


def throughput(model: MatchModel, encoded, pairs: np.ndarray, workers: int) -> float:
    model.score_pairs(encoded, pairs[:1000, 0], encoded, pairs[:1000, 1])  # warm up
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        model.score_pairs(encoded, pairs[:, 0], encoded, pairs[:, 1], workers=workers)
        best = max(best, len(pairs) / (time.perf_counter() - started))
    return best


def latency(model: MatchModel, normalized: list[dict], rng: np.random.Generator,
            encoded_candidates: bool, rounds: int = 300) -> dict[str, float]:
    timings = []
    n = len(normalized)
    blocks = [rng.choice(n, 200, replace=False) for _ in range(20)]
    cached = [model.encode([normalized[i] for i in block]) for block in blocks]
    queries = [model.encode([normalized[int(i)]]) for i in rng.integers(0, n, 20)]
    for k in range(rounds):
        block = blocks[k % 20]
        if encoded_candidates:
            candidates = cached[k % 20]
            query = queries[k % 20]
        else:
            candidates = [normalized[i] for i in block]
            query = normalized[int(block[0])]
        started = time.perf_counter()
        model.score(query, candidates)
        timings.append(time.perf_counter() - started)
    ms = np.array(timings) * 1000
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--duplicate-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out")
    parser.add_argument("--speed-only", action="store_true", help="skip the accuracy run")
    args = parser.parse_args()

    model = MatchModel.default()
    report: dict = {"command": "python benchmarks/matching_bench.py "
                    f"--persons {args.persons} --duplicate-rate {args.duplicate_rate} "
                    f"--seed {args.seed}",
                    "machine": {"python": platform.python_version(),
                                "processor": platform.processor() or platform.machine()}}
    started = time.perf_counter()
    records = generate(args.persons, args.duplicate_rate, args.seed, hard=True)
    report["generate_seconds"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    normalized = [normalize_record(r.demographics, r.identifiers) for r in records]
    report["normalize_us_per_record"] = round(
        (time.perf_counter() - started) / len(records) * 1e6, 1)
    started = time.perf_counter()
    encoded = model.encode(normalized)
    report["encode_us_per_record"] = round((time.perf_counter() - started) / len(records) * 1e6, 1)
    blocked = candidate_pairs([blocking_keys(r) for r in normalized])
    rng = np.random.default_rng(args.seed)
    random_pairs = rng.integers(0, len(records), (1_000_000, 2))
    report["batch_pairs_per_second"] = {
        "blocked_pairs": int(len(blocked)),
        "blocked_1_worker": round(throughput(model, encoded, blocked, 1)),
        "blocked_2_workers": round(throughput(model, encoded, blocked, 2)),
        "random_1_worker": round(throughput(model, encoded, random_pairs, 1)),
        "random_2_workers": round(throughput(model, encoded, random_pairs, 2)),
    }
    report["one_vs_200"] = {
        "pre_encoded": latency(model, normalized, rng, True),
        "from_normalized_dicts": latency(model, normalized, rng, False, rounds=100),
    }
    if not args.speed_only:
        started = time.perf_counter()
        figures = evaluate_records(records, model, workers=2)
        figures["evaluate_seconds"] = round(time.perf_counter() - started, 1)
        report["accuracy_hard"] = figures
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
