"""What the shipped model's household u and middle-initial comparison cost when scoring.

    PYTHONPATH=. python benchmarks/matching_score_variants.py [--rounds 21]

Scores 300 records of ``matching.synth.generate(2000, 0.3, seed=3, hard=True)`` each against
its next 5 and 50 records (warm encoding cache, as the service scores candidates already in
the index) under four variants of ``MatchModel.default()``: as shipped, without its
conditional u, without the ``middle_initial`` comparison, without both (the model's shape
before issue 15's sixth pass). Rounds alternate the variants in a rotating order; prints the
median microseconds per ``score`` call of each and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from matching.model import MatchModel
from matching.normalize import normalize_record
from matching.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    records = generate(2000, 0.3, seed=3, hard=True)
    norm = [normalize_record(r.demographics, r.identifiers) for r in records]
    shipped = MatchModel.default()
    no_middle = [c for c in shipped.comparisons if c.name != "middle_initial"]
    variants = {
        "shipped": shipped,
        "without conditional u": MatchModel(shipped.comparisons, shipped.prior),
        "without middle_initial": MatchModel(no_middle, shipped.prior,
                                             conditional_u=shipped.conditional_u),
        "without both": MatchModel(no_middle, shipped.prior),
    }
    names = list(variants)
    out: dict[str, dict[str, float]] = {}
    for n in (5, 50):
        times: dict[str, list[float]] = {name: [] for name in names}
        for rnd in range(args.rounds):
            for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                model = variants[name]
                started = time.perf_counter()
                for i in range(300):
                    model.score(norm[i], norm[i + 1:i + 1 + n],
                                keys=[(j, 1) for j in range(i + 1, i + 1 + n)])
                times[name].append((time.perf_counter() - started) / 300 * 1e6)
        out[f"{n} candidates"] = {k: round(statistics.median(v), 1) for k, v in times.items()}
    print(json.dumps({"us_per_score_call": out, "load_average": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
