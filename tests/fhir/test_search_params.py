"""Search parameters generic clients use (issue 18 items 0 and 1): ``:contains`` inside words,
``_lastUpdated``, ``_sort``, ``_summary``, ``_elements`` and the FHIR date prefixes ``ne`` and
``ap`` on birthdate, over a real socket."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from tests.fhir.conftest import HOSPA, Fhir, patient
from tests.fhir.test_pixm import outcome

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED"}


async def feed(fhir: Fhir, value: str, family: str, given: str, born: str,
               **extra: Any) -> dict[str, Any]:  # fmt: skip
    status, body, _ = await fhir.put_patient(HOSPA, value, patient(HOSPA, value, family, given,
                                                                   born, **extra))
    assert status == 201, body
    return body  # type: ignore[no-any-return]


async def search(fhir: Fhir, params: Any, status: int = 200) -> Any:
    got, body, _ = await fhir.call("GET", "/Patient", params=params)
    assert got == status, body
    if status == 200:
        Bundle.model_validate(body)
    return body


def ids(bundle: Any) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e["resource"]["resourceType"] == "Patient"]


async def test_contains_matches_inside_words_of_names_and_city(fhir: Fhir) -> None:
    a = await feed(fhir, "K1", "Smith-Jones", "Mary Ann", "1970-01-01",
                   address=[{"city": "Springfield"}])
    b = await feed(fhir, "K2", "Jonesco", "Ann", "1970-01-02")
    assert set(ids(await search(fhir, {"family:contains": "jones"}))) == {a["id"], b["id"]}
    assert ids(await search(fhir, {"family:contains": "ith-jo"})) == [a["id"]]
    assert ids(await search(fhir, {"family:contains": "mith"})) == [a["id"]]
    assert set(ids(await search(fhir, {"given:contains": "nn"}))) == {a["id"], b["id"]}
    assert ids(await search(fhir, {"address-city:contains": "FIELD"})) == [a["id"]]
    assert ids(await search(fhir, {"family": "mith"})) == []  # default stays a prefix


async def test_last_updated_with_prefixes(fhir: Fhir) -> None:
    a = await feed(fhir, "L1", "Lagerlof", "Selma", "1958-11-20")
    b = await feed(fhir, "L2", "Lagerlof", "Sven", "1958-11-21")
    at = a["meta"]["lastUpdated"]
    assert ids(await search(fhir, {"family": "lagerlof", "_lastUpdated": f"gt{at}"})) == [
        b["id"]]
    assert ids(await search(fhir, {"family": "lagerlof", "_lastUpdated": f"le{at}"})) == [
        a["id"]]
    assert ids(await search(fhir, {"family": "lagerlof", "_lastUpdated": f"ne{at}"})) == [
        b["id"]]
    today = date.today().isoformat()
    assert len(ids(await search(fhir, {"_lastUpdated": today}))) == 2
    assert ids(await search(fhir, {"_lastUpdated": f"lt{today}"})) == []
    await search(fhir, {"_lastUpdated": "yesterday"}, status=400)


async def test_sort_orders_and_pages_in_that_order(fhir: Fhir) -> None:
    made = [await feed(fhir, f"S{i}", "Sorensen", given, born)
            for i, (given, born) in enumerate((("Bo", "1990-01-01"), ("Ada", "1970-01-01"),
                                               ("Cy", "1980-01-01")))]  # fmt: skip
    by_birth = [made[1]["id"], made[2]["id"], made[0]["id"]]
    assert ids(await search(fhir, {"family": "sorensen", "_sort": "birthdate"})) == by_birth
    assert ids(await search(fhir, {"family": "sorensen", "_sort": "-birthdate"})) == by_birth[::-1]
    assert ids(await search(fhir, {"family": "sorensen", "_sort": "-_lastUpdated"})) == [
        m["id"] for m in made[::-1]]
    page = await search(fhir, {"family": "sorensen", "_sort": "given", "_count": "2"})
    assert ids(page) == [made[1]["id"], made[0]["id"]]
    following = next(link["url"] for link in page["link"] if link["relation"] == "next")
    assert "_sort=given" in following
    status, rest, _ = await fhir.call("GET", following.removeprefix(fhir.base))
    assert status == 200 and ids(rest) == [made[2]["id"]]
    # an OR query is united by the door: sorted there the same way
    assert ids(await search(fhir, {"given": "bo,ada,cy", "_sort": "-birthdate"})) == (
        by_birth[::-1])
    await search(fhir, {"family": "sorensen", "_sort": "telecom"}, status=400)


async def test_summary_count_and_summary_true(fhir: Fhir) -> None:
    await feed(fhir, "M1", "Moberg", "Vilhelm", "1898-08-20",
               extension=[{"url": "http://hl7.org/fhir/StructureDefinition/"
                                  "patient-mothersMaidenName", "valueString": "Anna"}])
    counted = await search(fhir, {"family": "moberg", "_summary": "count"})
    assert counted["total"] == 1 and "entry" not in counted
    summary = await search(fhir, {"family": "moberg", "_summary": "true"})
    resource = summary["entry"][0]["resource"]
    assert "extension" not in resource and resource["name"][0]["family"] == "Moberg"
    assert SUBSETTED in resource["meta"]["tag"]
    await search(fhir, {"family": "moberg", "_summary": "everything"}, status=400)


async def test_elements_on_search_and_read(fhir: Fhir) -> None:
    a = await feed(fhir, "E1", "Ekelof", "Gunnar", "1907-09-15")
    found = await search(fhir, {"family": "ekelof", "_elements": "name,gender"})
    resource = found["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "name", "gender"}
    assert SUBSETTED in resource["meta"]["tag"]
    status, read, _ = await fhir.call("GET", f"/Patient/{a['id']}",
                                      params={"_elements": "birthDate"})
    assert status == 200 and set(read) == {"resourceType", "id", "meta", "birthDate"}


async def test_birthdate_ne_and_ap(fhir: Fhir) -> None:
    a = await feed(fhir, "N1", "Nexo", "Martin", "1869-06-26")
    b = await feed(fhir, "N2", "Nexo", "Andersen", "1870-06-26")
    assert ids(await search(fhir, {"family": "nexo", "birthdate": "ne1869"})) == [b["id"]]
    assert ids(await search(fhir, {"family": "nexo", "birthdate": "ne1869-06-26"})) == [
        b["id"]]
    # ap: a tenth of the distance from today (over 150 years: some 15 years) either side
    assert set(ids(await search(fhir, {"family": "nexo", "birthdate": "ap1875-01-01"}))) == {
        a["id"], b["id"]}
    recent = (date.today() - timedelta(days=100)).isoformat()
    c = await feed(fhir, "N3", "Nexo", "Recent", recent)
    near = (date.today() - timedelta(days=105)).isoformat()
    assert ids(await search(fhir, {"family": "nexo", "birthdate": f"ap{near}"})) == [c["id"]]
    body = await search(fhir, {"family": "nexo", "birthdate": "xx1869"}, status=400)
    outcome(body, "invalid")
