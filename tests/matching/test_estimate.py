"""Estimation recovers the m and u that the generated ground truth shows."""

import numpy as np
import pytest

from matching.blocking import blocking_keys, candidate_pairs
from matching.estimate import LabelledPair, estimate_u, train
from matching.model import MatchModel
from matching.normalize import normalize_record
from matching.synth import generate


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
