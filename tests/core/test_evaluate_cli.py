"""`identity evaluate` on a labelled CSV of another layout (--columns), with a model file and
threshold overrides. No database: evaluation runs in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from identity.cli import main
from matching.model import MatchModel

# ", " separators and compact dates, as in Febrl; the truth is the number in the record id.
# Persons 1 (two identical records), 2 (two records sharing nothing), 3 and 4 (identical
# demographics, different people), 5 (alone).
TINY = """\
rec_id, first_name, surname, dob, street_no, street, zip
rec-1-org, john, smith, 1980-03-12, 12, main street, 62701
rec-1-dup-0, john, smith, 19800312, 12, main street, 62701
rec-2-org, maria, garcia, 19751101, 7, oak avenue, 97201
rec-2-dup-0, linh, nguyen, 19900505, 400, elm road, 73301
rec-3-org, mary, brown, 1962-07-04, 9, pine lane, 45402
rec-4-org, mary, brown, 19620704, 9, pine lane, 45402
rec-5-org, peter, okafor, 20010101, 3, birch court, 93650
"""
COLUMNS = ("record_id=rec_id,given=first_name,family=surname,birth_date=dob,"
           "address_line1=street_no+street,postal_code=zip")
TRUTH = ("--truth-column", "rec_id", "--truth-pattern", r"rec-(\d+)")


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("IDENTITY_CONFIG", raising=False)  # built-in settings: shipped model
    path = tmp_path / "tiny.csv"
    path.write_text(TINY)
    return path


def _evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:
    code = main(["evaluate", *args])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else {}), err


def test_evaluate_with_a_column_mapping(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, figures, err = _evaluate(capsys, str(tiny), "--columns", COLUMNS, *TRUTH)
    assert code == 0, err
    assert (figures["records"], figures["persons"]) == (7, 5)
    # true pairs (1, 1') and (2, 2'); both pairs of identical records, (1, 1') and the false
    # (3, 4), wait for a steward: in 7 records two carry each name, so names weigh little,
    # and a shared home is weighed as a family shares it
    assert (figures["true_pairs_total"], figures["predicted_pairs"]) == (2, 0)
    assert figures["pair_completeness"] == 0.5
    assert figures["pairwise_recall"] == 0.0
    assert figures["review_pairs"] == 2
    assert figures["review_items_per_1000_records"] == pytest.approx(2000 / 7)
    assert figures["true_pair_bands"]["not_blocked"] == {"pairs": 1, "share": 0.5}
    assert figures["true_pair_bands"]["0.99-0.999"] == {"pairs": 1, "share": 0.5}
    assert figures["hard_rules"] == {}
    assert figures["thresholds"]["auto_link"] == 0.999 and figures["thresholds"]["review"] == 0.5
    assert figures["model"] == "default"
    assert figures["columns"]["given"] == "first_name"
    assert figures["columns"]["address_line1"] == "street_no+street"
    assert figures["columns"]["person_id"] == "rec_id"


def test_evaluate_with_a_model_file_and_thresholds(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the shipped model with a prior of its own (to see that the file was used); auto-link
    # at 1.0: nothing links, the two pairs of identical records go to review
    model_path = tmp_path / "model.json"
    MatchModel.default().with_prior(2e-5).save(model_path)
    code, figures, err = _evaluate(
        capsys, str(tiny), "--columns", COLUMNS, *TRUTH, "--model", str(model_path),
        "--auto-link", "1.0", "--review", "0.2",
    )
    assert code == 0, err
    assert figures["model"] == str(model_path)
    assert figures["prior"] == 2e-5
    assert figures["thresholds"]["auto_link"] == 1.0
    assert figures["thresholds"]["review"] == 0.2
    assert figures["link_pairs"] == 0 and figures["predicted_pairs"] == 0
    assert figures["pairwise_precision"] == 1.0 and figures["pairwise_recall"] == 0.0
    assert figures["review_pairs"] == 2
    assert figures["review_items_per_1000_records"] == pytest.approx(1000 * 2 / 7)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--columns", "given=first_name,sur=surname", *TRUTH),
         "identity: --columns: unknown field 'sur' in 'sur=surname'; the fields are: "),
        (("--columns", "given=first_name,family=last_name", *TRUTH),
         "identity: {file}: column(s) 'last_name' (for family) not in {file}; its columns "
         "are: rec_id, first_name, surname, dob, street_no, street, zip"),
        (("--columns", "given=first_name"),
         "identity: {file}: no truth column: map person_id=COLUMN or name it with the truth "
         "column"),
        (("--columns", COLUMNS, *TRUTH, "--review", "0.9", "--auto-link", "0.5"),
         "identity: thresholds must satisfy 0 < review <= auto-link <= 1 (review 0.9, "
         "auto-link 0.5)"),
    ],
)
def test_evaluate_refuses_what_it_cannot_use(
    tiny: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, _, err = _evaluate(capsys, str(tiny), *args)
    assert code == 1
    assert message.format(file=tiny) in err
