import pytest

from matching.evaluate import (
    clusters_from_links,
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


def test_clusters_from_links_are_connected_components():
    import numpy as np

    labels = clusters_from_links(6, np.array([[0, 1], [1, 2], [4, 5]]))
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] not in (labels[0], labels[4])
    assert labels[4] == labels[5]


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
