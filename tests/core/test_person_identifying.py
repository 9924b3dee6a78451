"""Issue 18 item 8: a domain with ``identifies_person = true`` does what the README promises,
one identifier, one person. Two records holding the same identifier in such a domain are
linked whatever their match probability, unless a hard rule contradicts it; then the pair is a
review item whose reason says why. Core commands against a real PostgreSQL, and the hard rule
as a pure function."""

from __future__ import annotations

import pytest

from identity.config import Settings
from identity.errors import ConfigError
from identity.model import Decision
from identity.mpi import Envelope, Mpi, Register
from matching.decision import Decision as PairDecision
from matching.decision import decide

from .helpers import person, ref

A = Envelope(source="ADT_A", actor="hl7:ADT_A|HOSP")
B = Envelope(source="ADT_B", actor="hl7:ADT_B|HOSP")
SSN = ref("NATIONAL", "123456789")


async def test_shared_national_id_links_a_married_name_and_a_typo_in_the_birth_date(
    mpi: Mpi,
) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1", others=(SSN,))), A)
    second = await mpi.handle(
        Register(subject=person(
            "HOSPB", "B1", family="Jones", birth_date="1980-03-21", others=(SSN,)
        )), B
    )
    assert second.decision == Decision.LINKED
    assert second.person.id == first.person.id
    link = second.record.link  # the probability alone would not have linked them
    assert link is not None and link.score is not None and link.score < 0.999


async def test_shared_national_id_links_when_added_by_an_update(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1", others=(SSN,))), A)
    jones = {"family": "Jones", "birth_date": "1980-03-21"}
    alone = await mpi.handle(Register(subject=person("HOSPB", "B1", **jones)), B)
    assert alone.person.id != first.person.id
    updated = await mpi.handle(
        Register(subject=person("HOSPB", "B1", **jones, others=(SSN,))), B
    )
    assert updated.decision == Decision.LINKED and updated.person.id == first.person.id


async def test_shared_national_id_with_no_name_in_common_is_a_review_saying_why(
    mpi: Mpi,
) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1", others=(SSN,))), A)
    second = await mpi.handle(Register(subject=person(
        "HOSPB", "B1", family="Okafor", given="Chidi", birth_date="1971-01-01", others=(SSN,),
    )), B)
    assert second.decision == Decision.REVIEW and second.person.id != first.person.id
    (item,) = second.review_items
    assert item.person_id == first.person.id
    assert item.reason.startswith("shares a person-identifying identifier (NATIONAL)")
    assert "neither family nor given name agrees" in item.reason
    assert "identifier_names_disagree" in item.hard_rules


async def test_shared_national_id_with_sex_and_birth_date_disagreeing_is_a_review(
    mpi: Mpi,
) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1", others=(SSN,))), A)
    second = await mpi.handle(Register(subject=person(
        "HOSPB", "B1", sex="F", birth_date="1982-07-30", others=(SSN,),
    )), B)
    assert second.decision == Decision.REVIEW and second.person.id != first.person.id
    (item,) = second.review_items
    assert "sex and birth date both disagree" in item.reason
    assert "sex_and_birth_date_disagree" in item.hard_rules


def test_hard_rule_shared_identifier_but_no_name_agrees() -> None:
    ids_a = [{"domain": "NATIONAL", "value": "1", "person_level": True}]
    ids_b = [{"domain": "NATIONAL", "value": "1", "person_level": True}]
    smith = {"names": [{"family": "SMITH", "given": ["JOHN"]}], "birth_date": "1980-03-12"}
    okafor = {"names": [{"family": "OKAFOR", "given": ["CHIDI"]}], "birth_date": "1980-03-12"}
    jones = {"names": [{"family": "JONES", "given": ["JOHN"]}], "birth_date": "1971-01-01"}
    common = {"record_identifiers": ids_a, "person_identifying_domains": ("NATIONAL",)}
    result = decide(0.9999, **common, candidate_identifiers=ids_b, record=smith,
                    candidate=okafor)
    assert result.decision == PairDecision.REVIEW
    assert result.hard_rules == ("identifier_names_disagree",)
    assert not decide(0.9999, **common, candidate_identifiers=ids_b, record=smith,
                      candidate=jones).hard_rules
    # a record without a family name: its given name and birth date stand in for it (a
    # family member's SSN on a form that left the family name out)
    allie = {"names": [{"given": ["ALLIE"]}], "birth_date": "2011-11-21"}
    tiffany = {"names": [{"family": "LOPEZ", "given": ["TIFFANY"]}]}
    result = decide(0.9999, **common, candidate_identifiers=ids_b, record=allie,
                    candidate=tiffany)
    assert result.hard_rules == ("identifier_names_disagree",)
    assert "a family name is missing" in result.reasons[-1]
    # ... and when either agrees, one person
    assert not decide(0.9999, **common, candidate_identifiers=ids_b, record=allie,
                      candidate={**tiffany, "birth_date": "2011-11-21"}).hard_rules
    assert not decide(0.9999, **common, candidate_identifiers=ids_b, record=allie,
                      candidate={"names": [{"family": "LOPEZ", "given": ["ALLIE"]}]}
                      ).hard_rules
    # without the shared identifier the rule does not apply
    other = [{"domain": "NATIONAL", "value": "2", "person_level": True}]
    assert "identifier_names_disagree" not in decide(
        0.1, **common, candidate_identifiers=other, record=smith, candidate=okafor
    ).hard_rules


def test_pid19_domain_must_name_a_configured_domain() -> None:
    domains = [{"namespace": "NHS", "oid": "2.16.840.1.113883.2.1.4.1"}]
    assert Settings(domains=domains, hl7={"pid19_domain": "NHS"}).hl7.pid19_domain == "NHS"
    assert Settings(domains=domains).hl7.pid19_domain is None
    with pytest.raises((ConfigError, ValueError), match="pid19_domain"):
        Settings(domains=domains, hl7={"pid19_domain": "NOWHERE"})
