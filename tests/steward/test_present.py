"""What the steward sees of an item (identity.steward.present): rows judged by the comparison
that scored them, and the waterfall from the prior to the total."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from identity.model import Address, Demographics, Domain, Name, Phone, SourceRecord
from identity.steward.present import (
    CLOSE,
    DIFFERS,
    MISSING,
    SAME,
    align,
    chart,
    probability_of,
    waterfall,
    weight_of,
)

NOW = datetime(2026, 12, 3, tzinfo=UTC)
HOSPA = Domain(id=1, namespace="HOSPA", oid=None, sources=(), identifies_person=False,
               is_enterprise=False)


def record(identifier: str, **demographics: Any) -> SourceRecord:
    return SourceRecord(id=int(identifier), domain=HOSPA, identifier=identifier,
                        status="active", demographics=Demographics(**demographics),
                        version=1, created_at=NOW, updated_at=NOW)


def comparison(name: str, level: int, label: str, contribution: float) -> dict[str, Any]:
    return {"comparison": name, "level": level, "label": label, "weight": contribution,
            "tf_adjustment": 0.0, "contribution": contribution}


A = record("1", names=(Name(family="Mohr", given=("Alice",)),), birth_date="1958-01-30",
           sex="F", addresses=(Address(lines=("12 Elm St",), postal_code="02134"),),
           phones=(Phone(value="617-555-0101"),))
B = record("2", names=(Name(family="MOHR", given=("Alicia",)),), birth_date="1958-01-03",
           sex="M", addresses=(Address(lines=("12 Elm Street",), postal_code="02134"),))
EXPLANATION = {
    "prior_weight": -16.6,
    "comparisons": [
        comparison("family_name", 1, "exact", 14.1),
        comparison("given_name", 3, "jaro-winkler >= 0.94", 5.2),
        comparison("birth_date", 3, "day/month transposed", 4.2),
        comparison("sex", 2, "different", -4.4),
        comparison("contact", 3, "same house and street", 8.3),
    ],
    "total_weight": 10.8,
    "probability": 0.99976,
}


def test_rows_are_judged_by_the_level_of_their_comparison_not_by_their_text() -> None:
    rows = {f.name: f for f in align(A, B, EXPLANATION)}
    assert rows["family"].state == SAME  # MOHR and Mohr: the comparison's exact level
    assert rows["given"].state == CLOSE and rows["given"].level == "jaro-winkler >= 0.94"
    assert rows["birth date"].state == CLOSE and rows["birth date"].contribution == 4.2
    assert rows["sex"].state == DIFFERS
    assert rows["address"].state == CLOSE  # "same house and street" speaks of the address
    assert rows["phone"].state == MISSING and rows["phone"].level is None
    assert "suffix" not in rows  # empty on both sides: no row


def test_without_an_explanation_rows_are_judged_by_their_text() -> None:
    rows = {f.name: f for f in align(A, B, None)}
    assert rows["family"].state == SAME  # case and spaces do not make a difference
    assert rows["birth date"].state == DIFFERS
    assert rows["phone"].state == MISSING
    assert all(f.level is None for f in rows.values())


def test_the_contact_level_judges_only_the_row_it_speaks_of() -> None:
    c = B.model_copy(update={"demographics": A.demographics.model_copy(
        update={"phones": (Phone(value="+1 617 555 0101"),),
                "addresses": (Address(lines=("1 Oak Rd",)),)})})
    explanation = {**EXPLANATION, "comparisons": [comparison("contact", 4, "same phone", 13.8)]}
    rows = {f.name: f for f in align(A, c, explanation)}
    assert rows["phone"].state == SAME and rows["phone"].level == "same phone"
    assert rows["address"].state == DIFFERS and rows["address"].level is None


def test_the_waterfall_runs_from_the_prior_through_each_comparison_to_the_total() -> None:
    steps = waterfall(EXPLANATION)
    assert [s.label for s in steps] == ["prior", "family_name", "given_name", "birth_date",
                                        "sex", "contact", "total"]
    assert [s.kind for s in steps] == ["prior", "for", "for", "for", "against", "for", "total"]
    for before, after in zip(steps[1:-1], steps[2:-1], strict=False):
        assert after.start == pytest.approx(before.end)  # each bar starts where the last ended
    assert steps[-2].end == pytest.approx(-16.6 + 14.1 + 5.2 + 4.2 - 4.4 + 8.3)
    assert steps[-1].value == pytest.approx(10.8)
    assert waterfall(None) == [] and waterfall({"comparisons": []}) == []


def test_the_chart_places_bars_and_thresholds_on_one_axis() -> None:
    layout = chart(waterfall(EXPLANATION), 0.99976, (("review", 0.5), ("auto-link", 0.999)))
    assert layout is not None
    review, auto = layout.thresholds
    assert review["weight"] == pytest.approx(0.0) and auto["weight"] == pytest.approx(9.96, 0.01)
    assert review["x"] < auto["x"]
    prior, *_, sex, contact, total = layout.rows
    assert prior["x"] + prior["w"] == pytest.approx(review["x"], abs=0.2)  # from 0 down to -16.6
    assert sex["kind"] == "against"
    assert sex["end"] == pytest.approx(sex["x"])  # a bar against the pair ends on its left
    assert total["x"] == pytest.approx(review["x"], abs=0.2)  # the total bar starts at 0
    assert all(layout.label_width <= r["x"] <= layout.width for r in layout.rows)


def test_probability_and_weight_are_inverse() -> None:
    for p in (0.01, 0.5, 0.999):
        assert probability_of(weight_of(p)) == pytest.approx(p)
    assert probability_of(100) == 1.0 and probability_of(-100) == 0.0


def test_e_mail_addresses_are_not_shown_as_phones() -> None:
    c = record("3", names=(Name(family="Mohr"),),
               phones=(Phone(value="617-555-0101"),
                       Phone(value="ann@example.org", email="ann@example.org",
                             equipment="Internet", use="NET", formatted=False)))
    fields = {f.name: f for f in align(c, c, None)}
    assert fields["phone"].left == "617-555-0101"
    assert fields["e-mail"].left == "ann@example.org"
