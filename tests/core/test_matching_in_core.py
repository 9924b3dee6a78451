"""The matching engine inside the MPI core: decisions per person, re-scoring on update,
ranking for queries."""

from __future__ import annotations

import pytest

from identity.model import Address, Decision, Demographics, LinkKind, MatchGrade, Name, Phone
from identity.mpi import Envelope, Link, Mpi, Register

from .helpers import person, ref

A = Envelope(source="ADT_A", actor="hl7:ADT_A")
B = Envelope(source="ADT_B", actor="hl7:ADT_B")
HOME = (Address(lines=("12 Elm Street",), city="Springfield", postal_code="62701"),)


async def test_twins_at_one_address_are_never_linked(mpi: Mpi) -> None:
    john = await mpi.handle(
        Register(subject=person("HOSPA", "A1", given="John", addresses=HOME)), A
    )
    james = await mpi.handle(
        Register(subject=person("HOSPB", "B1", given="James", addresses=HOME)), B
    )
    assert james.decision == Decision.NEW_PERSON
    assert james.person.id != john.person.id


async def test_junior_and_senior_are_never_linked(mpi: Mpi) -> None:
    from identity.model import RecordInput

    def named(domain: str, value: str, suffix: str, born: str) -> RecordInput:
        return RecordInput(
            identifier=ref(domain, value),
            demographics=Demographics(
                names=(Name(family="Smith", given=("John",), suffix=suffix),),
                birth_date=born, sex="M", addresses=HOME,
            ),
        )

    senior = await mpi.handle(Register(subject=named("HOSPA", "A1", "Sr", "1950-03-12")), A)
    junior = await mpi.handle(Register(subject=named("HOSPB", "B1", "Jr", "1980-03-12")), B)
    assert junior.decision != Decision.LINKED
    assert junior.person.id != senior.person.id


async def test_typo_and_nickname_still_link_across_domains(mpi: Mpi) -> None:
    phone = (Phone(value="555-123-4567"),)
    first = await mpi.handle(
        Register(subject=person(
            "HOSPA", "A1", family="Johnson", given="Robert", addresses=HOME, phones=phone,
        )),
        A,
    )
    second = await mpi.handle(
        Register(subject=person(
            "HOSPB", "B1", family="Jonhson", given="Bob", addresses=HOME, phones=phone,
        )),
        B,
    )
    assert second.decision == Decision.LINKED
    assert second.person.id == first.person.id
    assert second.record.link is not None and second.record.link.score is not None
    assert second.record.link.score >= 0.999


async def test_update_that_breaks_the_link_opens_a_review_and_keeps_the_link(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1", addresses=HOME)), A)
    second = await mpi.handle(Register(subject=person("HOSPB", "B1", addresses=HOME)), B)
    assert second.person.id == first.person.id
    changed = await mpi.handle(
        Register(subject=person(
            "HOSPB", "B1", family="Okafor", given="Chidi", birth_date="1991-07-30", sex="F",
        )),
        B,
    )
    assert changed.decision == Decision.REVIEW
    assert changed.person.id == first.person.id  # never a silent unlink
    (item,) = changed.review_items
    assert item.person_id == first.person.id
    assert item.reason.startswith("after an update the link no longer holds")


async def test_update_of_a_lone_record_that_now_matches_is_relinked(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "A1", addresses=HOME)), A)
    lone = await mpi.handle(
        Register(subject=person(
            "HOSPB", "B1", family="Okafor", given="Chidi", birth_date="1991-07-30",
        )),
        B,
    )
    assert lone.person.id != first.person.id
    fixed = await mpi.handle(Register(subject=person("HOSPB", "B1", addresses=HOME)), B)
    assert fixed.decision == Decision.LINKED
    assert fixed.person.id == first.person.id
    assert (await mpi.get_person(lone.person.id)).merged_into == first.person.id


async def test_manual_links_are_not_changed_by_updates(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    await mpi.handle(Link(a=person("HOSPA", "A1"), b=person("LAB", "L1", given="Zed")), A)
    changed = await mpi.handle(
        Register(subject=person(
            "LAB", "L1", family="Okafor", given="Chidi", birth_date="1991-07-30",
        )),
        A,
    )
    assert changed.decision == Decision.UNCHANGED_LINK
    assert changed.review_items == ()
    assert changed.record.link is not None and changed.record.link.kind == LinkKind.MANUAL


async def test_match_ranks_candidates_with_grades_and_explanations(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1", addresses=HOME)), A)
    await mpi.handle(
        Register(subject=person("HOSPA", "A2", given="Jane", sex="F", birth_date="1985-01-01")), A
    )
    await mpi.handle(Register(subject=person("HOSPB", "B9", family="Okafor", given="Chidi")), B)
    query = Demographics(
        names=(Name(family="Smith", given=("John",)),), birth_date="1980-03-12", sex="M",
        addresses=HOME,
    )
    ranked = await mpi.match(query, limit=5)
    assert ranked[0].record.identifier == "A1"
    assert ranked[0].grade == MatchGrade.CERTAIN
    assert ranked[0].probability >= 0.999
    assert [r.weight for r in ranked] == sorted((r.weight for r in ranked), reverse=True)
    assert "B9" not in {r.record.identifier for r in ranked[:1]}
    assert {c["comparison"] for c in ranked[0].explanation["comparisons"]} >= {"birth_date"}


async def test_match_with_a_family_name_only_still_finds_candidates(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    ranked = await mpi.match(Demographics(names=(Name(family="Smyth"),)))
    assert [r.record.identifier for r in ranked] == ["A1"]
    assert ranked[0].grade in (MatchGrade.POSSIBLE, MatchGrade.PROBABLE)


async def test_match_writes_nothing(mpi: Mpi) -> None:
    await mpi.handle(Register(subject=person("HOSPA", "A1")), A)
    before = await mpi.history()
    await mpi.match(Demographics(names=(Name(family="Smith", given=("John",)),)))
    assert await mpi.history() == before


def test_prior_is_scaled_down_for_a_large_index_and_never_up() -> None:
    from identity.config import MatchingSettings
    from identity.mpi.matcher import Matcher
    from matching.model import MatchModel

    model = MatchModel.default()
    trained_on = int(model.training["records"])
    matcher = Matcher(model, MatchingSettings())
    matcher.calibrate(trained_on * 10)
    assert matcher.model.prior == pytest.approx(model.prior / 10)
    matcher.calibrate(100)
    assert matcher.model.prior == model.prior


async def test_candidates_seen_before_are_not_encoded_again(mpi: Mpi) -> None:
    cache = mpi.matcher.model.encodings
    await mpi.handle(Register(subject=person("HOSPA", "A1", addresses=HOME)), A)
    await mpi.handle(Register(subject=person("HOSPB", "B1", addresses=HOME)), B)
    misses, hits = cache.misses, cache.hits
    await mpi.handle(
        Register(subject=person("LAB", "L1", addresses=HOME)), Envelope(actor="lis", source="LIS")
    )
    assert cache.hits == hits + 1  # A1 came round again: its encoding is reused
    assert cache.misses == misses + 1  # B1 is a candidate for the first time


def test_leaving_out_persons_below_review_changes_no_decision() -> None:
    """Matcher.decide skips the decision rules for persons that can only be NO_MATCH
    (verdicts(matches_only=True)); on a hard synthetic population (twins, Jr/Sr pairs,
    typos) its links and reviews are those of the full verdicts."""
    from identity.batch import record_input
    from identity.config import MatchingSettings
    from identity.mpi.matcher import Matcher, Party
    from matching.decision import Decision as Verdict
    from matching.model import MatchModel
    from matching.synth import generate

    matcher = Matcher(MatchModel.default(), MatchingSettings())
    records = [record_input(r) for r in generate(300, 0.5, seed=11, hard=True)]
    parties = [
        Party(i + 1, r.identifier.authority.namespace or "X", (i + 1) // 2,
              matcher.prepare(r.demographics.as_matching_input(), []).normalized)
        for i, r in enumerate(records)
    ]
    checked = decided = 0
    for subject in parties[:120]:
        persons: dict[int, list[Party]] = {}
        for other in parties:
            if other is not subject:
                persons.setdefault(other.person_id or 0, []).append(other)
        full = [v for v in matcher.verdicts(subject, persons, set())
                if v.decision != Verdict.NO_MATCH]
        fast = [v for v in matcher.verdicts(subject, persons, set(), matches_only=True)
                if v.decision != Verdict.NO_MATCH]
        assert [(v.person_id, v.decision, v.probability, v.reason) for v in fast] == [
            (v.person_id, v.decision, v.probability, v.reason) for v in full]
        checked += 1
        decided += bool(fast)
    assert checked == 120 and decided > 10  # the population does produce links and reviews
