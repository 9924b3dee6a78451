"""Each comparison level, reached through the model's explanation of one pair."""

import pytest

from matching.model import MatchModel


@pytest.fixture(scope="module")
def model() -> MatchModel:
    return MatchModel.untrained()


def person(family="Smith", given=("John",), birth="1980-03-12", sex="M", **extra):
    demo = {
        "names": [{"family": family, "given": list(given), "use": "L"}],
        "birth_date": birth,
        "sex": sex,
        "addresses": [{"lines": ["12 Main Street"], "city": "Springfield", "state": "IL",
                       "postal_code": "62701"}],
        "phones": [{"value": "(555) 123-4567"}],
    }
    demo.update(extra)
    return demo


def level(model, comparison, left, right):
    return model.explain(left, right).level_of(comparison)


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("Smith", "Smith", "exact"),
        ("Smith", "SMITH", "exact"),
        ("Johnson", "Johnsen", "jaro-winkler >= 0.94"),
        ("Smith-Jones", "Smith", "compound part shared"),
        ("Smith-Jones", "Jones Smith", "compound part shared"),
        ("Catherine", "Katherine", "phonetic"),
        ("Smith", "Smyth", "jaro-winkler >= 0.85"),
        ("Smith", "Nguyen", "different"),
        ("", "Smith", "missing"),
    ],
)
def test_family_name_levels(model, left, right, expected):
    assert level(model, "family_name", person(family=left), person(family=right)) == expected


def test_family_name_maiden_name_level(model):
    married = person(family="Doe")
    married["names"].append({"family": "Smith", "given": ["Jane"], "use": "M"})
    assert level(model, "family_name", married, person(family="Smith")) == "previous/maiden name"
    assert level(model, "family_name", person(family="Smith"), married) == "previous/maiden name"


def test_given_and_family_swapped(model):
    swapped = person(family="John", given=("Smith",))
    assert level(model, "family_name", person(), swapped) == "swapped with given"
    assert level(model, "given_name", person(), swapped) == "swapped with family"


@pytest.mark.parametrize("shipped", [False, True])
def test_a_swap_weighs_no_more_than_both_names_agreeing(model, shipped):
    """Both comparisons reach their swap level on one fact (the names in each other's
    fields); counted twice it outweighed two agreeing names (26.8 bits against 15.2 in a
    model trained on Febrl) and linked a common-name namesake. Counted once it weighs at
    most what exact agreement of both names weighs."""
    m = MatchModel.default() if shipped else model
    swapped = m.explain(person(), person(family="John", given=("Smith",))).total_weight
    agreeing = m.explain(person(), person()).total_weight
    assert swapped <= agreeing


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (("Liebenberg", "Bianca"), ("Bianca", "Liebenbrrg"), "misspelt"),  # one typo
        (("Shepherdson", "Harvey"), ("Harvy", "Shepherdosn"), "misspelt"),  # both misspelt
        (("Novak", "Benjamin"), ("Benjamni", "Novak"), "misspelt"),
        (("Smith", "John"), ("John", "Smith"), "exact"),  # the exact level comes first
        (("Smith", "John"), ("Jones", "Smith"), "no"),  # one name moved, the other different
        (("Smith", "John"), ("", "Smith"), "no"),  # a missing name is no swap
    ],
)
def test_names_swapped_and_misspelt(model, left, right, expected):
    a = person(family=left[0], given=(left[1],))
    b = person(family=right[0], given=(right[1],) if right[1] else ())
    labels = {"misspelt": ("swapped with given, misspelt", "swapped with family, misspelt"),
              "exact": ("swapped with given", "swapped with family")}
    reached = (level(model, "family_name", a, b), level(model, "given_name", a, b))
    if expected == "no":
        assert not any("swapped" in lv for lv in reached)
    else:
        assert reached == labels[expected]
    # one fact, weighed once: by family_name; given_name's swap levels are neutral
    if expected != "no":
        outcome = {c.comparison: c for c in model.explain(a, b).comparisons}
        assert outcome["given_name"].weight == 0.0 and outcome["family_name"].weight > 0
    # the one-pair path (scalar) and the array path reach the same level
    many = model.score(a, [b, b, person()])
    assert many[0] == pytest.approx(model.score(a, [b])[0])


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("John", "John", "exact"),
        ("Christopher", "Christophr", "jaro-winkler >= 0.94"),
        ("Robert", "Bob", "nickname"),
        ("Bob", "Robert", "nickname"),
        ("William", "Bill", "nickname"),
        ("John", "Jon", "nickname"),
        ("Jon", "Jhon", "phonetic"),
        ("J", "John", "same initial"),
        ("John", "James", "same initial"),
        ("John", "Mary", "different"),
        ("", "Mary", "missing"),
    ],
)
def test_given_name_levels(model, left, right, expected):
    l_given = (left,) if left else ()
    assert level(model, "given_name", person(given=l_given), person(given=(right,))) == expected


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        ("1980-03-12", "19800312", "exact"),
        ("1980-03-12", "1980-12-03", "day/month transposed"),
        ("1980-03-12", "1980-03-13", "one digit off"),
        ("1980-03-12", "1989-03-12", "one digit off"),
        ("1980-03-12", "1908-03-12", "two digits swapped"),  # one slip, not 72 years
        ("1980-03-12", "1980-03-21", "two digits swapped"),
        ("1980-03-12", "1980-30-12", "missing"),  # no such date
        ("1980-03-12", "1908-03-21", "different"),  # two slips
        ("1980-03-12", "1980-03-28", "same year and month"),
        ("1980-03-12", "1980-03", "same year and month"),
        ("1980-03-12", "1980-07-25", "same year"),
        ("1980", "1980-07-25", "same year"),
        ("1980-03-12", "1981-07-25", "within 1 year"),
        ("1980-03-12", "1950-07-25", "different"),
        ("1980-03-12", "garbage", "missing"),
    ],
)
def test_birth_date_levels(model, left, right, expected):
    assert level(model, "birth_date", person(birth=left), person(birth=right)) == expected


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [("M", "male", "same"), ("M", "F", "different"), ("M", "U", "missing"), ("M", None, "missing")],
)
def test_sex_levels(model, left, right, expected):
    assert level(model, "sex", person(sex=left), person(sex=right)) == expected


def test_suffix_levels(model):
    junior = person()
    junior["names"][0]["suffix"] = "Jr."
    senior = person()
    senior["names"][0]["suffix"] = "Sr"
    assert level(model, "suffix", junior, senior) == "different (JR vs SR)"
    assert level(model, "suffix", junior, junior) == "same"
    assert level(model, "suffix", junior, person()) == "missing"


def test_contact_levels(model):
    base = person()
    moved_same_phone = person(addresses=[{"lines": ["9 Elm Road"], "postal_code": "10001"}])
    new_phone = person(phones=[{"value": "555 999 0000"}])
    abbreviated = person(addresses=[{"lines": ["12 Main St", "Apt 4"], "postal_code": "62701"}],
                         phones=[])
    same_zip = person(addresses=[{"lines": ["77 Oak Lane"], "postal_code": "62701"}], phones=[])
    elsewhere = person(addresses=[{"lines": ["77 Oak Lane"], "postal_code": "10001"}],
                       phones=[{"value": "555 999 0000"}])
    assert level(model, "contact", base, base) == "same address and phone"
    assert level(model, "contact", base, new_phone) == "same address"
    assert level(model, "contact", base, moved_same_phone) == "same phone"
    assert level(model, "contact", base, abbreviated) == "same house and street"
    assert level(model, "contact", base, same_zip) == "same postal code"
    assert level(model, "contact", base, elsewhere) == "different"
    assert level(model, "contact", base, person(addresses=[], phones=[])) == "missing"


def test_person_identifier_levels(model):
    ssn = "2.16.840.1.113883.4.1"
    left = {"demographics": person(), "identifiers": [
        {"domain": ssn, "value": "123-45-6788", "type": "SS"}]}
    same = {"demographics": person(), "identifiers": [
        {"domain": ssn, "value": "123456788", "type": "SS"}]}
    other = {"demographics": person(), "identifiers": [
        {"domain": ssn, "value": "223-45-6788", "type": "SS"}]}
    mrn_only = {"demographics": person(), "identifiers": [
        {"domain": "HOSP", "value": "1", "type": "MR"}]}
    assert level(model, "person_identifier", left, same) == "same value"
    assert level(model, "person_identifier", left, other) == "different value"
    assert level(model, "person_identifier", left, mrn_only) == "no common domain"


def test_missing_levels_weigh_nothing(model):
    explanation = model.explain(person(sex="U"), person(sex="M"))
    sex = next(c for c in explanation.comparisons if c.comparison == "sex")
    assert sex.label == "missing" and sex.weight == 0.0 and sex.m is None


def test_a_shared_birth_date_after_today_weighs_less_than_a_real_one():
    from matching.model import MatchModel
    from matching.normalize import normalize_record as norm

    def rec(birth):
        return norm({"names": [{"family": "Lee", "given": ["Ann"]}], "birth_date": birth})

    model = MatchModel.default()
    future = model.explain(rec("2090-01-05"), rec("2090-01-05")).comparisons[2]
    real = model.explain(rec("1990-01-05"), rec("1990-01-05")).comparisons[2]
    slip = model.explain(rec("2062-01-05"), rec("2012-01-05")).comparisons[2]
    assert (future.label, real.label, slip.label) == (
        "exact, after today", "exact", "one digit off")
    assert 0 < future.weight < real.weight
