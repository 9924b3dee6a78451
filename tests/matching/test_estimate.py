"""Estimation recovers the m and u that the generated ground truth shows."""

import numpy as np
import pytest

from matching.blocking import blocking_keys, candidate_pairs
from matching.estimate import LabelledPair, estimate_u, train
from matching.evaluate import evaluate_records
from matching.model import MatchModel
from matching.normalize import normalize_record
from matching.synth import SynthRecord, generate


@pytest.fixture(scope="module")
def population():
    return generate(4000, 0.3, seed=21, hard=False)


@pytest.fixture(scope="module")
def trained(population):
    return train([r.as_input() for r in population], u_pairs=100_000, seed=1)


def _levels(model, population, pairs):
    normalized = [normalize_record(r.demographics, r.identifiers) for r in population]
    encoded = model.encode(normalized)
    return model.pair_levels(encoded, pairs[:, 0], encoded, pairs[:, 1])


def _true_match_pairs(population):
    by_person: dict[str, list[int]] = {}
    for row, record in enumerate(population):
        by_person.setdefault(record.person_id, []).append(row)
    pairs = [(rows[i], rows[j]) for rows in by_person.values()
             for i in range(len(rows)) for j in range(i + 1, len(rows))]
    return np.array(pairs)


def test_u_matches_the_share_among_random_non_matching_pairs(population):
    model = MatchModel.untrained()
    normalized = [normalize_record(r.demographics, r.identifiers) for r in population]
    u = estimate_u(model, model.encode(normalized), pairs=100_000, seed=3)
    rng = np.random.default_rng(9)
    pairs = rng.integers(0, len(population), (50_000, 2))
    truth = np.array([r.person_id for r in population])
    pairs = pairs[truth[pairs[:, 0]] != truth[pairs[:, 1]]]
    levels = _levels(model, population, pairs)
    for j, comparison in enumerate(model.comparisons):
        nulls = [i for i, lv in enumerate(comparison.levels) if lv.null]
        counted = levels[:, j][~np.isin(levels[:, j], nulls)]
        if len(counted) < 2000:
            continue  # e.g. suffix: compared only when both records carry one
        different = len(comparison.levels) - 1
        empirical = float((counted == different).mean())
        assert u[comparison.name][different] == pytest.approx(empirical, abs=0.02)


def test_u_leaves_out_the_matches_among_random_pairs():
    """In a set dense with duplicates (every person has more than one record, as in Febrl3)
    the matches are a large part of the random pairs that share a birth date: counted as
    non-matches they made the birth date's u 3.6 times too high here (10 times on Febrl3)."""
    records = generate(3000, 1.0, seed=5, hard=False)
    model = train([r.as_input() for r in records], u_pairs=100_000, seed=1)
    normalized = [normalize_record(r.demographics, r.identifiers) for r in records]
    truth = np.array([r.person_id for r in records])
    rows = np.random.default_rng(4).integers(0, len(records), (2_000_000, 2))
    rows = rows[truth[rows[:, 0]] != truth[rows[:, 1]]]
    j = [c.name for c in model.comparisons].index("birth_date")
    comparison = model.comparisons[j]
    exact = [lv.label for lv in comparison.levels].index("exact")
    levels = _levels(model, records, rows)[:, j]
    nulls = [i for i, lv in enumerate(comparison.levels) if lv.null]
    empirical = float((levels[~np.isin(levels, nulls)] == exact).mean())
    counted = estimate_u(model, model.encode(normalized), pairs=100_000, seed=1)
    assert counted["birth_date"][exact] > 2.5 * empirical  # what the raw count says
    assert empirical / 1.5 < comparison.levels[exact].u < empirical * 1.5


def test_em_with_fixed_u_recovers_m_of_the_true_matches(population, trained):
    pairs = _true_match_pairs(population)
    levels = _levels(trained, population, pairs)
    for name, label in [("birth_date", "exact"), ("family_name", "exact"),
                        ("given_name", "exact"), ("contact", "same address and phone")]:
        j = [c.name for c in trained.comparisons].index(name)
        comparison = trained.comparisons[j]
        nulls = [i for i, lv in enumerate(comparison.levels) if lv.null]
        counted = levels[:, j][~np.isin(levels[:, j], nulls)]
        index = [lv.label for lv in comparison.levels].index(label)
        empirical = float((counted == index).mean())
        assert comparison.levels[index].m == pytest.approx(empirical, abs=0.06), name


def test_prior_is_close_to_the_true_share_of_matching_pairs(population, trained):
    n = len(population)
    true_pairs = len(_true_match_pairs(population))
    actual = true_pairs / (n * (n - 1) / 2)
    assert actual / 3 < trained.prior < actual * 3
    assert trained.training["records"] == n


def test_labels_are_used(population):
    normalized = [normalize_record(r.demographics, r.identifiers) for r in population[:600]]
    keys = [blocking_keys(r) for r in normalized]
    pairs = candidate_pairs(keys)
    labels = [LabelledPair(int(a), int(b), population[a].person_id == population[b].person_id)
              for a, b in pairs[:200]]
    labelled = train([r.as_input() for r in population[:600]], labels=labels, u_pairs=20_000)
    assert labelled.training["labels"] == 200
    assert labelled.to_dict() != train([r.as_input() for r in population[:600]],
                                       u_pairs=20_000).to_dict()


def test_each_pass_finds_a_match_share_of_its_own(population, trained):
    """A pass leaves out what its rule fixes, so its match share is free to come out below
    one: the rules' pairs hold non-matches (people born the same day, neighbours)."""
    passes = trained.training["em_passes"]
    assert {"birth_date", "names", "postal_code", "phone"} <= set(passes)
    for name in ("birth_date", "postal_code", "phone"):
        assert 0.05 < passes[name]["match_share"] < 0.95, name
    true_pairs = len(_true_match_pairs(population))
    assert true_pairs / 2 < trained.training["matching_pairs"] < true_pairs * 2
    # the rules agree with each other on how many matching pairs there are
    by_rule = trained.training["matching_pairs_by_rule"]
    assert max(by_rule.values()) < 1.5 * min(by_rule.values())


def _names_and_birth_dates(records):
    out = []
    for r in records:
        name = r.demographics["names"][0]
        out.append(SynthRecord(r.record_id, r.person_id, r.source_domain, {
            "names": [{"family": name["family"], "given": name["given"][:1]}],
            "birth_date": r.demographics.get("birth_date"),
        }, []))
    return out


def test_a_names_and_birth_dates_set_gets_a_prior_and_links():
    """Without address, phone, sex or identifier the prior still comes from the passes (a
    fixed rule with an assumed recall made it 100 times too small: nothing linked)."""
    records = _names_and_birth_dates(generate(3000, 0.3, seed=5, hard=False))
    model = train([r.as_input() for r in records], u_pairs=100_000, seed=2)
    true_pairs = len(_true_match_pairs(records))
    n = len(records)
    actual = true_pairs / (n * (n - 1) / 2)
    assert actual / 3 < model.prior < actual * 3
    figures = evaluate_records(records, model, person_identifying_domains=())
    assert figures["pairwise_precision"] >= 0.99
    assert figures["pairwise_recall"] >= 0.6


def test_a_household_u_is_estimated_from_same_family_pairs():
    """Families share their address: among pairs with the same family name, the same address
    and phone is far more common than among random pairs, and the model says so."""
    records = generate(3000, 0.2, seed=8, hard=True)
    model = train([r.as_input() for r in records], u_pairs=100_000, seed=3)
    full_name, household = model.conditional_u
    assert (household.comparison, household.given, household.also) == (
        "contact", "family_name", ())
    contact = next(c for c in model.comparisons if c.name == "contact")
    both = [lv.label for lv in contact.levels].index("same address and phone")
    assert household.u[both] > 20 * contact.levels[both].u
    # two records of one full name that are two people (namesakes) seldom share a home: the
    # u among them, estimated first, is far below the household's
    assert full_name.describe() == "family_name and given_name"
    assert full_name.u[both] < household.u[both] / 4


def test_a_small_index_trains_and_the_seed_decides():
    records = [r.as_input() for r in generate(30, 0.3, seed=4, hard=False)]
    first = train(records, u_pairs=5_000, seed=9)
    assert 0 < first.prior <= 0.5
    assert first.training["records"] == len(records)
    assert train(records, u_pairs=5_000, seed=9).to_dict() == first.to_dict()
    assert train([], u_pairs=10).training["records"] == 0


def _split_fields(records: list[SynthRecord]) -> list[SynthRecord]:
    """Every other record as a source that sends the birth date and no identifier, the rest
    as one that sends the identifier and no birth date (a census beside tax forms), and one
    postcode everywhere (a site whose records all carry the same one)."""
    out = []
    for row, record in enumerate(records):
        demo = dict(record.demographics)
        demo["addresses"] = [dict(a, postal_code="00000") for a in demo.get("addresses") or ()]
        identifiers = list(record.identifiers)
        if row % 2:
            demo.pop("birth_date", None)
        else:
            identifiers = [x for x in identifiers if x.get("type") != "SS"]
        out.append(SynthRecord(record_id=record.record_id, person_id=record.person_id,
                               source_domain=record.source_domain, demographics=demo,
                               identifiers=identifiers))
    return out


def test_the_prior_holds_when_sources_fill_different_fields():
    """A key only some sources fill (the birth date) pairs few of the matches that another
    rule (the identifier, filled by the other sources) finds; its recall is the share of
    matches that both have the key times the share of those that agree, or the matching pairs
    come out twice too many. A postcode every record carries is no key at all."""
    records = _split_fields(generate(3000, 0.3, seed=12, hard=False))
    model = train([r.as_input() for r in records], u_pairs=100_000, seed=4)
    true_pairs = len(_true_match_pairs(records))
    assert true_pairs / 1.3 < model.training["matching_pairs"] < true_pairs * 1.3
    assert "postal_code" not in model.training["em_passes"]
