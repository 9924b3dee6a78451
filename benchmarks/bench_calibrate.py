"""Time of a calibration's two CPU parts at scale: the estimation (matching.estimate.train) and
the dry run's re-scoring of the whole index (matching.calibrate.plan), on a generated
population of the hard setting.

    python benchmarks/bench_calibrate.py --persons 800000 [--skip-plan]

The records are normalised first (the index stores them normalised), outside the timings. The
plan is timed with every record a person of its own (the largest plan: every blocked pair is
across persons). Prints wall and CPU seconds of each part and the peak memory of the process
(which holds the generated records and their normalised forms as well).
"""

from __future__ import annotations

import argparse
import resource
import time

from matching.calibrate import IndexState, plan
from matching.estimate import train
from matching.model import term_frequencies_from
from matching.normalize import normalize_record
from matching.synth import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--persons", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--skip-plan", action="store_true")
    args = parser.parse_args()
    records = generate(args.persons, 0.25, args.seed, hard=True)
    normalized = [normalize_record(r.demographics, r.identifiers) for r in records]
    del records
    cpu, wall = time.process_time(), time.perf_counter()
    model = train(normalized, seed=1)
    print(f"records={len(normalized)} train: {time.perf_counter() - wall:.1f} s wall, "
          f"{time.process_time() - cpu:.1f} s CPU")
    if not args.skip_plan:
        state = IndexState(normalized, list(range(len(normalized))), [True] * len(normalized))
        scoring = model.with_term_frequencies(term_frequencies_from(normalized))
        cpu, wall = time.process_time(), time.perf_counter()
        result = plan(state, scoring)
        print(f"plan: {time.perf_counter() - wall:.1f} s wall, "
              f"{time.process_time() - cpu:.1f} s CPU, {len(result.links)} links")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
