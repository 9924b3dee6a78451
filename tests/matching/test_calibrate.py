"""Calibration plans: the threshold a budget implies, and what re-scoring would change."""

import numpy as np
import pytest

from matching.calibrate import (
    IndexState,
    _one_review_per_two_persons,
    join_persons,
    persons_after,
    plan,
    propose_auto_link,
    review_for_budget,
)
from matching.model import MatchModel
from matching.normalize import normalize_record
from matching.synth import generate


def test_the_budget_picks_the_longest_run_of_pairs_within_it():
    p = np.array([0.9999] * 100 + [0.99] * 100 + [0.9] * 100)
    # 100 pairs at 0.9999 expect 1 false link per 10,000; with the 0.99s: (0.01 + 1) / 200
    # -> 50.5 per 10,000; with the 0.9s: (0.01 + 1 + 10) / 300 -> 367
    wide = propose_auto_link(p, 60.0, ceiling=0.9999)
    assert (wide.auto_link, wide.links, wide.review_pairs) == (0.99, 200, 100)
    assert wide.expected_false_per_10k == pytest.approx(50.5)
    narrow = propose_auto_link(p, 10.0, ceiling=0.9999)
    assert (narrow.auto_link, narrow.links, narrow.review_pairs) == (0.9999, 100, 200)
    # the ceiling (the configured auto_link) is never exceeded: a generous budget lowers it,
    # a tight one leaves it where it is
    assert propose_auto_link(p, 10.0).auto_link == 0.999
    assert propose_auto_link(np.array([]), 10.0).auto_link == 0.999
    with pytest.raises(ValueError):
        propose_auto_link(p, -1.0)
    # a floor: no single link below it, whatever the budget allows
    floored = propose_auto_link(p, 400.0, ceiling=0.9999, floor=0.95)
    assert (floored.auto_link, floored.links, floored.review_pairs) == (0.95, 200, 100)
    assert floored.to_dict()["floor"] == 0.95
    assert propose_auto_link(p, 400.0, ceiling=0.9999).auto_link == 0.9
    assert propose_auto_link(p, 10.0, floor=0.9999).auto_link == 0.999  # the ceiling holds


def test_a_review_budget_keeps_the_most_probable_items_and_no_more():
    queue = [0.97, 0.9, 0.8, 0.8, 0.7, 0.6]
    within = review_for_budget(queue, 6, floor=0.5, ceiling=0.98)
    assert within == 0.5  # the queue fits: the configured threshold stays
    t = review_for_budget(queue, 2, floor=0.5, ceiling=0.98)
    assert 0.8 < t <= 0.8001 and sum(p >= t for p in queue) == 2
    # equal probabilities go together: no threshold keeps one of two items at 0.8
    t = review_for_budget(queue, 3, floor=0.5, ceiling=0.98)
    assert sum(p >= t for p in queue) == 2
    # never above the ceiling (auto-link), never below the floor, and the floor's own items
    assert review_for_budget(queue, 0, floor=0.5, ceiling=0.95) == 0.95
    assert review_for_budget([0.4, 0.45], 0, floor=0.5, ceiling=0.98) == 0.5
    assert review_for_budget(queue, -3, floor=0.5, ceiling=0.99) == 0.9701


@pytest.fixture(scope="module")
def population():
    records = generate(400, 0.4, seed=12, hard=False)
    normalized = [normalize_record(r.demographics, r.identifiers) for r in records]
    return records, normalized


def _split_duplicates(records):
    """Each person's first record keeps the person; the others are persons of their own."""
    seen, persons = set(), []
    for row, record in enumerate(records):
        persons.append(record.person_id if record.person_id not in seen else f"alone-{row}")
        seen.add(record.person_id)
    return persons


def test_plan_proposes_the_missed_links_and_only_true_ones(population):
    records, normalized = population
    persons = _split_duplicates(records)
    state = IndexState(normalized, persons, [True] * len(records),
                       [r.source_domain for r in records])
    result = plan(state, MatchModel.default())
    truth = [r.person_id for r in records]
    assert result.links, "a population with split duplicates has links to make"
    assert all(truth[a] == truth[b] for a, b, _ in result.links)
    missed = {(truth[r]) for r, p in enumerate(persons) if str(p).startswith("alone-")}
    assert result.persons_joined >= 0.8 * len(missed)
    report = result.to_dict()
    assert report["links"]["pairs"] == len(result.links)
    assert sum(report["links"]["by_band"].values()) == len(result.links)
    assert result.expected_false_links == pytest.approx(sum(1 - p for *_, p in result.links))
    assert result.links_no_longer_holding == []


def test_manual_links_are_left_to_a_steward_and_reviews_close(population):
    records, normalized = population
    persons = _split_duplicates(records)
    truth = [r.person_id for r in records]
    plain = plan(IndexState(normalized, persons, [True] * len(records),
                            [r.source_domain for r in records]), MatchModel.default())
    a, b, _ = plain.links[0]
    automatic = [True] * len(records)
    automatic[b] = False  # a steward linked this record by hand
    review = frozenset(plain.links[1][:2])
    state = IndexState(normalized, persons, automatic, [r.source_domain for r in records],
                       open_reviews={review})
    result = plan(state, MatchModel.default())
    assert (a, b) in {(x, y) for x, y, _ in result.links_for_a_steward}
    assert (a, b) not in {(x, y) for x, y, _ in result.links}
    assert tuple(sorted(review)) in {(x, y) for x, y, _ in result.reviews_closed_by_link}
    assert truth[a] == truth[b]


def test_a_record_in_the_wrong_person_no_longer_holds(population):
    records, normalized = population
    truth = [r.person_id for r in records]
    persons = list(truth)
    stranger = next(r for r in range(1, len(records)) if truth[r] != truth[0])
    persons[stranger] = truth[0]  # wrongly linked to person 0
    state = IndexState(normalized, persons, [True] * len(records),
                       [r.source_domain for r in records],
                       same_person={frozenset((0, stranger))})
    result = plan(state, MatchModel.default())
    assert stranger in {row for row, _ in result.links_no_longer_holding}
    assert result.labels["same_person"]["pairs"] == 1
    assert result.labels["same_person"]["model_decides"] == {"no_match": 1}


def test_one_review_item_per_two_persons_as_they_are_after_the_links():
    persons = ["P", "P", "Q", "R", "S", "S"]
    after = persons_after(persons, [(2, 3, 0.9999)])  # Q and R become one person
    assert after[2] == after[3] and after[0] == after[1] and after[0] != after[2]
    pairs = [(0, 2, 0.9), (1, 2, 0.95), (1, 3, 0.7),  # P against Q+R: one item, the 0.95
             (2, 3, 0.8),  # inside Q+R once linked: none
             (0, 4, 0.6), (1, 5, 0.65)]  # P against S: an open item joins them already
    opened = _one_review_per_two_persons(pairs, after, {frozenset((0, 5))})
    assert opened == [(1, 2, 0.95)]


def test_the_plan_opens_no_second_item_for_two_persons_and_closes_settled_ones(population):
    records, normalized = population
    truth = [r.person_id for r in records]
    # every person's last record stands alone: it reviews against the person's others
    last = {p: row for row, p in enumerate(truth)}
    persons = [f"alone-{row}" if last[p] == row else p for row, p in enumerate(truth)]
    sources = [r.source_domain for r in records]
    base = IndexState(normalized, persons, [True] * len(records), sources)
    # a high auto-link threshold: the alone records' pairs go to review, not to a link
    reviewed = plan(base, MatchModel.default(), auto_link=1.0)
    after = persons_after(persons, reviewed.links)
    keys = [frozenset((after[a], after[b])) for a, b, _ in reviewed.reviews_to_open]
    assert keys and len(keys) == len(set(keys)) and all(len(k) == 2 for k in keys)
    # an open item between two records the plan's links join is closed by them
    linked = plan(base, MatchModel.default())
    partner, alone = next(
        (r, y if persons[r] == persons[x] else x)
        for x, y, _ in linked.links for r in range(len(records))
        if r not in (x, y) and persons[r] in (persons[x], persons[y])
    )
    state = IndexState(normalized, persons, [True] * len(records), sources,
                       open_reviews={frozenset((partner, alone))})
    closed = plan(state, MatchModel.default())
    assert tuple(sorted((partner, alone))) in {
        (x, y) for x, y, _ in closed.reviews_closed_by_link}


def test_links_join_persons_only_as_the_service_would():
    # rows 0-1 one person, 2 and 3 alone; a hard rule stands between rows 2 and 3
    persons = ["A", "A", "B", "C"]
    joined = join_persons(persons, [(1, 2, 0.9999), (0, 3, 0.999)], [(2, 3)])
    # 1-2 joins A and B; 0-3 would bring C into A+B, where row 2 has a rule against row 3
    assert joined.links == [(1, 2, 0.9999)] and joined.held == [(0, 3, 0.999)]
    # most probable first: the same two links in the other order decide the same
    assert join_persons(persons, [(0, 3, 0.999), (1, 2, 0.9999)], [(2, 3)]) == joined
    # without the rule both stand
    assert len(join_persons(persons, [(1, 2, 0.9999), (0, 3, 0.999)], []).links) == 2
    # three split records of one person that all link: one person, nothing held
    clique = join_persons(["P", "Q", "R"], [(0, 1, 0.9999), (0, 2, 0.9999), (1, 2, 0.999)], [])
    assert len(clique.links) == 3 and clique.held == []


def test_a_record_reaching_two_persons_a_rule_keeps_apart_goes_to_a_steward():
    # row 2 (no birth date) reaches the father (0) and the son (1), two people by a hard rule:
    # as the service does with a record for which several persons reach auto-link
    links = [(0, 2, 0.9999), (1, 2, 0.9998)]
    joined = join_persons(["F", "S", "W"], links, [(0, 1)])
    assert joined.links == [] and joined.held == links
    # no rule between them: split records of one person, and the record joins them
    assert len(join_persons(["F", "S", "W"], links, []).links) == 2


def test_the_plan_does_not_join_a_father_and_son_through_a_record_without_birth_date():
    home = {"lines": ["12 Harbour Road"], "city": "Springfield", "postal_code": "62704"}

    def person(birth_date, source, value):
        demographics = {"names": [{"family": "Hernandez", "given": ["David", "J"]}],
                        "addresses": [home], "sex": "M"}
        if birth_date:
            demographics["birth_date"] = birth_date
        return normalize_record(demographics, [{"domain": source, "value": value}])

    normalized = [person("1961-03-14", "CENSUS", "1"), person("1990-07-02", "CENSUS", "2"),
                  person(None, "TAX", "3")]
    state = IndexState(normalized, ["father", "son", "w2"], [True] * 3,
                       ["CENSUS", "CENSUS", "TAX"])
    result = plan(state, MatchModel.default())
    pairwise = {(a, b) for a, b, _ in result.links_in_conflict}
    assert pairwise == {(0, 2), (1, 2)}, "the record without birth date reaches both"
    assert result.links == [] and result.persons_joined == 0
    # one review item for the W-2 against each person
    assert {(a, b) for a, b, _ in result.reviews_to_open} == pairwise
    assert result.to_dict()["links_in_conflict"] == 2


def _decided_twins(pattern_pairs, sources):
    """DecidedPairs whose rows ``pattern_pairs`` the twin rule refused."""
    from matching.pairs import NO_MATCH, DecidedPairs
    pairs = np.array(pattern_pairs + [(0, 1)], dtype=np.int64)
    rules = [("probable_twin",)] * len(pattern_pairs) + [()]
    return DecidedPairs(pairs, np.full(len(pairs), 0.9999), np.full(len(pairs), NO_MATCH),
                        rules)


def test_twins_show_inside_one_source_errors_only_across_two():
    from matching.calibrate import estimate_twin_share
    # two sources of 100 records each: 4,950 + 4,950 pairs inside one, 10,000 across
    sources = ["A"] * 100 + ["B"] * 100
    across = [(i, 100 + i) for i in range(40)]
    errors = estimate_twin_share(_decided_twins(across, sources), sources)
    assert (errors.within, errors.across) == (0, 40)
    assert errors.ratio == pytest.approx(10_000 / 9_900)
    # none inside a source: half a pair is assumed, never zero
    assert errors.share == pytest.approx(0.5 * 10_000 / 9_900 / 40)
    twins = estimate_twin_share(_decided_twins(across + [(2, 3), (102, 103)], sources), sources)
    assert twins.within == 2 and twins.share == pytest.approx(2.5 * 10_000 / 9_900 / 40)
    many = estimate_twin_share(_decided_twins(across + [(i, i + 1) for i in range(0, 80, 2)],
                                              sources), sources)
    assert many.share == 1.0  # as many inside as across: all twins, capped
    one_source = ["A"] * 200
    assert estimate_twin_share(_decided_twins(across, one_source), one_source).share is None
    assert estimate_twin_share(_decided_twins([], sources), sources).share is None


def test_namesake_generations_show_inside_one_source_replaced_dates_only_across_two():
    from matching.calibrate import estimate_generation_share
    from matching.pairs import NO_MATCH, DecidedPairs
    sources = ["A"] * 100 + ["B"] * 100
    pattern = [(i, 100 + i) for i in range(40)] + [(2, 3)]
    rules = [("birth_years_apart",)] * len(pattern) + [("probable_twin",)]
    decided = DecidedPairs(np.array(pattern + [(4, 104)], dtype=np.int64),
                           np.full(len(pattern) + 1, 0.9999),
                           np.full(len(pattern) + 1, NO_MATCH), rules)
    found = estimate_generation_share(decided, sources)
    # the twin rule's pair is not the generational rule's
    assert (found.within, found.across) == (1, 40)
    assert found.share == pytest.approx(1.5 * 10_000 / 9_900 / 40)


def test_the_twin_share_travels_with_the_model():
    model = MatchModel.default()
    assert model.twin_share is None and "twin_share" not in model.to_dict()
    shared = model.with_twin_share(0.002).with_generation_share(0.01).with_prior(1e-6)
    loaded = MatchModel.from_dict(shared.to_dict())
    assert (loaded.twin_share, loaded.generation_share) == (0.002, 0.01)
    assert "generation_share" not in model.to_dict()
    with pytest.raises(ValueError):
        model.with_twin_share(1.5)
    with pytest.raises(ValueError):
        model.with_generation_share(-0.1)


def test_the_diff_shows_the_twin_share():
    from matching.calibrate import model_diff
    old = MatchModel.default()
    new = old.with_twin_share(0.0014)
    new.training = {**new.training, "twin_share": {"within_one_source": 0, "across_sources": 348}}
    diff = model_diff(old, new)
    assert ("twin share across sources: none (the rule refuses) -> 0.0014 (the twin rule's "
            "pairs: 0 inside one source, 348 across two)") in diff
    assert "twin share" not in model_diff(old, old)
    generations = old.with_generation_share(0.012)
    generations.training = {**generations.training, "generation_share": {
        "within_one_source": 1, "across_sources": 122}}
    assert ("namesake generations' share across sources: none (the rule sends them to a "
            "steward) -> 0.012 (the generational rule's pairs: 1 inside one source, 122 "
            "across two)") in model_diff(old, generations)
