"""The ``newborn_placeholder`` hard rule (issue 18 item 6): a record with no name or a
placeholder name (BABY GIRL ...) is never linked on demographics, since twins share them;
a shared person-identifying identifier still links (one identifier, one person)."""

from __future__ import annotations

from typing import Any

import pytest

from matching.decision import Decision, decide
from matching.normalize import normalize_record

SSN = "2.16.840.1.113883.4.1"


def baby(family: str | None = "SMITH", given: tuple[str, ...] = ("BABY", "GIRL"),
         identifiers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    demo: dict[str, Any] = {
        "birth_date": "2026-12-01", "sex": "F",
        "addresses": [{"lines": ["7 Cradle Ln"], "postal_code": "62701"}],
        "mothers_identifier": {"value": "M1", "authority": {"namespace": "HOSPB"}},
    }
    if family or given:
        demo["names"] = [{"family": family, "given": list(given)}]
    return normalize_record(demo, identifiers or [])


def ssn(value: str) -> list[dict[str, Any]]:
    return [{"domain": SSN, "value": value, "type": "SS"}]


@pytest.mark.parametrize("record", [
    baby(),  # SMITH^BABY GIRL
    baby(given=("BABY", "BOY")),
    baby(given=("babygirl",)),
    baby(given=("Baby", "Girl", "A")),  # twin A
    baby(given=("BB", "2")),
    baby(given=("Infant",)),
    baby(given=("NEWBORN",)),
    baby(family="UNKNOWN", given=()),
    baby(family="BABY", given=("GIRL",)),
    baby(family=None, given=()),  # no name at all
], ids=lambda r: f"{r.get('family')}^{' '.join(r.get('given_tokens') or [])}")
def test_a_placeholder_or_no_name_never_links_on_demographics(record: dict[str, Any]) -> None:
    """The same placeholder on both (twins registered alike, or one baby twice)."""
    result = decide(0.99999, record=record, candidate=dict(record), auto_link=0.999,
                    review=0.5)
    assert result.decision is Decision.REVIEW
    assert result.hard_rules == ("newborn_placeholder",)
    assert any("newborn not yet named" in reason for reason in result.reasons)


def test_a_placeholder_against_a_named_record_of_another_family_fires_too() -> None:
    named = normalize_record({"names": [{"family": "JONES", "given": ["EMMA"]}],
                              "birth_date": "2026-12-01", "sex": "F"})
    result = decide(0.99999, record=named, candidate=baby(given=("INFANT",)))
    assert result.decision is Decision.REVIEW and "newborn_placeholder" in result.hard_rules


def test_real_names_are_not_placeholders() -> None:
    for given in (("EMMA",), ("BABY",), ("BABY", "JOHN"), ("BOBBY",)):
        result = decide(0.99999, record=baby(given=given), candidate=baby(given=given))
        assert "newborn_placeholder" not in result.hard_rules, given


def test_a_shared_person_identifying_identifier_still_links() -> None:
    result = decide(0.99999, record=baby(), candidate=baby(),
                    record_identifiers=ssn("111-99-0001"),
                    candidate_identifiers=ssn("111-99-0001"),
                    person_identifying_domains={SSN})
    assert result.decision is Decision.LINK and "newborn_placeholder" not in result.hard_rules


def test_the_rule_does_not_fire_below_review() -> None:
    """No name is no evidence of two people: a placeholder newborn stays a PDQ candidate; in
    review the rule says why a steward sees the pair."""
    review = decide(0.9, record=baby(), candidate=baby())
    assert review.decision is Decision.REVIEW and review.hard_rules == ("newborn_placeholder",)
    low = decide(0.1, record=baby(), candidate=baby())
    assert low.decision is Decision.NO_MATCH and not low.hard_rules


def test_the_placeholder_list_is_a_parameter() -> None:
    record = baby(given=("BEBE",))
    assert decide(0.99999, record=record, candidate=record).decision is Decision.LINK
    result = decide(0.99999, record=record, candidate=record, placeholder_names={"BEBE"})
    assert result.decision is Decision.REVIEW and "newborn_placeholder" in result.hard_rules


def test_a_placeholder_against_the_real_name_born_the_same_day_goes_to_a_steward() -> None:
    """BABY GIRL SMITH registered at birth, EMMA SMITH a week later: the same baby named, or
    her twin sister. Not refused as a probable twin (a steward knows which), not linked."""
    named = baby(given=("Emma",))
    for placeholder in (baby(), baby(given=("Baby", "Girl", "A")), baby(family=None, given=())):
        result = decide(0.99999, record=named, candidate=placeholder)
        assert result.decision is Decision.REVIEW, result
        assert "probable_twin" not in result.hard_rules
    assert decide(0.99999, record=named, candidate=baby(given=("Olivia",))).hard_rules == (
        "probable_twin",)  # two real names on one day in one family: twins, as before
