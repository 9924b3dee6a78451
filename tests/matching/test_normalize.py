from datetime import date

import pytest

from matching.normalize import (
    PartialDate,
    birth_date_problem,
    clean_identifier,
    fold,
    given_name_variants,
    normalize_address,
    normalize_family,
    normalize_given,
    normalize_phone,
    normalize_record,
    normalize_sex,
    normalize_suffix,
    parse_birth_date,
    phonetic,
)

TODAY = date(2026, 6, 1)


def test_fold_turns_unicode_and_punctuation_into_single_spaced_ascii_uppercase():
    assert fold("  Zoë  O'Brien-Smith ") == "ZOE O BRIEN SMITH"
    assert fold("Müller") == "MULLER"
    assert fold(None) == ""
    assert fold("--") == ""


def test_family_name_loses_suffix_and_title_but_keeps_compound_parts():
    assert normalize_family("Smith-Jones Jr.") == "SMITH JONES"
    assert normalize_family("Dr. van der Berg") == "VAN DER BERG"
    assert normalize_family("Lord") == "LORD"  # a real surname survives when it is all there is


def test_given_name_loses_title_and_keeps_double_given():
    assert normalize_given("Dr. Mary-Ann") == "MARY ANN"
    assert normalize_given("John III") == "JOHN"
    assert normalize_given("Mr") == ""


def test_suffix_is_unified():
    assert normalize_suffix("Jr.") == "JR"
    assert normalize_suffix("junior") == "JR"
    assert normalize_suffix("3rd") == "III"
    assert normalize_suffix("PhD") == ""


def test_phonetic_key_brings_spelling_variants_together_and_keeps_others_apart():
    assert phonetic("Jon") == phonetic("John")
    assert phonetic("Catherine") == phonetic("Katherine")
    assert phonetic("MacDonald") == phonetic("McDonald")
    assert phonetic("Smith") != phonetic("Jones")
    assert phonetic("") == ""
    assert phonetic(None) == ""


@pytest.mark.parametrize(
    ("text", "iso", "precision"),
    [
        ("1980", "1980", "year"),
        ("1980-03", "1980-03", "month"),
        ("1980-03-12", "1980-03-12", "day"),
        ("19800312", "1980-03-12", "day"),
        ("198003", "1980-03", "month"),
        ("19800312143000+0100", "1980-03-12", "day"),
        ("1980-03-12T10:00:00Z", "1980-03-12", "day"),
        ("2000-02-29", "2000-02-29", "day"),
    ],
)
def test_birth_date_accepts_iso_and_hl7_forms(text, iso, precision):
    parsed = parse_birth_date(text, today=TODAY)
    assert parsed is not None
    assert parsed.iso == iso
    assert parsed.precision == precision


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1980-02-30", "day out of range for month"),
        ("1999-02-29", "day out of range for month"),
        ("19801301", "month out of range"),
        ("1849", "year before 1850"),
        ("2026-06-02", "in the future"),
        ("2027", "in the future"),
        ("garbage", "unrecognised format"),
        ("", "missing"),
        (None, "missing"),
    ],
)
def test_impossible_birth_dates_are_rejected_with_a_reason(text, problem):
    assert parse_birth_date(text, today=TODAY) is None
    assert birth_date_problem(text, today=TODAY) == problem


def test_partial_date_is_frozen():
    value = PartialDate(1980, 3)
    with pytest.raises(AttributeError):
        value.year = 1981  # type: ignore[misc]


@pytest.mark.parametrize(
    ("code", "expected"),
    [("M", "M"), ("male", "M"), ("F", "F"), ("female", "F"), ("O", "O"), ("other", "O"),
     ("A", "O"), ("U", "U"), ("unknown", "U"), ("N", "U"), ("Q", None), (None, None)],
)
def test_sex_codes_from_hl7_and_fhir(code, expected):
    assert normalize_sex(code) == expected


def test_nickname_variants_link_bob_and_robert_but_not_john_and_james():
    assert set(given_name_variants("BOB")) & set(given_name_variants("ROBERT"))
    assert not set(given_name_variants("JOHN")) & set(given_name_variants("JAMES"))


def test_phone_digits_are_the_same_for_different_layouts():
    assert normalize_phone("(555) 123-4567") == normalize_phone("555.123.4567")
    assert normalize_phone("+1 555 123 4567") == normalize_phone("555-123-4567")
    assert normalize_phone("12") == ""


def test_address_abbreviations_are_unified():
    long_form = normalize_address({"lines": ["12 North Main Street", "Apartment 4"]})
    short_form = normalize_address({"lines": ["12 N. Main St.", "Apt 4"]})
    assert long_form["tokens"] == short_form["tokens"] == ["12", "N", "MAIN", "ST", "4"]
    assert long_form["house_number"] == "12"


def test_ssn_like_identifiers_are_cleaned_and_placeholders_rejected():
    ssn = clean_identifier(
        {"domain": "2.16.840.1.113883.4.1", "value": "123-45-6788", "type": "SS"}
    )
    assert ssn is not None and ssn["value"] == "123456788" and ssn["person_level"]
    assert clean_identifier({"domain": "SSN", "value": "000-12-3456", "type": "SS"}) is None
    assert clean_identifier({"domain": "SSN", "value": "111-11-1111", "type": "SS"}) is None
    mrn = clean_identifier({"domain": "HOSP", "value": " a 12 ", "type": "MR"})
    assert mrn is not None and mrn["value"] == "A12" and not mrn["person_level"]


def test_normalize_record_covers_every_field():
    record = normalize_record(
        {
            "names": [
                {"family": "Smith-Jones", "given": ["Bob", "Paul"], "prefix": "Dr",
                 "suffix": "Jr", "use": "L"},
                {"family": "Doe", "given": ["Bob"], "use": "M"},
            ],
            "birth_date": "19800312",
            "sex": "male",
            "addresses": [{"lines": ["12 Main Street", "Apt 4"], "city": "Springfield",
                           "state": "IL", "postal_code": "62701-1234", "country": "US"}],
            "phones": [{"value": "(555) 123-4567", "use": "home"}],
            "mothers_maiden_name": "Doe",
            "multiple_birth": 2,
        },
        [{"domain": "HOSP", "value": "A-1", "type": "MR"}],
    )
    assert record["family"] == "SMITH JONES"
    assert record["family_tokens"] == ["SMITH", "JONES"]
    assert record["given"] == "BOB" and record["middle"] == "PAUL" and record["initial"] == "B"
    assert "ROBERT" in record["given_variants"]
    assert record["suffix"] == "JR" and record["prefix"] == "DR"
    assert record["previous_family"] == ["DOE"]
    assert record["birth_date"] == "1980-03-12" and record["birth_precision"] == "day"
    assert (record["birth_year"], record["birth_month"], record["birth_day"]) == (1980, 3, 12)
    assert record["sex"] == "M"
    assert record["phones"] == ["15551234567"]
    assert record["postal_codes"] == ["62701"]
    assert record["address_tokens"] == ["12", "MAIN", "ST", "4"]
    assert record["identifiers"][0]["value"] == "A-1"
    assert record["multiple_birth"] == 2


def test_particles_are_kept_apart_from_the_core_family_name():
    record = normalize_record({"names": [{"family": "van der Berg", "given": ["Anna"]}]})
    assert record["particles"] == ["VAN", "DER"]
    assert record["family_core"] == "BERG"
    assert record["family_key"] == "VANDERBERG"
    assert record["family_phonetic"] == phonetic("BERG")


def test_garbage_birth_date_is_reported_not_raised():
    record = normalize_record({"birth_date": "31/31/1980"})
    assert record["birth_date"] is None
    assert record["birth_date_problem"] == "unrecognised format"
    empty = normalize_record({})
    assert empty["family"] == "" and empty["birth_date_problem"] is None


def test_a_birth_date_after_today_is_kept_with_its_problem():
    """2062 typed for 2012 is a data entry error, still worth comparing: the record keeps it,
    flagged, while parse_birth_date (what a query may ask for) refuses it."""
    record = normalize_record({"names": [{"family": "Lee", "given": ["Ann"]}],
                               "birth_date": "2090-01-05"})
    assert (record["birth_date"], record["birth_precision"]) == ("2090-01-05", "day")
    assert record["birth_date_problem"] == "in the future"
    assert parse_birth_date("2090-01-05") is None
    assert birth_date_problem("2090-01-05") == "in the future"


def test_further_given_names_without_a_first_are_a_middle_name_not_the_given_name():
    """A first given name left blank (PID-5 LING^^LOUISE, a CSV row with only a middle name):
    LOUISE stays a middle name, so that the record does not read as another person LOUISE."""
    blank = normalize_record({"names": [{"family": "Ling", "given": ["", "Louise"]}]})
    assert (blank["given"], blank["given_tokens"], blank["middle"]) == ("", [], "LOUISE")
    assert blank["initial"] == "" and blank["given_phonetic"] == ""
    full = normalize_record({"names": [{"family": "Ling", "given": ["Betty", "Louise"]}]})
    assert (full["given"], full["middle"]) == ("BETTY", "LOUISE")
    # a title sent as the first given name folds away; the next one is still the given name
    titled = normalize_record({"names": [{"family": "Smith", "given": ["Dr", "John"]}]})
    assert (titled["given"], titled["middle"]) == ("JOHN", "")
