"""How much of a labelled set's recall a matcher on names and birth date can reach at all.

    python benchmarks/outside_sets.py --work /tmp/os      # writes the labelled CSVs
    python benchmarks/evidence_ceiling.py --csv /tmp/os/febrl3-names-dob.csv [--json FILE]

For every true pair (two records of one person) it notes which of the three fields agree: the
first given name, the family name (each: the same after normalisation, Jaro-Winkler >=
NAME_AGREES, or the two names swapped between the fields) and the birth date (the same, one
digit or one transposition of two digits off, or day and month swapped). It then joins each
true person's records by the pairs of a pattern set, as the service joins persons (a record
joins a person through any one of its records), and reports the pairwise recall and F1 (at
precision 1) that set allows:

- ``all_three``: pairs agreeing on all three fields;
- ``birth_date_and_a_name``: also pairs agreeing on the birth date and one of the names (the
  patterns a twin, or a namesake born the same day, share with one person whose name was
  replaced);
- ``any_two``: also pairs agreeing on both names only (the birth date absent or far off: the
  pattern of a namesake parent and child, or of two people with a common name).

No real population links the last set safely without other evidence; the figure says how far
a set's target lies beyond the evidence it carries. Nothing here uses the matching model.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rapidfuzz.distance import OSA, JaroWinkler

from matching.columns import read_records
from matching.normalize import normalize_record

#: Two names agree at this Jaro-Winkler similarity or above (a typo, not another name).
NAME_AGREES = 0.88

#: Pattern sets, each with the field patterns (given, family, birth date) it joins by.
PATTERN_SETS: dict[str, frozenset[tuple[bool, bool, bool]]] = {
    "all_three": frozenset({(True, True, True)}),
    "birth_date_and_a_name": frozenset({(True, True, True), (True, False, True),
                                        (False, True, True)}),
    "any_two": frozenset({(True, True, True), (True, False, True), (False, True, True),
                          (True, True, False)}),
}


def names_agree(x: str, y: str) -> bool:
    return bool(x and y and (x == y or JaroWinkler.similarity(x, y) >= NAME_AGREES))


def dates_agree(x: str | None, y: str | None) -> bool:
    """Two ISO dates as sent (a date no calendar has included): equal, one digit or one
    transposition apart, or day and month swapped."""
    if not x or not y:
        return False
    a, b = x.replace("-", ""), y.replace("-", "")
    if len(a) != 8 or len(b) != 8:
        return a == b
    return OSA.distance(a, b) <= 1 or (a[:4] == b[:4] and a[4:6] == b[6:8] and a[6:8] == b[4:6])


def pattern(a: dict[str, Any], b: dict[str, Any], date_a: str | None, date_b: str | None
            ) -> tuple[bool, bool, bool]:
    """(given agrees, family agrees, birth date agrees) of two normalised records."""
    ga, gb = a.get("first_given") or "", b.get("first_given") or ""
    fa, fb = a.get("family") or "", b.get("family") or ""
    swapped = names_agree(ga, fb) and names_agree(fa, gb)
    return (names_agree(ga, gb) or swapped, names_agree(fa, fb) or swapped,
            dates_agree(date_a, date_b))


def _pairs_joined(members: list[int], edges: list[tuple[int, int]]) -> int:
    parent = {m: m for m in members}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        parent[find(a)] = find(b)
    sizes = Counter(find(m) for m in members)
    return sum(n * (n - 1) // 2 for n in sizes.values())


def ceiling(csv: Path) -> dict[str, Any]:
    records = read_records(csv)
    normalised = [normalize_record(r.demographics) for r in records]
    dates = [r.demographics.get("birth_date") for r in records]
    persons: dict[str, list[int]] = defaultdict(list)
    for row, record in enumerate(records):
        persons[record.person_id].append(row)
    patterns: Counter[tuple[bool, bool, bool]] = Counter()
    joined = dict.fromkeys(PATTERN_SETS, 0)
    for members in persons.values():
        edges: dict[str, list[tuple[int, int]]] = {name: [] for name in PATTERN_SETS}
        for a, b in itertools.combinations(members, 2):
            found = pattern(normalised[a], normalised[b], dates[a], dates[b])
            patterns[found] += 1
            for name, accepted in PATTERN_SETS.items():
                if found in accepted:
                    edges[name].append((a, b))
        for name in PATTERN_SETS:
            joined[name] += _pairs_joined(members, edges[name])
    total = sum(patterns.values())
    names = ("given", "family", "birth_date")
    return {
        "csv": str(csv),
        "records": len(records),
        "true_pairs": total,
        "patterns": {
            " + ".join(n for n, ok in zip(names, p, strict=True) if ok) or "none": count
            for p, count in patterns.most_common()
        },
        "ceiling": {
            name: {"recall": round(n / total, 4) if total else None,
                   "f1_at_precision_1": round(2 * n / (total + n), 4) if total else None}
            for name, n in joined.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=None, metavar="FILE")
    args = parser.parse_args()
    result = ceiling(args.csv)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
