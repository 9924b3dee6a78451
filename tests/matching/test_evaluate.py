import pytest

from matching.evaluate import (
    evaluate_csv,
    evaluate_records,
    pairwise_figures,
    review_person_pairs,
)
from matching.synth import generate, write_csv


def test_pairwise_figures_on_a_hand_made_clustering():
    truth = ["a", "a", "a", "b", "b", "c"]
    predicted = [1, 1, 2, 3, 3, 3]
    figures = pairwise_figures(truth, predicted)
    # true pairs: 3 (a) + 1 (b) = 4; predicted: 1 + 3 = 4; both: (0,1) and (3,4) = 2
    assert figures["pairwise_precision"] == pytest.approx(0.5)
    assert figures["pairwise_recall"] == pytest.approx(0.5)
    assert figures["pairwise_f1"] == pytest.approx(0.5)
    assert figures["cluster_precision"] == pytest.approx(0.0)
    perfect = pairwise_figures(truth, truth)
    assert perfect["pairwise_f1"] == 1.0 and perfect["cluster_recall"] == 1.0


def test_persons_are_joined_as_the_service_joins_them_not_by_closure():
    """A W-2 without a birth date links to a father and to his namesake son of one home. The
    transitive closure of the links joined father and son; the service, and now evaluate,
    leave that record to a steward (``links_held``)."""
    from matching.synth import SynthRecord

    home = {"lines": ["12 Harbour Road"], "city": "Springfield", "postal_code": "62704"}

    def record(record_id, person, birth_date, source):
        demographics = {"names": [{"family": "Hernandez", "given": ["David", "J"]}],
                        "addresses": [home], "sex": "M"}
        if birth_date:
            demographics["birth_date"] = birth_date
        return SynthRecord(record_id, person, source, demographics,
                           [{"domain": source, "value": record_id}])

    records = [record("1", "father", "1961-03-14", "CENSUS"),
               record("2", "son", "1990-07-02", "CENSUS"),
               record("3", "father", None, "TAX")]
    figures = evaluate_records(records, scale_prior=False, use_term_frequencies=False)
    assert figures["link_pairs"] == 2, "each pair with the W-2 decides LINK"
    assert figures["links_held"] == 2
    assert figures["predicted_pairs"] == 0 and figures["pairwise_precision"] == 1.0


def test_review_person_pairs_count_pairs_of_persons_not_of_records():
    import numpy as np

    labels = np.array([0, 0, 0, 3, 3, 5])  # persons {0,1,2}, {3,4}, {5}
    reviews = np.array([[0, 3], [1, 4], [2, 3], [0, 1], [4, 5]])
    # (0,3) (1,4) (2,3) are one pair of persons; (0,1) is inside a person; (4,5) another pair
    assert review_person_pairs(labels, reviews) == 2
    assert review_person_pairs(labels, np.zeros((0, 2), np.int64)) == 0


@pytest.fixture(scope="module")
def figures():
    population = generate(3000, 0.25, seed=99, hard=True)
    return evaluate_records(population, workers=1)


def test_end_to_end_on_a_hard_generated_population(figures):
    assert figures["persons"] == 3000
    assert figures["duplicate_records"] > 600
    assert figures["pair_completeness"] >= 0.98
    assert figures["pairwise_f1"] >= 0.95
    assert figures["auto_link_precision"] >= 0.99
    assert figures["jr_sr_links"] == 0
    assert figures["twin_links"] <= 2
    assert figures["review_share"] <= 0.05
    assert 0 < figures["review_person_pairs"] <= figures["review_pairs"]


def test_evaluate_csv_reads_the_ground_truth_column(tmp_path):
    population = generate(400, 0.3, seed=3)
    path = tmp_path / "labelled.csv"
    write_csv(population, path)
    from_csv = evaluate_csv(path, workers=1)
    direct = evaluate_records(population, workers=1)
    for key in ("records", "persons", "candidate_pairs", "pairwise_f1", "link_pairs"):
        assert from_csv[key] == direct[key], key
