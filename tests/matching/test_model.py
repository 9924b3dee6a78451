import json

import numpy as np
import pytest

from matching.comparisons import encode
from matching.model import (
    ConditionalU,
    MatchModel,
    probability,
    term_frequencies_from,
    weight_of,
)
from matching.normalize import normalize_record


def person(family="Smith", given="John", birth="1980-03-12", sex="M", line="12 Main Street"):
    return normalize_record({
        "names": [{"family": family, "given": [given]}],
        "birth_date": birth,
        "sex": sex,
        "addresses": [{"lines": [line], "postal_code": "62701"}],
        "phones": [{"value": "555 123 4567"}],
    })


@pytest.fixture(scope="module")
def model() -> MatchModel:
    return MatchModel.default()


def test_default_model_loads_from_the_shipped_json(model):
    assert model.comparisons and 0 < model.prior < 0.01
    names = [c.name for c in model.comparisons]
    assert names[:3] == ["family_name", "given_name", "birth_date"]


def test_model_round_trips_through_readable_json(model, tmp_path):
    path = tmp_path / "model.json"
    model.save(path)
    text = path.read_text()
    assert '"label": "nickname"' in text  # readable, diffable
    again = MatchModel.load(path)
    assert again.to_dict() == json.loads(text)
    assert again.prior == pytest.approx(model.prior)


def test_load_rejects_other_documents(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"format": "something else"}')
    with pytest.raises(ValueError):
        MatchModel.load(path)


def test_probability_and_weight_are_inverse():
    assert probability(0.0) == pytest.approx(0.5)
    assert probability(10.0) == pytest.approx(1024 / 1025)
    assert weight_of(probability(3.5)) == pytest.approx(3.5)
    extremes = probability(np.array([-2000.0, 2000.0]))
    assert extremes[0] < 1e-300 and extremes[1] == 1.0


def test_score_orders_duplicate_above_relatives_and_strangers(model):
    record = person()
    duplicate = person(given="Jon")
    twin = person(given="James")
    stranger = person(family="Nguyen", given="Linh", birth="1990-01-01", sex="F",
                      line="9 Elm Road")
    weights = model.score(record, [stranger, twin, duplicate])
    assert weights.shape == (3,)
    assert weights[2] > weights[1] > weights[0]
    assert probability(weights[0]) < 0.01


def test_vectorised_score_equals_explanation_total(model):
    record = person()
    candidates = [person(given="Bob"), person(birth="1980-12-03"), person(family="Smith-Jones"),
                  person(family="Smyth", sex="F")]
    weights = model.score(record, candidates)
    for weight, candidate in zip(weights, candidates, strict=True):
        explanation = model.explain(record, candidate)
        assert weight == pytest.approx(explanation.total_weight)
        assert explanation.probability == pytest.approx(probability(weight))
        contributions = sum(c.contribution for c in explanation.comparisons)
        assert explanation.total_weight == pytest.approx(explanation.prior_weight + contributions)


@pytest.mark.parametrize("rows_path", [True, False])
@pytest.mark.parametrize("with_tf", [False, True])
def test_explain_many_agrees_with_score(model, rows_path, with_tf, monkeypatch):
    """One record explained against many candidates at once (the Python row path and the
    vectorised one, with and without term frequencies): each total is the score's weight."""
    if with_tf:
        model = model.with_term_frequencies(
            {"family": {"SMITH": 10_000}, "given": {"JOHN": 5_000}, "total": 1_000_000,
             "full": {"JOHN|SMITH": 400}, "persons": 900_000})
    if not rows_path:
        monkeypatch.setattr(model, "_rows_supported", lambda: False)
    record = person()
    candidates = [person(given="Bob"), person(birth="1980-12-03"), person(family="Smyth"),
                  person(family="Nguyen", given="Linh", sex="F"), person()]
    keys = [(i, 1) for i in range(len(candidates))]
    weights = model.score(record, candidates)
    many = model.explain_many(record, candidates, keys=keys)
    assert [e.total_weight for e in many] == pytest.approx(list(weights))
    assert [e.to_dict() for e in many] == [model.explain(record, c).to_dict()
                                          for c in candidates]
    assert many[3].probability < 0.01 < 0.99 < many[4].probability
    assert model.explain_many(record, []) == []
    if with_tf:  # JOHN SMITH: 399 other persons where the two names make 45 of 900,000
        assert many[4].comparisons[1].tf_adjustment < model.explain(
            record, candidates[4]).comparisons[1].tf_adjustment + 1e-9
        assert model.score(record, [person()])[0] == pytest.approx(weights[4])


def test_pre_encoded_and_batch_scoring_agree_with_one_by_one(model):
    records = [person(), person(given="Jon"), person(family="Jones"), person(birth="1979-03-12")]
    encoded = model.encode(records)
    left = np.array([0, 0, 1, 2])
    right = np.array([1, 2, 3, 3])
    batch = model.score_pairs(encoded, left, encoded, right)
    single = [model.score(records[a], [records[b]])[0] for a, b in zip(left, right, strict=True)]
    assert batch == pytest.approx(single)
    assert model.score(encode([records[0]]), encoded) == pytest.approx(
        model.score(records[0], records)
    )


def test_raw_demographics_are_accepted(model):
    raw = {"names": [{"family": "Smith", "given": ["John"]}], "birth_date": "19800312"}
    assert model.score(raw, [raw])[0] == pytest.approx(model.score(
        normalize_record(raw), [normalize_record(raw)])[0])


def test_explanation_serialises_to_json(model):
    explanation = model.explain(person(), person(given="Bob"))
    data = json.loads(explanation.to_json())
    assert data["comparisons"][1]["comparison"] == "given_name"
    assert data["comparisons"][1]["label"] == "same initial" or data["comparisons"][1]["left"]
    assert set(data) == {"prior", "prior_weight", "comparisons", "total_weight", "probability"}


def test_term_frequencies_make_common_names_weigh_less(model):
    records = [person(family="Smith", given=f"G{i}") for i in range(50)]
    records += [person(family="Zielinski", given="Anna")]
    counted = term_frequencies_from(records)
    assert counted["family"]["SMITH"] == 50 and counted["total"] == 51
    table = {"family": {"SMITH": 10_000, "ZIELINSKI": 2}, "given": {}, "total": 1_000_000}
    tf_model = model.with_term_frequencies(table)
    common = tf_model.explain(person(), person()).comparisons[0]
    rare = tf_model.explain(person(family="Zielinski"), person(family="Zielinski")).comparisons[0]
    assert common.label == rare.label == "exact"
    assert common.tf_adjustment < 0 < rare.tf_adjustment
    assert common.contribution < rare.contribution


def test_full_names_are_counted_over_persons_not_records():
    """A full name shared by three persons (three birth dates) is common; one person's five
    records do not make their name common; a name that is no more common than its two names
    make it is left out (the product already weighs it)."""
    records = [person(family="Rodriguez", given="Jose", birth=f"19{70 + i}-01-02")
               for i in range(3)]
    records += [person(family="Kowalski", given="Anna", birth="1990-05-06") for _ in range(5)]
    records += [person(family=f"F{i}", given=f"G{i}", birth="1950-01-01") for i in range(40)]
    # a source that sends no birth date: not one more JOSE RODRIGUEZ
    records += [person(family="Rodriguez", given="Jose", birth=None)]
    table = term_frequencies_from(records)
    assert table["full"] == {"JOSE|RODRIGUEZ": 3}
    assert table["persons"] == 3 + 1 + 40 and table["total"] == 49
    rare = [person(family="Rodriguez", given="Jose", birth=f"19{70 + i}-01-02") for i in range(3)]
    rare += [person(family="Rodriguez", given=f"G{i}") for i in range(30)]
    rare += [person(family=f"F{i}", given="Jose") for i in range(30)]
    assert term_frequencies_from(rare)["full"] == {}  # JOSE and RODRIGUEZ common on their own


def test_a_middle_initial_tells_a_father_from_his_son_at_one_home(model):
    """Two records of one full name at one home without birth dates: the same middle initial
    is more evidence that they are one person, a different one less."""
    def named(middle):
        demo = {"names": [{"family": "Cedeno", "given": ["Brian", middle]}],
                "addresses": [{"lines": ["943 Nicolls Road"], "postal_code": "62701"}]}
        return normalize_record(demo)

    def outcome(a, b):
        explained = model.explain(named(a), named(b))
        level = next(c for c in explained.comparisons if c.comparison == "middle_initial")
        return level.label, explained.total_weight

    same, different = outcome("Carlton", "C"), outcome("Carlton", "S")
    assert same[0] == "same" and different[0] == "different"
    assert different[1] < same[1]
    assert model.explain(named("Carlton"), normalize_record(
        {"names": [{"family": "Cedeno", "given": ["Brian"]}]})).comparisons[-1].label == (
        "missing")


def test_a_common_full_name_weighs_less_and_never_more(model):
    """Two records agreeing on a full name that many persons share: the weight both names'
    frequencies give is lowered to what the full name's frequency gives (JOSE goes with
    RODRIGUEZ far more often than the product of their frequencies says); a full name
    rarer than that product changes nothing; the batch, row and explanation paths agree."""
    names = {"family": {"RODRIGUEZ": 1_000, "SMITH": 1_000}, "given": {"JOSE": 1_000,
             "JOHN": 1_000}, "total": 100_000}
    independent = model.with_term_frequencies(names)
    common = model.with_term_frequencies(
        names | {"full": {"JOSE|RODRIGUEZ": 201}, "persons": 100_000})
    jose = person(family="Rodriguez", given="Jose")
    john = person(family="Smith", given="John")
    lowered = common.score(jose, [jose])[0]
    before = independent.score(jose, [jose])[0]
    # both names 1 % each: 10 per 100,000 expected, 200 others seen: 20x, log2(20) bits
    assert before - lowered == pytest.approx(np.log2(200 / 10), abs=0.01)
    assert common.score(john, [john])[0] == pytest.approx(independent.score(john, [john])[0])
    rows = [jose, person(family="Rodriguez", given="Josefina"), john]
    batch = common.score_pairs(common.encode([jose] * 3), np.arange(3), common.encode(rows),
                               np.arange(3))
    assert list(batch) == pytest.approx(list(common.score(jose, rows)))
    explained = common.explain(jose, jose)
    assert explained.total_weight == pytest.approx(lowered)
    assert explained.comparisons[1].tf_adjustment < independent.explain(
        jose, jose).comparisons[1].tf_adjustment
    rarer = model.with_term_frequencies(names | {"full": {"JOSE|RODRIGUEZ": 3},
                                                 "persons": 100_000})
    assert rarer.score(jose, [jose])[0] == pytest.approx(before)


def test_one_record_against_200_candidates_is_fast(model):
    import time

    candidates = model.encode([person(given=f"Name{i}", birth=f"19{50 + i % 40}-01-02")
                               for i in range(200)])
    query = model.encode([person()])
    timings = []
    for _ in range(30):
        started = time.perf_counter()
        model.score(query, candidates)
        timings.append(time.perf_counter() - started)
    assert float(np.median(timings)) < 0.01  # generous bound for a shared CI core; bench: <1 ms


def test_a_smaller_prior_lowers_every_weight_by_the_same_amount(model):
    record, candidate = person(), person(given="Jon")
    base = model.score(record, [candidate])[0]
    shifted = model.with_prior(model.prior / 2).score(record, [candidate])[0]
    assert base - shifted == pytest.approx(1.0, abs=1e-3)  # half the odds: one bit less
    with pytest.raises(ValueError):
        model.with_prior(0.0)


HOUSEHOLD = ConditionalU("contact", "family_name", ("exact",),
                         [0.0, 0.02, 0.003, 0.0001, 0.004, 0.01, 0.963])


def test_a_conditional_u_weighs_the_contact_of_a_same_family_pair_by_it(model):
    """Two records of one family at one address: the contact weight is log2(m / u given the
    family name); a pair with another family name keeps the contact's own u."""
    household = MatchModel(model.comparisons, model.prior, conditional_u=[HOUSEHOLD])
    record = person()
    same_family, other_family = person(given="Bob"), person(family="Nguyen", given="Bob")
    plain = MatchModel(model.comparisons, model.prior).explain_many(
        record, [same_family, other_family])
    conditioned = household.explain_many(record, [same_family, other_family])
    contact = [c.name for c in model.comparisons].index("contact")
    level = model.comparisons[contact].levels[1]  # same address and phone
    assert conditioned[0].comparisons[contact].label == level.label
    assert conditioned[0].comparisons[contact].weight == pytest.approx(
        np.log2(level.m / 0.02))
    assert conditioned[0].comparisons[contact].u == 0.02
    assert conditioned[0].to_dict()["comparisons"][contact]["u_given"] == "family_name"
    assert conditioned[0].total_weight == pytest.approx(
        plain[0].total_weight - np.log2(level.m / level.u) + np.log2(level.m / 0.02))
    assert conditioned[1].total_weight == pytest.approx(plain[1].total_weight)
    assert "u_given" not in conditioned[1].to_dict()["comparisons"][contact]
    assert list(household.score(record, [same_family, other_family])) == pytest.approx(
        [e.total_weight for e in conditioned])


FULL_NAME = ConditionalU("contact", "family_name", ("exact",),
                         [0.0, 0.001, 0.0002, 0.0001, 0.0004, 0.01, 0.988],
                         also=(("given_name", ("exact",)),))


def test_the_narrower_conditional_u_applies_first(model, tmp_path):
    """A full name and a home agreeing: the u among pairs of one full name (namesakes seldom
    share a home); one family name and a home: the household's; neither: the contact's own.
    Vectorised, one at a time and in the explanation alike; through a model file too."""
    both = MatchModel(model.comparisons, model.prior, conditional_u=[FULL_NAME, HOUSEHOLD])
    both.save(tmp_path / "m.json")
    assert MatchModel.load(tmp_path / "m.json").conditional_u == [FULL_NAME, HOUSEHOLD]
    record = person()
    candidates = [person(), person(given="Bob"), person(family="Nguyen", given="Bob")]
    explained = both.explain_many(record, candidates)
    contact = [c.name for c in model.comparisons].index("contact")
    level = model.comparisons[contact].levels[1]  # same address and phone
    same, family, other = (e.comparisons[contact] for e in explained)
    assert (same.u, same.u_given) == (0.001, "family_name and given_name")
    assert (family.u, family.u_given) == (0.02, "family_name")
    assert (other.u, other.u_given) == (level.u, None)
    assert same.weight == pytest.approx(np.log2(level.m / 0.001))
    scored = both.score(record, candidates)
    assert list(scored) == pytest.approx([e.total_weight for e in explained])
    one_by_one = [both.score(record, [c])[0] for c in candidates]
    assert one_by_one == pytest.approx(list(scored))


def test_a_conditional_u_round_trips_and_is_checked(model, tmp_path):
    household = MatchModel(model.comparisons, model.prior, conditional_u=[HOUSEHOLD])
    household.save(tmp_path / "m.json")
    again = MatchModel.load(tmp_path / "m.json")
    assert again.conditional_u == [HOUSEHOLD]
    assert again.with_prior(0.01).conditional_u == [HOUSEHOLD]
    assert again.with_term_frequencies(None).conditional_u == [HOUSEHOLD]
    assert "conditional_u" not in MatchModel(model.comparisons).to_dict()  # absent: none
    assert model.conditional_u  # the shipped model has the household u of its generator
    with pytest.raises(ValueError, match="unknown levels"):
        MatchModel(model.comparisons, conditional_u=[
            ConditionalU("contact", "family_name", ("no such level",), HOUSEHOLD.u)])
    with pytest.raises(ValueError, match="one u per level"):
        MatchModel(model.comparisons, conditional_u=[
            ConditionalU("contact", "family_name", ("exact",), [0.5, 0.5])])
