import json
from collections import Counter

import pytest

from matching.normalize import normalize_record, parse_birth_date
from matching.synth import (
    SOURCE_DOMAINS,
    generate,
    hl7_escape,
    read_csv,
    to_fhir_patient,
    to_hl7_adt_a04,
    write_csv,
    write_hl7,
    write_ndjson,
)


@pytest.fixture(scope="module")
def population():
    return generate(1500, 0.3, seed=5, hard=True)


def test_same_seed_same_population_other_seed_other_population(population):
    again = generate(1500, 0.3, seed=5, hard=True)
    assert [r.demographics for r in again] == [r.demographics for r in population]
    other = generate(1500, 0.3, seed=6, hard=True)
    assert [r.demographics for r in other] != [r.demographics for r in population]


def test_population_has_persons_duplicates_and_several_sources(population):
    persons = Counter(r.person_id for r in population)
    assert len(persons) == 1500
    duplicated = sum(1 for c in persons.values() if c > 1)
    assert 0.2 < duplicated / 1500 < 0.4
    assert {r.source_domain for r in population} == set(SOURCE_DOMAINS)
    assert len({r.record_id for r in population}) == len(population)


def test_duplicates_carry_the_listed_error_kinds(population):
    kinds = Counter(e for r in population for e in r.errors)
    for kind in ("family_typo", "nickname", "moved", "new_phone", "missing_fields"):
        assert kinds[kind] > 0, kind
    assert all(not r.errors for r in population if not r.duplicate)


def test_adversarial_groups_exist_and_are_different_people(population):
    groups: dict[tuple[str, str], set[str]] = {}
    for record in population:
        for kind, group in record.relations.items():
            groups.setdefault((kind, group), set()).add(record.person_id)
    kinds = Counter(kind for kind, _ in groups)
    assert kinds["twin"] > 10 and kinds["jr_sr"] > 10
    originals = {r.person_id: r for r in population if not r.duplicate}
    for (kind, _), persons in groups.items():
        if kind in ("twin", "jr_sr", "spouse"):
            assert len(persons) == 2, kind
        if kind == "twin":
            a, b = (originals[p].demographics for p in sorted(persons))
            assert a["birth_date"] == b["birth_date"]
            assert a["names"][0]["family"] == b["names"][0]["family"]
            assert a["names"][0]["given"][0] != b["names"][0]["given"][0]


def test_every_record_normalises_with_a_valid_birth_date_or_none(population):
    for record in population[:500]:
        normalized = normalize_record(record.demographics, record.identifiers)
        raw = record.demographics.get("birth_date")
        assert (normalized["birth_date"] is None) == (raw is None or parse_birth_date(raw) is None)


def test_100k_scale_is_fast_enough():
    import time

    started = time.perf_counter()
    generate(5000, 0.25, seed=1)
    assert time.perf_counter() - started < 10  # 100k persons take ~10 s on one core


def test_csv_round_trip_keeps_ground_truth(population, tmp_path):
    path = tmp_path / "people.csv"
    write_csv(population[:200], path)
    back = read_csv(path)
    assert [r.person_id for r in back] == [r.person_id for r in population[:200]]
    for before, after in zip(population[:200], back, strict=True):
        a = normalize_record(before.demographics, before.identifiers)
        b = normalize_record(after.demographics, after.identifiers)
        for key in ("family", "given", "birth_date", "postal_codes", "phones", "suffix",
                    "previous_family"):
            assert a[key] == b[key], key


def test_fhir_patient_has_identifiers_names_and_gender(population, tmp_path):
    record = population[0]
    patient = to_fhir_patient(record)
    assert patient["resourceType"] == "Patient"
    assert patient["identifier"][0]["system"].startswith("urn:oid:")
    assert patient["identifier"][0]["value"] == record.mrn
    assert patient["name"][0]["family"] == record.demographics["names"][0]["family"]
    assert patient["gender"] in {"male", "female", "other", "unknown"}
    path = tmp_path / "p.ndjson"
    write_ndjson(population[:20], path)
    lines = path.read_text().splitlines()
    assert len(lines) == 20 and all(json.loads(x)["resourceType"] == "Patient" for x in lines)


def test_hl7_escaping_of_delimiters():
    assert hl7_escape("A|B^C&D~E\\F") == "A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F"


def test_hl7_adt_a04_structure(population, tmp_path):
    record = next(r for r in population if r.demographics.get("addresses"))
    message = to_hl7_adt_a04(record, "MSG1", "20260101120000")
    segments = message.rstrip("\r").split("\r")
    assert [s[:3] for s in segments] == ["MSH", "EVN", "PID", "PV1"]
    msh = segments[0].split("|")
    assert msh[1] == "^~\\&" and msh[8] == "ADT^A04^ADT_A01" and msh[11] == "2.5"
    pid = segments[2].split("|")
    assert pid[3].startswith(record.mrn + "^^^" + record.source_domain + "&")
    assert pid[5].split("^")[0] == hl7_escape(record.demographics["names"][0]["family"])
    assert pid[7] == record.demographics["birth_date"].replace("-", "")
    path = tmp_path / "adt.hl7"
    write_hl7(population[:5], path)
    assert path.read_text().count("MSH|") == 5
