"""Labelled CSVs in any layout (matching/columns.py) and what `evaluate` reports on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matching.columns import ColumnMapping, ColumnMappingError, iso_date, read_records
from matching.evaluate import evaluate_csv, true_pair_bands
from matching.synth import SSN_DOMAIN, generate, write_csv

# Febrl-like: ", " separators, compact dates, the truth inside the record id. Persons:
# 1 (two identical records, one date ISO and one YYYYMMDD, the SSN written two ways),
# 2 (two records that share nothing: never blocked), 3 and 4 (different people with identical
# demographics: a false link), 5 (alone), 6 (a given name replaced: the twin rule refuses it).
TINY = """\
rec_id, first_name, surname, dob, street_no, street, town, zip, ssn
rec-1-org, john, smith, 1980-03-12, 12, main street, springfield, 62701, 123-45-6780
rec-1-dup-0, john, smith, 19800312, 12, main street, springfield, 62701, 123456780
rec-2-org, maria, garcia, 19751101, 7, oak avenue, portland, 97201,
rec-2-dup-0, linh, nguyen, 19900505, 400, elm road, austin, 73301,
rec-3-org, mary, brown, 1962-07-04, 9, pine lane, dayton, 45402,
rec-4-org, mary, brown, 19620704, 9, pine lane, dayton, 45402,
rec-5-org, peter, okafor, 20010101, 3, birch court, fresno, 93650,
rec-6-org, jonathan, whitfield, 19550817, 22, cedar drive, tulsa, 74103,
rec-6-dup-0, robert, whitfield, 19550817, 22, cedar drive, tulsa, 74103,
"""
TINY_COLUMNS = (
    "record_id=rec_id,given=first_name,family=surname,birth_date=dob,"
    "address_line1=street_no+street,city=town,postal_code=zip,ssn=ssn"
)
TRUTH = {"truth_column": "rec_id", "truth_pattern": r"rec-(\d+)"}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text(TINY)
    return path


def test_mapping_parses_fields_joined_columns_and_presets() -> None:
    mapping = ColumnMapping.parse(" given = first_name , address_line1=no+street,person_id=id")
    assert dict(mapping.columns) == {
        "given": ("first_name",), "address_line1": ("no", "street"), "person_id": ("id",),
    }
    assert mapping.optional == frozenset()
    default = ColumnMapping.parse(None)
    assert default.columns["given"] == ("given",) and default.columns["ssn"] == ("ssn",)
    assert "person_id" not in default.optional and "given" in default.optional
    overridden = ColumnMapping.parse("synth,given=first_name")
    assert overridden.columns["given"] == ("first_name",)
    assert overridden.columns["family"] == ("family",)
    assert "given" not in overridden.optional and "family" in overridden.optional


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("givn=first_name", "unknown field 'givn' in 'givn=first_name'; the fields are: "
                            "record_id, person_id,"),
        ("given=first_name,given=x", "field 'given' is mapped twice"),
        ("given=", "no column name for field 'given' in 'given='"),
        ("address_line1=no+", "no column name for field 'address_line1'"),
        ("given=a,,family=b", "item 2 of the column mapping is empty"),
        ("febrl", "'febrl' is neither FIELD=COLUMN nor a preset (synth)"),
    ],
)
def test_mapping_parse_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ColumnMappingError) as caught:
        ColumnMapping.parse(text)
    assert str(caught.value).startswith(message)


def test_columns_the_file_lacks_are_named(tiny: Path) -> None:
    with pytest.raises(ColumnMappingError) as caught:
        read_records(tiny, "given=first,family=surname", **TRUTH)
    assert str(caught.value).startswith(f"column(s) 'first' (for given) not in {tiny}; "
                                        "its columns are: rec_id, first_name, surname, dob,")
    with pytest.raises(ColumnMappingError, match="^no truth column"):
        read_records(tiny, "given=first_name")
    # the default layout on a file of another layout: nothing of ours is there
    other = tiny.with_name("other.csv")
    other.write_text("id,first_name,dob\nrec-1-org,ann,19800312\n")
    with pytest.raises(ColumnMappingError) as caught:
        read_records(other, truth_column="id")
    assert str(caught.value) == (
        f"none of the mapped columns is in {other} (map them with --columns "
        "FIELD=COLUMN,...); its columns are: id, first_name, dob"
    )


def test_rows_without_truth_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,name\nrec-1-org,ann\nrec-x,bob\n")
    with pytest.raises(ColumnMappingError) as caught:
        read_records(path, "given=name", truth_column="id", truth_pattern=r"rec-(\d+)")
    assert str(caught.value) == (
        f"{path}, line 3: the truth (id) does not match the truth pattern 'rec-(\\\\d+)'"
    )
    path.write_text("id,name\n,ann\n")
    with pytest.raises(ColumnMappingError, match=r"line 2: the truth \(id\) is empty$"):
        read_records(path, "given=name,person_id=id")


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("19800312", "1980-03-12"),
        (" 19800312 ", "1980-03-12"),
        ("1980-03-12", "1980-03-12"),
        ("1980-3-2", "1980-03-02"),
        ("", ""),
        (None, ""),
        ("12/03/1980", "12/03/1980"),  # not ours to guess: normalisation judges it
        ("1980", "1980"),
    ],
)
def test_iso_date(text: str | None, iso: str) -> None:
    assert iso_date(text) == iso


def test_records_read_through_a_mapping(tiny: Path) -> None:
    records = read_records(tiny, TINY_COLUMNS, **TRUTH)
    assert [r.person_id for r in records] == ["1", "1", "2", "2", "3", "4", "5", "6", "6"]
    first, second = records[0], records[1]
    assert first.record_id == "rec-1-org"
    assert first.demographics["birth_date"] == second.demographics["birth_date"] == "1980-03-12"
    assert first.demographics["names"] == [{"family": "smith", "given": ["john"], "use": "L"}]
    assert first.demographics["addresses"] == [{
        "lines": ["12 main street"], "city": "springfield", "state": "",
        "postal_code": "62701", "country": "",
    }]
    assert first.identifiers == [{"domain": SSN_DOMAIN, "value": "123-45-6780", "type": "SS"}]
    assert first.source_domain == "" and "sex" not in first.demographics
    assert records[2].identifiers == []  # no MRN, no SSN: no identifiers at all


def test_the_default_layout_reads_what_the_generator_writes(tmp_path: Path) -> None:
    population = generate(200, 0.3, seed=5)
    path = tmp_path / "population.csv"
    write_csv(population, path)
    back = read_records(path)
    assert len(back) == len(population)
    for read, written in zip(back, population, strict=True):
        assert (read.record_id, read.person_id, read.source_domain) == (
            written.record_id, written.person_id, written.source_domain)
        assert [n["family"] for n in read.demographics["names"]] == [
            n["family"] for n in written.demographics["names"]]
        # the layout's middle column splits a compound middle name (JOSE MANUEL) on spaces
        assert " ".join(read.demographics["names"][0]["given"]) == " ".join(
            written.demographics["names"][0]["given"])
        assert read.demographics.get("birth_date") == written.demographics.get("birth_date")
        assert read.relations == written.relations
        assert read.identifiers == [
            {"domain": i["domain"], "value": i["value"], "type": i["type"]}
            for i in written.identifiers
        ]


def test_true_pair_bands_by_hand() -> None:
    probs = np.array([0.1, 0.5, 0.79, 0.8, 0.95, 0.99, 0.9989, 0.999, 1.0])
    bands = true_pair_bands(probs, 10)
    assert {name: band["pairs"] for name, band in bands.items()} == {
        "<0.5": 1, "0.5-0.8": 2, "0.8-0.95": 1, "0.95-0.99": 1, "0.99-0.999": 2,
        ">=0.999": 2, "not_blocked": 1,
    }
    assert bands["0.5-0.8"]["share"] == 0.2
    assert true_pair_bands(np.zeros(0), 0)["not_blocked"] == {"pairs": 0, "share": 0.0}


def test_a_tiny_labelled_file_end_to_end(tiny: Path) -> None:
    figures = evaluate_csv(tiny, columns=TINY_COLUMNS, workers=1, **TRUTH)
    assert figures["records"] == 9 and figures["persons"] == 6
    # true pairs: (1, 1'), (2, 2'), (6, 6') = 3. Blocked: 1 and 6 (2 shares nothing).
    assert figures["true_pairs_total"] == 3
    assert figures["true_pairs_blocked"] == 2
    assert figures["pair_completeness"] == pytest.approx(2 / 3)
    # predicted pairs: (1, 1') true; (3, 4), two MARY BROWNs of one birth date and home in
    # a file of 9 records (their names weigh little: two of nine records carry each), wait
    # for a steward (the same home is weighed as a family shares it); (6, 6') is refused as
    # a probable twin
    assert figures["predicted_pairs"] == 1
    assert figures["pairwise_precision"] == pytest.approx(1.0)
    assert figures["pairwise_recall"] == pytest.approx(1 / 3)
    assert figures["pairwise_f1"] == pytest.approx(2 * (1 / 3) / (1 + 1 / 3))
    assert figures["link_pairs"] == 1
    assert figures["auto_link_precision"] == pytest.approx(1.0)
    assert figures["review_pairs"] == 1
    assert figures["review_items_per_1000_records"] == pytest.approx(1000 / 9)
    bands = {name: band["pairs"] for name, band in figures["true_pair_bands"].items()}
    assert bands["not_blocked"] == 1 and bands[">=0.999"] >= 1
    assert bands["<0.5"] == 0  # the twin rule was consulted: the pair reached review
    assert sum(bands.values()) == 3
    twin = figures["hard_rules"]["probable_twin"]
    assert (twin["pairs"], twin["true_pairs"]) == (1, 1)
    assert twin["true_pair_share"] == pytest.approx(1 / 3)
    assert set(figures["hard_rules"]) == {"probable_twin"}
    assert figures["hard_rules_fired"] == {"probable_twin": 1}


def test_a_row_with_a_middle_name_and_no_given_name_keeps_it_a_middle_name(
    tmp_path: Path,
) -> None:
    """A census row BETTY L LING and a benefits row with the given name blank and the middle
    name LOUISE, same birth date: the middle name promoted to the given name made the two
    read as twins BETTY and LOUISE (refused); kept a middle name, they agree on it."""
    from matching.decision import decide
    from matching.normalize import normalize_record

    path = tmp_path / "two.csv"
    path.write_text("record_id,person_id,family,given,middle,birth_date,sex\n"
                    "C1,P1,Ling,Betty,L,19610228,F\n"
                    "S1,P1,Ling,,Louise,19610228,F\n", encoding="utf-8")
    census, benefits = read_records(path)
    assert benefits.demographics["names"][0]["given"] == ["", "Louise"]
    a, b = (normalize_record(r.demographics) for r in (census, benefits))
    assert "probable_twin" not in decide(0.9999, record=a, candidate=b).hard_rules
