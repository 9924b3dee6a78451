"""The steward's work in the core: the queue (filters, sorts, counts), an item's view, versions,
merges of two persons, unlinks, undo of feed merges (unmerge), a person's golden view, search,
the decisions log and the dashboard."""

from __future__ import annotations

import pytest

from identity.errors import InvalidInput, InvalidState, NotFound, StaleVersion
from identity.model import (
    NO_HARD_RULE,
    AuthorityRef,
    Decision,
    LinkKind,
    PersonStatus,
    QueueCountsWanted,
    QueueFilter,
    QueueSort,
    RecordStatus,
    ReviewStatus,
    StewardKind,
    StewardSearch,
)
from identity.mpi import (
    DecideReview,
    Envelope,
    Merge,
    MergePersons,
    Mpi,
    Register,
    StewardDecision,
    Undo,
    UnlinkRecord,
)

from .helpers import person, ref

A = Envelope(source="ADT_A", actor="hl7:ADT_A")
LIS = Envelope(source="LIS", actor="hl7:LIS")
ANN = Envelope(actor="steward:ann")
BOB = Envelope(actor="steward:bob")


async def _pair(mpi: Mpi, first: str = "A1", second: str = "A2", **demographics: object):  # type: ignore[no-untyped-def]
    one = await mpi.handle(Register(subject=person("HOSPA", first, **demographics)), A)
    two = await mpi.handle(Register(subject=person("HOSPA", second, **demographics)), A)
    assert two.decision == Decision.REVIEW
    return one, two, two.review_items[0]


async def _active_records(mpi: Mpi, person_id: int) -> list[int]:
    return sorted(r.id for r in (await mpi.get_person(person_id)).records)


# --- the queue ---------------------------------------------------------------------------------


async def test_queue_lists_open_items_with_both_records_and_counts(mpi: Mpi) -> None:
    one, two, item = await _pair(mpi)
    page = await mpi.review_queue()
    assert page.total == 1 and [i.id for i in page.items] == [item.id]
    row = page.items[0]
    assert row.version == 1 and row.status == ReviewStatus.OPEN
    assert row.hard_rules == ("same_source_duplicate",)
    assert (row.record.id, row.record.identifier, row.record.domain) == (two.record.id, "A2",
                                                                        "HOSPA")
    assert row.other is not None and row.other.id == one.record.id
    assert (row.record.family, row.record.given, row.record.birth_date) == (
        "Smith", "John", "1980-03-12")
    assert page.counts is not None and page.counts.by_status is None
    assert page.counts.open == 1
    assert page.counts.open_by_rule == {"same_source_duplicate": 1}
    assert page.counts.open_by_domain == {"HOSPA": 1}
    assert page.counts.oldest_open == row.created_at


async def test_queue_filters_by_rule_domain_probability_and_status(mpi: Mpi) -> None:
    _, _, first = await _pair(mpi, "A1", "A2")
    _, _, second = await _pair(mpi, "A3", "A4", family="Jones", given="Mary", sex="F",
                               birth_date="1970-01-02")
    await mpi.handle(DecideReview(item_id=first.id, decision=StewardDecision.DISMISS), ANN)

    async def ids(**filters: object) -> list[int]:
        return [i.id for i in (await mpi.review_queue(QueueFilter(**filters))).items]

    assert await ids() == [second.id]
    assert await ids(status=None) == [first.id, second.id]
    assert await ids(status=ReviewStatus.DISMISSED) == [first.id]
    assert await ids(rule="same_source_duplicate") == [second.id]
    assert await ids(rule=NO_HARD_RULE) == []
    assert await ids(domain="HOSPA") == [second.id]
    assert await ids(domain="1.2.3.4.5.1") == [second.id]  # by OID
    assert await ids(domain="LAB") == []
    assert await ids(min_probability=0.0, max_probability=1.0) == [second.id]
    page = await mpi.review_queue(QueueFilter(status=None), counts=QueueCountsWanted.ALL)
    assert page.counts is not None and page.total == 2
    assert page.counts.by_status == {"open": 1, "linked": 0, "rejected": 0, "dismissed": 1}
    assert page.counts.open == 1
    bare = await mpi.review_queue(counts=QueueCountsWanted.NONE)
    assert bare.counts is None and bare.total == 1
    with pytest.raises(InvalidInput):
        await mpi.review_queue(QueueFilter(min_probability=0.9, max_probability=0.1))


async def test_queue_sorts_and_pages(mpi: Mpi) -> None:
    items = []
    people = [("Okafor", "Chidi", "1961-02-03"), ("Lindqvist", "Astrid", "1975-11-30"),
              ("Moreau", "Lucien", "1988-07-14")]
    for n, (family, given, born) in enumerate(people):
        _, _, item = await _pair(mpi, f"S{n}a", f"S{n}b", family=family, given=given,
                                 birth_date=born)
        items.append(item.id)
    oldest = await mpi.review_queue(sort=QueueSort.OLDEST, limit=2)
    assert [i.id for i in oldest.items] == items[:2] and oldest.total == 3
    second = await mpi.review_queue(sort=QueueSort.OLDEST, limit=2, offset=2)
    assert [i.id for i in second.items] == items[2:]
    newest = await mpi.review_queue(sort=QueueSort.NEWEST)
    assert [i.id for i in newest.items] == items[::-1]
    by_probability = await mpi.review_queue(sort=QueueSort.PROBABILITY_DESC)
    scores = [i.score for i in by_probability.items]
    assert scores == sorted(scores, reverse=True)


async def test_impact_counts_other_open_items_sharing_a_record_or_person(mpi: Mpi) -> None:
    # A3 is a third copy: its items name A1's and A2's persons, sharing records with A2's item
    await _pair(mpi, "A1", "A2")
    third = await mpi.handle(Register(subject=person("HOSPA", "A3")), A)
    assert len(third.review_items) == 2
    _, _, lone = await _pair(mpi, "B1", "B2", family="Jones", given="Mary", sex="F",
                             birth_date="1970-01-02")
    page = await mpi.review_queue(sort=QueueSort.IMPACT)
    impact = {i.id: i.impact for i in page.items}
    assert impact[lone.id] == 0
    assert page.items[-1].id == lone.id
    assert all(impact[i.id] >= 1 for i in page.items if i.id != lone.id)
    # the impact shown on other sorts is the same figure
    oldest = await mpi.review_queue(sort=QueueSort.OLDEST)
    assert {i.id: i.impact for i in oldest.items} == impact


# --- an item's view ----------------------------------------------------------------------------


async def test_review_detail_has_both_records_explanation_candidates_and_history(
    mpi: Mpi,
) -> None:
    one, two, item = await _pair(mpi)
    detail = await mpi.review_detail(item.id)
    assert detail.item.id == item.id and detail.item.version == 1
    assert detail.record.record.identifier == "A2" and detail.other is not None
    assert detail.other.record.identifier == "A1"
    assert detail.record.normalized is not None and detail.record.normalized["family"] == "SMITH"
    assert detail.explanation is not None and not detail.explanation_computed
    assert {c["comparison"] for c in detail.explanation["comparisons"]} >= {"family_name"}
    assert detail.person is not None and detail.person.id == one.person.id
    assert [c.person_id for c in detail.candidates] == [one.person.id]
    assert detail.candidates[0].review_item_id == item.id
    events = {(e.event, e.record_id) for e in detail.history}
    assert ("record_created", one.record.id) in events
    assert ("review_opened", two.record.id) in events
    with pytest.raises(NotFound):
        await mpi.review_detail(999_999)


async def test_an_item_stored_without_explanation_is_explained_now(mpi: Mpi) -> None:
    _, _, item = await _pair(mpi)
    async with mpi.db.connection() as conn:
        await conn.execute("UPDATE review_item SET explanation = NULL WHERE id = $1", item.id)
    detail = await mpi.review_detail(item.id)
    assert detail.explanation_computed and detail.explanation is not None
    assert detail.explanation["decision"]["hard_rules"] == ["same_source_duplicate"]


# --- versions ----------------------------------------------------------------------------------


async def test_a_decision_on_a_stale_version_is_refused(mpi: Mpi) -> None:
    _, _, item = await _pair(mpi)
    with pytest.raises(StaleVersion) as raised:
        await mpi.handle(
            DecideReview(item_id=item.id, decision=StewardDecision.DISMISS, version=7), ANN
        )
    assert (raised.value.expected, raised.value.current) == (7, 1)
    await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.DISMISS, version=1), ANN
    )
    # Bob decided on the version he read, before Ann's decision: refused, nothing changed
    with pytest.raises(StaleVersion):
        await mpi.handle(
            DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON, version=1), BOB
        )
    (closed,) = (await mpi.review_queue(QueueFilter(status=ReviewStatus.DISMISSED))).items
    assert closed.version == 2 and closed.resolved_by == "steward:ann"


async def test_same_person_settles_the_items_it_makes_moot(mpi: Mpi) -> None:
    one, two, item = await _pair(mpi)
    third = await mpi.handle(Register(subject=person("HOSPA", "A3")), A)
    to_one, to_two = sorted(third.review_items, key=lambda i: i.other_record_id or 0)
    await mpi.handle(DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON), ANN)
    # A3's two items are still open (A3 is its own person): the decision settled none of them
    assert {i.id for i in (await mpi.review_queue()).items} == {to_one.id, to_two.id}
    await mpi.handle(DecideReview(item_id=to_one.id, decision=StewardDecision.SAME_PERSON), ANN)
    # now A1, A2 and A3 are one person: A3's item against A2 is settled
    assert (await mpi.review_queue()).total == 0
    settled = await mpi.review_detail(to_two.id)
    assert settled.item.status == ReviewStatus.DISMISSED
    assert any(e.after and (e.after.get("reason") or "").startswith("settled")
               for e in settled.history)


# --- merge two persons, unlink a record --------------------------------------------------------


async def test_merge_persons_moves_records_and_undo_restores_them(mpi: Mpi) -> None:
    one = await mpi.handle(Register(subject=person("HOSPA", "M1")), A)
    lab = await mpi.handle(
        Register(subject=person("LAB", "L1", family="Other", given="Anna", sex="F",
                                birth_date="1990-01-01")), LIS)
    assert lab.person.id != one.person.id
    with pytest.raises(StaleVersion):
        await mpi.handle(MergePersons(survivor=one.person.id, merged=lab.person.id,
                                      survivor_version=one.person.version + 5), ANN)
    merged = await mpi.handle(
        MergePersons(survivor=one.person.id, merged=lab.person.id,
                     survivor_version=one.person.version, merged_version=lab.person.version,
                     reason="same patient, name changed"), ANN)
    assert await _active_records(mpi, one.person.id) == sorted([one.record.id, lab.record.id])
    gone = await mpi.get_person(lab.person.id)
    assert gone.status == PersonStatus.MERGED and gone.merged_into == one.person.id
    record = await mpi.get_record(lab.record.id)
    assert record.link is not None and record.link.kind == LinkKind.MANUAL
    assert (await mpi.get_person(one.person.id)).version > one.person.version
    with pytest.raises(InvalidState):  # merged away: not active any more
        await mpi.handle(MergePersons(survivor=one.person.id, merged=lab.person.id), ANN)

    await mpi.handle(Undo(command_id=merged.command_id), ANN)
    assert await _active_records(mpi, one.person.id) == [one.record.id]
    assert await _active_records(mpi, lab.person.id) == [lab.record.id]
    assert (await mpi.get_person(lab.person.id)).status == PersonStatus.ACTIVE
    log = await mpi.decisions()
    assert [e.kind for e in log.entries] == [StewardKind.UNDO, StewardKind.MERGE]
    assert log.entries[1].undone_by == log.entries[0].command_id
    assert log.entries[0].undoes == merged.command_id


async def test_merge_withdraws_no_match_assertions_and_undo_brings_them_back(mpi: Mpi) -> None:
    one, two, item = await _pair(mpi)
    await mpi.handle(
        DecideReview(item_id=item.id, decision=StewardDecision.DIFFERENT_PERSONS), ANN
    )
    merged = await mpi.handle(MergePersons(survivor=one.person.id, merged=two.person.id), BOB)
    async with mpi.db.connection() as conn:
        count = "SELECT count(*) FROM no_match"
        assert await conn.fetchval(count) == 0
        await mpi.handle(Undo(command_id=merged.command_id), BOB)
        assert await conn.fetchval(count) == 1


async def test_unlink_record_makes_a_person_of_its_own_that_is_not_relinked(mpi: Mpi) -> None:
    one, two, item = await _pair(mpi)
    await mpi.handle(DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON), ANN)
    joined = await mpi.get_person(one.person.id)
    with pytest.raises(StaleVersion):
        await mpi.handle(UnlinkRecord(record_id=two.record.id, version=joined.version - 1), ANN)
    unlinked = await mpi.handle(
        UnlinkRecord(record_id=two.record.id, version=joined.version, reason="wrong"), ANN
    )
    record = await mpi.get_record(two.record.id)
    assert record.person_id not in (one.person.id, None)
    assert record.link is not None and record.link.kind == LinkKind.MANUAL
    assert await _active_records(mpi, one.person.id) == [one.record.id]
    # an update of A2 with the same demographics does not link it back
    again = await mpi.handle(
        Register(subject=person("HOSPA", "A2", given="John", phones=None)), A
    )
    assert again.person.id == record.person_id
    with pytest.raises(InvalidState):  # alone in its person now
        await mpi.handle(UnlinkRecord(record_id=two.record.id), ANN)
    await mpi.handle(Undo(command_id=unlinked.command_id), ANN)
    assert await _active_records(mpi, one.person.id) == sorted([one.record.id, two.record.id])


# --- undo of a feed merge (unmerge) ------------------------------------------------------------


async def test_undo_of_a_feed_merge_restores_both_records_and_persons(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "F1")), A)
    second = await mpi.handle(
        Register(subject=person("HOSPA", "F2", family="Brown", given="Eve", sex="F",
                                birth_date="1966-06-06")), A)
    lab = await mpi.handle(Register(subject=person("LAB", "L2", family="Brown", given="Eve",
                                                   sex="F", birth_date="1966-06-06")), LIS)
    assert lab.person.id == second.person.id  # the LAB record joined F2's person
    hospa = AuthorityRef(namespace="HOSPA")
    merged = await mpi.handle(Merge.within(hospa, retired="F2", survivor="F1"), A)
    assert (await mpi.get_record(second.record.id)).status == RecordStatus.MERGED
    assert await _active_records(mpi, first.person.id) == sorted(
        [first.record.id, lab.record.id])
    assert (await mpi.get_person(second.person.id)).status == PersonStatus.MERGED

    undone = await mpi.handle(Undo(command_id=merged.command_id), ANN)
    restored = await mpi.get_record(second.record.id)
    assert restored.status == RecordStatus.ACTIVE and restored.merged_into is None
    assert restored.person_id == second.person.id
    assert await _active_records(mpi, first.person.id) == [first.record.id]
    assert await _active_records(mpi, second.person.id) == sorted(
        [second.record.id, lab.record.id])
    assert (await mpi.get_person(second.person.id)).status == PersonStatus.ACTIVE
    assert {p.id for p in undone.persons} >= {first.person.id, second.person.id}
    async with mpi.db.connection() as conn:  # the restored record can be found again
        keys = await conn.fetchval(
            "SELECT count(*) FROM blocking_key WHERE source_record_id = $1", second.record.id)
    assert keys > 0
    assert (await mpi.find_record(ref("HOSPA", "F2"))).id == second.record.id
    # the feed updates the restored record as any other
    update = await mpi.handle(Register(subject=person("HOSPA", "F2", family="Brown",
                                                      given="Eve", sex="F",
                                                      birth_date="1966-06-07")), A)
    assert update.record.id == second.record.id


async def test_undo_of_a_feed_registration_is_still_refused(mpi: Mpi) -> None:
    first = await mpi.handle(Register(subject=person("HOSPA", "R1")), A)
    with pytest.raises(InvalidState):
        await mpi.handle(Undo(command_id=first.command_id), ANN)


# --- person view, search -----------------------------------------------------------------------


async def test_person_view_has_identifiers_golden_view_and_history(mpi: Mpi) -> None:
    one, two, item = await _pair(mpi)
    await mpi.handle(DecideReview(item_id=item.id, decision=StewardDecision.SAME_PERSON), ANN)
    await mpi.handle(
        Register(subject=person("HOSPA", "A2", phones=({"value": "555 0101"},))), A
    )
    view = await mpi.person_view(one.person.id)
    values = [(r.identifier.domain, r.identifier.value) for r in view.identifiers]
    assert values[0] == (mpi.domains.enterprise.namespace, one.person.enterprise_id)
    assert ("HOSPA", "A1") in values and ("HOSPA", "A2") in values
    assert view.golden["phones"].record_id == two.record.id  # only A2 has a phone
    assert view.golden["birth_date"].value == "1980-03-12"
    assert view.golden["names"].record_id == two.record.id  # the most recently updated
    assert {e.event for e in view.history} >= {"record_created", "link_set", "review_linked"}


async def test_search_by_identifier_in_any_domain_or_one_and_by_demographics(mpi: Mpi) -> None:
    one = await mpi.handle(Register(subject=person("HOSPA", "X1")), A)
    other = await mpi.handle(Register(subject=person("LAB", "X1", family="Zed", given="Zoe",
                                                     sex="F", birth_date="1999-09-09")), LIS)
    hits = await mpi.find_persons(StewardSearch(identifier="X1"))
    assert {p.id for p in hits.persons} == {one.person.id, other.person.id}
    hits = await mpi.find_persons(StewardSearch(identifier="LAB|X1"))
    assert [p.id for p in hits.persons] == [other.person.id]
    hits = await mpi.find_persons(StewardSearch(identifier=one.person.enterprise_id))
    assert [p.id for p in hits.persons] == [one.person.id]
    hits = await mpi.find_persons(StewardSearch(family="zed"))
    assert [p.id for p in hits.persons] == [other.person.id]
    assert hits.persons[0].records[0].identifier == "X1"
    with pytest.raises(InvalidInput):
        await mpi.find_persons(StewardSearch())
    with pytest.raises(InvalidInput):
        await mpi.find_persons(StewardSearch(identifier="X1", family="Zed"))


# --- decisions log, dashboard ------------------------------------------------------------------


async def test_decisions_log_and_dashboard(mpi: Mpi) -> None:
    _, _, first = await _pair(mpi, "A1", "A2")
    _, _, second = await _pair(mpi, "B1", "B2", family="Jones", given="Mary", sex="F",
                               birth_date="1970-01-02")
    linked = await mpi.handle(
        DecideReview(item_id=first.id, decision=StewardDecision.SAME_PERSON, reason="same"), ANN
    )
    await mpi.handle(DecideReview(item_id=second.id, decision=StewardDecision.DISMISS), BOB)
    await mpi.handle(Undo(command_id=linked.command_id), ANN)
    log = await mpi.decisions()
    assert [(e.kind, e.actor) for e in log.entries] == [
        (StewardKind.UNDO, "steward:ann"), (StewardKind.DISMISS, "steward:bob"),
        (StewardKind.SAME_PERSON, "steward:ann")]
    assert log.entries[2].review_item_id == first.id and log.entries[2].reason == "same"
    assert log.entries[2].undone_by == log.entries[0].command_id
    assert (await mpi.decisions(actor="steward:bob")).total == 1
    assert (await mpi.decisions(kind=StewardKind.UNDO)).total == 1
    board = await mpi.steward_dashboard()
    assert board.open == 1  # the first item is open again after the undo
    assert board.open_by_age == {"under_1_day": 1, "1_to_7_days": 0, "over_7_days": 0}
    assert board.undone == 1
    assert sum(d.count for d in board.decisions_per_day) == 3
    assert board.links.manual == 0  # the steward's link was undone
    assert board.links.automatic_share is None or 0 <= board.links.automatic_share <= 1


async def test_impact_is_kept_as_items_open_close_and_reopen(mpi: Mpi) -> None:
    """The trigger's figure equals a count made from scratch, after every kind of change."""
    recount = """
        SELECT i.id, i.impact, (SELECT count(*) FROM review_item x
                                WHERE x.status = 'open' AND x.id <> i.id
                                  AND (x.record_id IN (i.record_id, i.other_record_id)
                                       OR x.other_record_id IN (i.record_id, i.other_record_id)
                                       OR x.person_id = i.person_id)) AS expected
        FROM review_item i WHERE i.status = 'open'"""

    async def check() -> None:
        async with mpi.db.connection() as conn:
            rows = await conn.fetch(recount)
        assert [(r["id"], r["impact"]) for r in rows] == [(r["id"], r["expected"]) for r in rows]

    _, _, first = await _pair(mpi, "A1", "A2")
    third = await mpi.handle(Register(subject=person("HOSPA", "A3")), A)
    await check()
    assert max(i.impact for i in (await mpi.review_queue()).items) >= 2
    dismissed = await mpi.handle(
        DecideReview(item_id=first.id, decision=StewardDecision.DISMISS), ANN)
    await check()
    await mpi.handle(
        DecideReview(item_id=third.review_items[0].id, decision=StewardDecision.SAME_PERSON),
        ANN)
    await check()
    await mpi.handle(Undo(command_id=dismissed.command_id), ANN)
    await check()
    closed = await mpi.review_queue(QueueFilter(status=ReviewStatus.DISMISSED))
    assert all(i.impact == 0 for i in closed.items)
