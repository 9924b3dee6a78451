"""PDQm ITI-78 search and read, on a real socket."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.bundle import Bundle

from tests.fhir.conftest import HOSPA, HOSPB, LAB, MPI_SYSTEM, Fhir, patient
from tests.fhir.test_pixm import outcome

MMN = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"


async def seed(fhir: Fhir) -> dict[str, str]:
    """Five records; returns identifier value -> Patient id."""
    people = [
        (HOSPA, "P1", patient(HOSPA, "P1", "Smith", "John", "1980-03-12", "male",
                              telecom=[{"system": "phone", "value": "+1 555 0100"}],
                              address=[{"line": ["12 Main Street"], "city": "Springfield",
                                        "state": "IL", "postalCode": "62704",
                                        "country": "US"}],
                              extension=[{"url": MMN, "valueString": "Jones"}])),
        (HOSPA, "P2", patient(HOSPA, "P2", "Smithers", "Waylon", "1975-07-01", "male")),
        (HOSPA, "P3", patient(HOSPA, "P3", "Smith", "Jane", "1980-11-30", "female")),
        (HOSPA, "P4", patient(HOSPA, "P4", "Brown", "Alice", "1990-01-05", "female",
                              address=[{"city": "Shelbyville", "postalCode": "62565",
                                        "country": "US", "state": "IL"}])),
        (LAB, "L5", patient(LAB, "L5", "Müller", "Jörg", "1962-02-02", "male")),
    ]
    ids = {}
    for system, value, resource in people:
        status, body, _ = await fhir.put_patient(system, value, resource,
                                                 client="LIS" if system == LAB else "ADT_A")
        assert status == 201, body
        ids[value] = body["id"]
    return ids


async def search(fhir: Fhir, params: Any, status: int = 200) -> Any:
    got, body, _ = await fhir.call("GET", "/Patient", params=params)
    assert got == status, body
    if status == 200:
        Bundle.model_validate(body)
        assert body["type"] == "searchset"
    return body


def values(bundle: Any) -> set[str]:
    return {i["value"] for e in bundle.get("entry", []) for i in e["resource"]["identifier"]
            if i["system"] != MPI_SYSTEM}


async def test_family_and_birthdate_default_is_case_insensitive_prefix(fhir: Fhir) -> None:
    await seed(fhir)
    body = await search(fhir, {"family": "smi", "birthdate": "1980-03-12"})
    assert body["total"] == 1 and values(body) == {"P1"}
    body = await search(fhir, {"family": "SMITH"})
    assert values(body) == {"P1", "P2", "P3"}


async def test_exact_modifier_matches_whole_value(fhir: Fhir) -> None:
    await seed(fhir)
    assert values(await search(fhir, {"family:exact": "Smith"})) == {"P1", "P3"}
    assert values(await search(fhir, {"family:exact": "Smi"})) == set()
    assert values(await search(fhir, {"given:contains": "Way"})) == {"P2"}


async def test_or_values_and_repeated_and_parameters(fhir: Fhir) -> None:
    await seed(fhir)
    assert values(await search(fhir, {"given": "john,jane"})) == {"P1", "P3"}
    both = [("family", "smith"), ("family", "smithe")]
    assert values(await search(fhir, both)) == {"P2"}
    mixed = [("family:exact", "smith,brown"), ("gender", "female")]
    assert values(await search(fhir, mixed)) == {"P3", "P4"}


async def test_birthdate_partial_dates_and_prefixes(fhir: Fhir) -> None:
    await seed(fhir)
    assert values(await search(fhir, {"birthdate": "1980"})) == {"P1", "P3"}
    assert values(await search(fhir, {"birthdate": "1980-11"})) == {"P3"}
    assert values(await search(fhir, [("birthdate", "ge1975-07-01"),
                                      ("birthdate", "lt1980-11")])) == {"P1", "P2"}
    assert values(await search(fhir, {"birthdate": "gt1980"})) == {"P4"}
    assert values(await search(fhir, {"birthdate": "le1962"})) == {"L5"}
    assert values(await search(fhir, {"birthdate": "ne1980"})) == {"P2", "P4", "L5"}
    body = await search(fhir, {"birthdate": "xx1980"}, status=400)
    outcome(body, "invalid")


async def test_gender_telecom_address_and_mothers_maiden_name(fhir: Fhir) -> None:
    await seed(fhir)
    assert values(await search(fhir, {"family": "smith", "gender": "female"})) == {"P3"}
    assert values(await search(fhir, {"telecom": "phone|+1-555-0100"})) == {"P1"}
    assert values(await search(fhir, {"address-city": "springfield"})) == {"P1"}
    assert values(await search(fhir, {"address-postalcode": "625"})) == {"P4"}
    assert values(await search(fhir, {"address-state": "IL"})) == {"P1", "P4"}
    assert values(await search(fhir, {"address-country": "us", "family": "brown"})) == {"P4"}
    assert values(await search(fhir, {"address": "main street"})) == {"P1"}
    assert values(await search(fhir, {"mothersMaidenName": "jones"})) == {"P1"}
    body = await search(fhir, {"gender": "maybe"}, status=400)
    outcome(body, "code-invalid")


async def test_identifier_search_and_id(fhir: Fhir) -> None:
    ids = await seed(fhir)
    assert values(await search(fhir, {"identifier": f"{HOSPA}|P2"})) == {"P2"}
    assert values(await search(fhir, {"identifier": "L5"})) == {"L5"}  # any domain
    body = await search(fhir, {"_id": f"{ids['P3']},{ids['P4']}"})
    assert values(body) == {"P3", "P4"}
    body = await search(fhir, {"_id": ids["P3"], "family": "brown"})
    assert body["total"] == 0
    body = await search(fhir, {"identifier": "urn:oid:9.9.9|X"}, status=404)
    outcome(body, "not-found", "targetSystem not found")


async def test_system_only_identifier_restricts_returned_domains(fhir: Fhir) -> None:
    await seed(fhir)
    body = await search(fhir, [("family", "smith"), ("identifier", f"{MPI_SYSTEM}|")])
    assert body["total"] == 3
    for entry in body["entry"]:
        assert [i["system"] for i in entry["resource"]["identifier"]] == [MPI_SYSTEM]
    # a patient left with no identifier in the requested domains is not returned
    body = await search(fhir, [("family", "m"), ("identifier", f"{LAB}|")])
    assert values(body) == {"L5"} and body["total"] == 1
    body = await search(fhir, [("family", "smith"), ("identifier", "urn:oid:9.9.9|")], 404)
    outcome(body, "not-found", "targetSystem not found")


async def test_paging_with_count_next_previous_and_total(fhir: Fhir) -> None:
    await seed(fhir)
    first = await search(fhir, {"family": "smith", "_count": "2"})
    assert first["total"] == 3 and len(first["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "previous" not in links
    status, second, _ = await fhir.call("GET", links["next"].split("/fhir", 1)[1])
    assert status == 200 and second["total"] == 3 and len(second["entry"]) == 1
    links2 = {link["relation"]: link["url"] for link in second["link"]}
    assert "next" not in links2 and "previous" in links2
    seen = [e["resource"]["id"] for e in first["entry"] + second["entry"]]
    assert len(set(seen)) == 3
    status, again, _ = await fhir.call("GET", links2["previous"].split("/fhir", 1)[1])
    assert [e["resource"]["id"] for e in again["entry"]] == seen[:2]


async def test_count_is_capped_by_max_page_size(fhir: Fhir) -> None:
    await seed(fhir)
    body = await search(fhir, {"family": "s", "_count": "100000"})
    next_links = [link["url"] for link in body["link"] if link["relation"] == "self"]
    assert f"_count={fhir.mpi.settings.fhir.max_page_size}" in next_links[0]
    assert body["entry"][-1]["search"]["mode"] == "outcome"  # and says so


async def test_no_match_is_200_with_total_0(fhir: Fhir) -> None:
    await seed(fhir)
    body = await search(fhir, {"family": "nobody"})
    assert body["total"] == 0 and "entry" not in body


async def test_post_search_with_form_body(fhir: Fhir) -> None:
    await seed(fhir)
    async with fhir.session.post(
        fhir.base + "/Patient/_search", data={"family": "brown", "gender": "female"},
        headers={"Accept": "application/fhir+json"},
    ) as response:
        assert response.status == 200
        body = await response.json(content_type=None)
    Bundle.model_validate(body)
    assert values(body) == {"P4"}


async def test_merged_patients_are_omitted_unless_active_false(fhir: Fhir) -> None:
    ids = await seed(fhir)
    merge = patient(HOSPA, "P3", "Smith", "Jane", active=False, link=[
        {"type": "replaced-by", "other": {"identifier": {"system": HOSPA, "value": "P1"}}}])
    status, _, _ = await fhir.put_patient(HOSPA, "P3", merge)
    assert status == 200
    assert values(await search(fhir, {"family:exact": "smith"})) == {"P1"}
    body = await search(fhir, {"family:exact": "smith", "active": "false"})
    assert values(body) == {"P3"}
    resource = body["entry"][0]["resource"]
    assert resource["active"] is False
    assert resource["link"] == [{"other": {"reference": f"Patient/{ids['P1']}"},
                                 "type": "replaced-by"}]


async def test_unsupported_format_and_accept_are_406(fhir: Fhir) -> None:
    body = await search(fhir, {"family": "x", "_format": "text/turtle"}, status=406)
    outcome(body, "not-supported")
    status, body, _ = await fhir.call("GET", "/Patient", params={"family": "x"},
                                      headers={"Accept": "text/html"})
    assert status == 406
    outcome(body, "not-supported")
    status, body, _ = await fhir.call("GET", "/Patient", params={"family": "x"},
                                      headers={"Accept": "text/html, */*;q=0.1"})
    assert status == 200


async def test_unknown_parameter_ignored_unless_strict(fhir: Fhir) -> None:
    await seed(fhir)
    assert values(await search(fhir, {"family": "brown", "shoe-size": "9"})) == {"P4"}
    status, body, _ = await fhir.call("GET", "/Patient",
                                      params={"family": "brown", "shoe-size": "9"},
                                      headers={"Prefer": "handling=strict"})
    assert status == 400
    outcome(body, "not-supported")


async def test_read_unknown_patient_is_404(fhir: Fhir) -> None:
    for path in ("/Patient/999999", "/Patient/abc"):
        status, body, _ = await fhir.call("GET", path)
        assert status == 404
        outcome(body, "not-found")


async def test_read_shows_enterprise_identifier_and_links_to_same_person(fhir: Fhir) -> None:
    same = {"identifier": [{"system": HOSPB, "value": "B9"}]}
    _, a, _ = await fhir.put_patient(HOSPA, "A9", patient(HOSPA, "A9", "Zed", "Zoe",
                                                          "2001-01-01", "female"))
    _, b, _ = await fhir.put_patient(HOSPB, "B9", patient(HOSPB, "B9", "Zed", "Zoe",
                                                          "2001-01-01", "female", **same),
                                     client="ADT_B")
    a_enterprise = [i for i in a["identifier"] if i["system"] == MPI_SYSTEM]
    b_enterprise = [i for i in b["identifier"] if i["system"] == MPI_SYSTEM]
    assert len(a_enterprise) == 1
    # the same name, birth date and gender in another domain: the matcher links them (its
    # probability is above matching.auto_link), so both records show one enterprise identifier
    assert b_enterprise == a_enterprise
    status, read, _ = await fhir.call("GET", f"/Patient/{a['id']}")
    assert status == 200
    assert read["identifier"] == a["identifier"]
    assert read["link"] == [{"other": {"reference": f"Patient/{b['id']}"}, "type": "seealso"}]
    status, read, _ = await fhir.call("GET", f"/Patient/{b['id']}")
    assert status == 200
    assert read["link"] == [{"other": {"reference": f"Patient/{a['id']}"}, "type": "seealso"}]


async def test_search_without_parameters_is_refused(fhir: Fhir) -> None:
    body = await search(fhir, {}, status=400)
    outcome(body, "too-costly")


async def test_enterprise_identifier_is_searchable_like_any_other(fhir: Fhir) -> None:
    ids = await seed(fhir)
    status, read, _ = await fhir.call("GET", f"/Patient/{ids['P4']}")
    eid = next(i["value"] for i in read["identifier"] if i["system"] == MPI_SYSTEM)
    body = await search(fhir, {"identifier": f"{MPI_SYSTEM}|{eid}"})
    assert values(body) == {"P4"}
    body = await search(fhir, {"identifier": f"{MPI_SYSTEM}|{eid}", "family": "smith"})
    assert body["total"] == 0
    body = await search(fhir, {"identifier": eid})
    assert values(body) == {"P4"}
    body = await search(fhir, {"identifier": f"{MPI_SYSTEM}|NO-SUCH-EID"})
    assert body["total"] == 0
