"""Train and write the shipped model, matching/data/default_model.json.

    python benchmarks/matching_train_default.py [--persons 50000] [--seed 20260101]

The model is trained without labels on a synthetic population (generator's hard setting,
25% of persons duplicated): u from random pairs, m by EM per training rule with u fixed and
the prior from those passes (see matching/estimate.py). Evaluate it on a population drawn
with another seed.
"""

from __future__ import annotations

import argparse
import time

from matching.estimate import train
from matching.model import DEFAULT_MODEL_PATH
from matching.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=50_000)
    parser.add_argument("--duplicate-rate", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--out", default=str(DEFAULT_MODEL_PATH))
    args = parser.parse_args()
    started = time.perf_counter()
    records = generate(args.persons, args.duplicate_rate, args.seed, hard=True)
    model = train([r.as_input() for r in records], seed=args.seed)
    model.training.update({
        "population": f"matching.synth.generate({args.persons}, {args.duplicate_rate}, "
                      f"{args.seed}, hard=True)",
        "script": "benchmarks/matching_train_default.py",
    })
    model.save(args.out)
    print(f"wrote {args.out} from {len(records)} records in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
