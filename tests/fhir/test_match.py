"""PDQm ITI-119 $match, on a real socket."""

from __future__ import annotations

import json
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from identity.fhir.door import MATCH_EXPLANATION, MATCH_GRADE
from tests.fhir.conftest import HOSPA, HOSPB, Fhir, patient
from tests.fhir.test_pixm import outcome


async def seed(fhir: Fhir) -> None:
    rows = [
        ("A1", patient(HOSPA, "A1", "Johansson", "Karin", "1984-05-17", "female",
                       telecom=[{"system": "phone", "value": "555-0101"}],
                       address=[{"line": ["1 Elm St"], "city": "Boston", "postalCode": "02134"}])),
        ("A2", patient(HOSPA, "A2", "Johanson", "Karen", "1984-05-17", "female")),
        ("A3", patient(HOSPA, "A3", "Peterson", "Lars", "1950-01-01", "male")),
    ]
    for value, resource in rows:
        status, body, _ = await fhir.put_patient(HOSPA, value, resource)
        assert status == 201, body


def parameters(resource: dict[str, Any], **extra: Any) -> dict[str, Any]:
    params: list[dict[str, Any]] = [{"name": "resource", "resource": resource}]
    if "only_certain" in extra:
        params.append({"name": "onlyCertainMatches", "valueBoolean": extra["only_certain"]})
    if "count" in extra:
        params.append({"name": "count", "valueInteger": extra["count"]})
    return {"resourceType": "Parameters", "parameter": params}


def query() -> dict[str, Any]:
    return patient(HOSPB, "Q1", "Johansson", "Karin", "1984-05-17", "female",
                   telecom=[{"system": "phone", "value": "555-0101"}],
                   address=[{"line": ["1 Elm St"], "city": "Boston", "postalCode": "02134"}])


def grades(bundle: Any) -> list[str]:
    """The match-grade of each entry, in the Bundle's order."""
    return [{x["url"]: x for x in e["search"]["extension"]}[MATCH_GRADE]["valueCode"]
            for e in bundle.get("entry", [])]


def local_ids(bundle: Any) -> list[str]:
    """The HOSPA identifier of each entry, in the Bundle's order."""
    return [i["value"] for e in bundle.get("entry", []) for i in e["resource"]["identifier"]
            if i["system"] == HOSPA]


async def match(fhir: Fhir, body: dict[str, Any], status: int = 200) -> Any:
    got, reply, _ = await fhir.call("POST", "/Patient/$match", body)
    assert got == status, reply
    if status == 200:
        Bundle.model_validate(reply)
        assert reply["type"] == "searchset"
    return reply


async def test_match_ranks_by_score_with_grade_and_explanation(fhir: Fhir) -> None:
    await seed(fhir)
    reply = await match(fhir, parameters(query()))
    entries = reply["entry"]
    assert entries, reply
    scores = [e["search"]["score"] for e in entries]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores)
    # A1 is the query itself; A2 (Karen Johanson, same birth date) differs by a letter in each
    # name and has no phone or address: certain too, but lower; A3 is no candidate at all
    assert local_ids(reply) == ["A1", "A2"]
    assert grades(reply) == ["certain", "certain"]
    assert scores[0] > scores[1]
    best = entries[0]
    by_url = {x["url"]: x for x in best["search"]["extension"]}
    parts = {x["url"]: x for x in by_url[MATCH_EXPLANATION]["extension"]}
    assert isinstance(parts["weight"]["valueDecimal"], float)
    assert isinstance(json.loads(parts["detail"]["valueString"]), dict)
    assert reply["total"] == len(entries)


async def test_match_takes_a_bare_patient_and_count(fhir: Fhir) -> None:
    await seed(fhir)
    reply = await match(fhir, parameters(query(), count=1))
    assert len(reply.get("entry", [])) == 1
    reply = await match(fhir, query())
    assert reply["entry"][0]["resource"]["identifier"][0]["value"] == "A1"


async def test_count_over_max_page_size_is_lowered_and_said(fhir: Fhir) -> None:
    await seed(fhir)
    reply = await match(fhir, parameters(query(), count=100000))
    assert [e["search"]["mode"] for e in reply["entry"]] == ["match", "match", "outcome"]
    assert reply["total"] == 2  # the matches
    issue = reply["entry"][-1]["resource"]["issue"][0]
    assert issue["expression"] == ["count"] and issue["severity"] == "information"
    assert str(fhir.mpi.settings.fhir.max_page_size) in issue["diagnostics"]


async def test_only_certain_matches_returns_the_single_certain_one_or_nothing(
    fhir: Fhir,
) -> None:
    await seed(fhir)
    # Lars Peterson: A3 is the one certain match, and the only entry returned
    lars = patient(HOSPB, "Q4", "Peterson", "Lars", "1950-01-01", "male")
    everything = await match(fhir, parameters(lars))
    assert (local_ids(everything), grades(everything)) == (["A3"], ["certain"])
    reply = await match(fhir, parameters(lars, only_certain=True))
    assert reply["total"] == 1
    assert [e["fullUrl"] for e in reply["entry"]] == [everything["entry"][0]["fullUrl"]]
    # Karin Johansson: two certain matches (A1, A2) are not a single certain one: nothing
    everything = await match(fhir, parameters(query()))
    assert (local_ids(everything), grades(everything)) == (["A1", "A2"], ["certain", "certain"])
    reply = await match(fhir, parameters(query(), only_certain=True))
    assert "entry" not in reply and reply["total"] == 0
    nobody = patient(HOSPB, "Q2", "Zzyzx", "Quentin", "1901-01-01", "male")
    reply = await match(fhir, parameters(nobody, only_certain=True))
    assert "entry" not in reply and reply["total"] == 0


async def test_no_match_is_an_empty_bundle(fhir: Fhir) -> None:
    await seed(fhir)
    reply = await match(fhir, parameters(patient(HOSPB, "Q3", "Zzyzx", "Quentin", "1901-01-01",
                                                 "male")))
    # a searchset Bundle with total 0 and no entry element (FHIR JSON has no empty arrays)
    assert reply["total"] == 0 and "entry" not in reply


async def test_unknown_modifier_extension_is_400(fhir: Fhir) -> None:
    resource = query()
    resource["modifierExtension"] = [{"url": "http://example.org/x", "valueBoolean": True}]
    reply = await match(fhir, parameters(resource), status=400)
    outcome(reply, "not-supported")


async def test_missing_resource_parameter_is_400(fhir: Fhir) -> None:
    reply = await match(fhir, {"resourceType": "Parameters", "parameter": [
        {"name": "count", "valueInteger": 3}]}, status=400)
    outcome(reply, "required")
