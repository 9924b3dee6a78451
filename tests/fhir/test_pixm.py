"""PIXm: ITI-83 $ihe-pix and ITI-104 Patient Identity Feed FHIR, on a real socket."""

from __future__ import annotations

from typing import Any

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.patient import Patient

from identity.errors import UnknownIdentifier
from identity.model import AuthorityRef, IdentifierRef
from tests.fhir.conftest import HOSPA, HOSPB, LAB, MPI_SYSTEM, NATIONAL, Fhir, patient


def outcome(body: Any, code: str, diagnostics: str | None = None) -> None:
    """A bare OperationOutcome with one error issue of ``code``."""
    OperationOutcome.model_validate(body)
    assert body["resourceType"] == "OperationOutcome"
    assert [i["code"] for i in body["issue"]] == [code]
    assert body["issue"][0]["severity"] == "error"
    if diagnostics is not None:
        assert body["issue"][0]["diagnostics"] == diagnostics


def targets(body: Any) -> tuple[set[tuple[str, str]], set[str]]:
    Parameters.model_validate(body)
    idents = {(p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
              for p in body.get("parameter", []) if p["name"] == "targetIdentifier"}
    ids = {p["valueReference"]["reference"] for p in body.get("parameter", [])
           if p["name"] == "targetId"}
    return idents, ids


async def linked_pair(fhir: Fhir) -> tuple[str, str, str]:
    """A1 in HOSPA and B1 in HOSPB, same demographics and national id: one person."""
    national = {"identifier": [{"system": HOSPA, "value": "A1"},
                               {"system": NATIONAL, "value": "123-45-6789"}]}
    s1, a, _ = await fhir.put_patient(HOSPA, "A1", patient(HOSPA, "A1", **national))
    national["identifier"][0] = {"system": HOSPB, "value": "B1"}
    s2, b, _ = await fhir.put_patient(HOSPB, "B1", patient(HOSPB, "B1", **national),
                                      client="ADT_B")
    assert (s1, s2) == (201, 201)
    eid = next(i["value"] for i in a["identifier"] if i["system"] == MPI_SYSTEM)
    return a["id"], b["id"], eid


# --- ITI-83 -------------------------------------------------------------------------------


async def test_pix_query_returns_other_domains_and_their_patients_never_the_source(
    fhir: Fhir,
) -> None:
    a_id, b_id, eid = await linked_pair(fhir)
    status, body, _ = await fhir.call("GET", "/Patient/$ihe-pix",
                                      params={"sourceIdentifier": f"{HOSPA}|A1"})
    assert status == 200
    idents, ids = targets(body)
    assert idents == {(HOSPB, "B1"), (MPI_SYSTEM, eid), (NATIONAL, "123-45-6789")}
    assert ids == {f"Patient/{b_id}"}
    assert (HOSPA, "A1") not in idents and f"Patient/{a_id}" not in ids


async def test_pix_query_target_system_restricts_and_enterprise_domain_is_queryable(
    fhir: Fhir,
) -> None:
    _, b_id, eid = await linked_pair(fhir)
    status, body, _ = await fhir.call(
        "GET", "/Patient/$ihe-pix",
        params=[("sourceIdentifier", f"{HOSPA}|A1"), ("targetSystem", MPI_SYSTEM)])
    assert status == 200
    assert targets(body) == ({(MPI_SYSTEM, eid)}, set())
    status, body, _ = await fhir.call(
        "GET", "/Patient/$ihe-pix",
        params=[("sourceIdentifier", f"{MPI_SYSTEM}|{eid}"), ("targetSystem", HOSPB)])
    assert status == 200
    assert targets(body) == ({(HOSPB, "B1")}, {f"Patient/{b_id}"})


async def test_pix_query_by_post_parameters(fhir: Fhir) -> None:
    _, b_id, _ = await linked_pair(fhir)
    request = {"resourceType": "Parameters", "parameter": [
        {"name": "sourceIdentifier", "valueIdentifier": {"system": HOSPA, "value": "A1"}},
        {"name": "targetSystem", "valueUri": HOSPB},
    ]}
    status, body, _ = await fhir.call("POST", "/Patient/$ihe-pix", request)
    assert status == 200
    assert targets(body) == ({(HOSPB, "B1")}, {f"Patient/{b_id}"})


async def test_pix_query_unknown_identifier_in_known_domain_is_404_not_found(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("GET", "/Patient/$ihe-pix",
                                      params={"sourceIdentifier": f"{HOSPA}|NOPE"})
    assert status == 404
    outcome(body, "not-found", "sourceIdentifier Patient Identifier not found")


async def test_pix_query_unknown_source_domain_is_400_code_invalid(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("GET", "/Patient/$ihe-pix",
                                      params={"sourceIdentifier": "urn:oid:9.9.9|A1"})
    assert status == 400
    outcome(body, "code-invalid", "sourceIdentifier Assigning Authority not found")


async def test_pix_query_unknown_target_system_is_403_code_invalid(fhir: Fhir) -> None:
    await linked_pair(fhir)
    status, body, _ = await fhir.call(
        "GET", "/Patient/$ihe-pix",
        params=[("sourceIdentifier", f"{HOSPA}|A1"), ("targetSystem", "urn:oid:9.9.9")])
    assert status == 403
    outcome(body, "code-invalid", "targetSystem not found")


async def test_pix_query_unsupported_format_is_406(fhir: Fhir) -> None:
    status, body, _ = await fhir.call(
        "GET", "/Patient/$ihe-pix",
        params={"sourceIdentifier": f"{HOSPA}|A1", "_format": "text/turtle"})
    assert status == 406
    outcome(body, "not-supported")


async def test_pix_query_without_source_identifier_is_400(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("GET", "/Patient/$ihe-pix")
    assert status == 400
    outcome(body, "required")


# --- ITI-104 ------------------------------------------------------------------------------


async def test_feed_conditional_put_creates_201_then_updates_200_with_versions(
    fhir: Fhir,
) -> None:
    status, body, response = await fhir.put_patient(HOSPA, "A7", patient(HOSPA, "A7"))
    assert status == 201
    Patient.model_validate(body)
    assert response.headers["Location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert response.headers["ETag"] == 'W/"1"'
    assert body["meta"]["versionId"] == "1"
    update = patient(HOSPA, "A7", family="Smythe")
    status, body2, response = await fhir.put_patient(HOSPA, "A7", update)
    assert status == 200
    assert "Location" not in response.headers
    assert body2["id"] == body["id"]
    assert body2["meta"]["versionId"] == "2" and response.headers["ETag"] == 'W/"2"'
    assert body2["name"][0]["family"] == "Smythe"
    status, read, response = await fhir.call("GET", f"/Patient/{body['id']}")
    assert status == 200 and read["name"][0]["family"] == "Smythe"
    assert response.headers["ETag"] == 'W/"2"'


async def test_feed_put_of_the_same_patient_again_is_200_without_a_new_version(
    fhir: Fhir,
) -> None:
    first = patient(HOSPA, "A9", telecom=[{"system": "phone", "value": "555-0199"}])
    status, body, _ = await fhir.put_patient(HOSPA, "A9", first)
    assert status == 201
    status, again, response = await fhir.put_patient(HOSPA, "A9", first)  # e.g. a retry
    assert status == 200 and "Location" not in response.headers
    Patient.model_validate(again)
    assert again["id"] == body["id"]
    assert again["meta"]["versionId"] == "1" and response.headers["ETag"] == 'W/"1"'
    assert again["meta"]["lastUpdated"] == body["meta"]["lastUpdated"]
    status, changed, response = await fhir.put_patient(
        HOSPA, "A9", patient(HOSPA, "A9", telecom=[{"system": "phone", "value": "555-0200"}]))
    assert status == 200 and changed["meta"]["versionId"] == "2"


async def test_feed_put_replaces_demographics(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "A8", patient(HOSPA, "A8", telecom=[
        {"system": "phone", "value": "555-0100"}]))
    status, body, _ = await fhir.put_patient(HOSPA, "A8", patient(HOSPA, "A8", gender=None))
    assert status == 200
    assert "telecom" not in body and "gender" not in body


async def test_feed_from_unauthorized_client_is_403_and_nothing_stored(fhir: Fhir) -> None:
    status, body, _ = await fhir.put_patient(HOSPA, "A9", patient(HOSPA, "A9"), client="ADT_B")
    assert status == 403
    outcome(body, "forbidden")
    with pytest.raises(UnknownIdentifier):
        await fhir.mpi.find_record(
            IdentifierRef(value="A9", authority=AuthorityRef(oid="1.2.3.4.5.1")))


async def test_feed_invalid_patient_is_400_listing_the_problems(fhir: Fhir) -> None:
    bad = patient(HOSPA, "A10", gender="yes", birth_date="1980-13-45")
    status, body, _ = await fhir.put_patient(HOSPA, "A10", bad)
    assert status == 400
    OperationOutcome.model_validate(body)
    assert len(body["issue"]) == 2
    text = " ".join(i["diagnostics"] for i in body["issue"])
    assert "gender" in text and "birthDate" in text


async def test_feed_patient_without_name_or_identifier_is_400(fhir: Fhir) -> None:
    bad = patient(HOSPA, "A11")
    del bad["name"]
    status, body, _ = await fhir.put_patient(HOSPA, "A11", bad)
    assert status == 400
    outcome(body, "required")
    assert body["issue"][0]["expression"] == ["Patient.name"]
    bad = patient(HOSPA, "A11")
    del bad["identifier"]
    status, body, _ = await fhir.put_patient(HOSPA, "A11", bad)
    assert status == 400
    outcome(body, "required")
    assert body["issue"][0]["expression"] == ["Patient.identifier"]


async def test_feed_body_neither_json_nor_xml_is_415(fhir: Fhir) -> None:
    status, body, _ = await fhir.call(
        "PUT", "/Patient", None, client="ADT_A", params={"identifier": f"{HOSPA}|A1"},
        headers={"Content-Type": "text/plain"})
    assert status == 415
    outcome(body, "not-supported")


async def test_feed_put_without_identifier_condition_is_rejected(fhir: Fhir) -> None:
    status, body, _ = await fhir.call("PUT", "/Patient", patient(HOSPA, "A1"), client="ADT_A")
    assert status == 400
    outcome(body, "required")
    status, body, _ = await fhir.call(
        "PUT", "/Patient", patient(HOSPA, "A1"), client="ADT_A",
        params=[("identifier", f"{HOSPA}|A1"), ("identifier", f"{HOSPA}|A2")])
    assert status == 412
    outcome(body, "multiple-matches")
    status, body, _ = await fhir.call(
        "PUT", "/Patient", patient(HOSPA, "A1"), client="ADT_A",
        params={"identifier": "A1"})
    assert status == 400
    outcome(body, "required")


async def test_feed_if_match_with_stale_version_is_412(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "A12", patient(HOSPA, "A12"))
    await fhir.put_patient(HOSPA, "A12", patient(HOSPA, "A12", family="Jones"))
    status, body, _ = await fhir.call(
        "PUT", "/Patient", patient(HOSPA, "A12", family="Brown"), client="ADT_A",
        params={"identifier": f"{HOSPA}|A12"}, headers={"If-Match": 'W/"1"'})
    assert status == 412
    outcome(body, "conflict")
    status, body, _ = await fhir.call(
        "PUT", "/Patient", patient(HOSPA, "A12", family="Brown"), client="ADT_A",
        params={"identifier": f"{HOSPA}|A12"}, headers={"If-Match": 'W/"2"'})
    assert status == 200 and body["meta"]["versionId"] == "3"


async def test_feed_merge_by_put_of_retired_identifier_with_replaced_by_link(fhir: Fhir) -> None:
    _, survivor, _ = await fhir.put_patient(HOSPA, "S1", patient(HOSPA, "S1"))
    _, retired, _ = await fhir.put_patient(HOSPA, "R1", patient(HOSPA, "R1", family="Smyth"))
    merge = patient(HOSPA, "R1", family="Smyth", active=False, link=[
        {"type": "replaced-by", "other": {"identifier": {"system": HOSPA, "value": "S1"}}}])
    status, body, _ = await fhir.put_patient(HOSPA, "R1", merge)
    assert status == 200
    Patient.model_validate(body)
    assert body["id"] == retired["id"] and body["active"] is False
    assert body["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"},
                             "type": "replaced-by"}]
    status, read, _ = await fhir.call("GET", f"/Patient/{retired['id']}")
    assert status == 200 and read["active"] is False
    assert read["link"][0]["type"] == "replaced-by"
    status, body, _ = await fhir.call("GET", "/Patient/$ihe-pix",
                                      params={"sourceIdentifier": f"{HOSPA}|R1"})
    assert status == 404
    # an update of the retired identifier does not silently unmerge it
    status, body, _ = await fhir.put_patient(HOSPA, "R1", patient(HOSPA, "R1"))
    assert status == 422
    outcome(body, "business-rule")


async def test_feed_merge_across_domains_is_refused(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "R2", patient(HOSPA, "R2"))
    merge = patient(HOSPA, "R2", active=False, link=[
        {"type": "replaced-by", "other": {"identifier": {"system": LAB, "value": "L1"}}}])
    status, body, _ = await fhir.put_patient(HOSPA, "R2", merge)
    assert status == 422
    outcome(body, "business-rule")


async def test_feed_conditional_delete_removes_and_id_is_never_returned(fhir: Fhir) -> None:
    a_id, _, eid = await linked_pair(fhir)
    status, body, _ = await fhir.call("DELETE", "/Patient", client="ADT_A",
                                      params={"identifier": f"{HOSPA}|A1"})
    assert status == 204 and body is None
    status, body, _ = await fhir.call("GET", f"/Patient/{a_id}")
    assert status == 410
    outcome(body, "deleted")
    status, body, _ = await fhir.call("GET", "/Patient/$ihe-pix",
                                      params={"sourceIdentifier": f"{HOSPB}|B1"})
    assert status == 200
    # B1's person keeps its enterprise and national identifiers; A1 is gone from it
    assert targets(body) == ({(MPI_SYSTEM, eid), (NATIONAL, "123-45-6789")}, set())
    status, body, _ = await fhir.call("GET", "/Patient", params={"identifier": f"{HOSPA}|A1"})
    assert status == 200 and body["total"] == 0
    status, body, _ = await fhir.call("DELETE", "/Patient", client="ADT_A",
                                      params={"identifier": f"{HOSPA}|A1"})
    assert status == 404
    outcome(body, "not-found")


async def test_feed_delete_by_unauthorized_client_is_403(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "A13", patient(HOSPA, "A13"))
    status, body, _ = await fhir.call("DELETE", "/Patient", client="ADT_B",
                                      params={"identifier": f"{HOSPA}|A13"})
    assert status == 403
    outcome(body, "forbidden")


async def test_feed_merge_repeated_is_idempotent_and_unknown_retired_is_404(fhir: Fhir) -> None:
    await fhir.put_patient(HOSPA, "S3", patient(HOSPA, "S3"))
    _, retired, _ = await fhir.put_patient(HOSPA, "R3", patient(HOSPA, "R3"))
    merge = patient(HOSPA, "R3", active=False, link=[
        {"type": "replaced-by", "other": {"identifier": {"system": HOSPA, "value": "S3"}}}])
    first = await fhir.put_patient(HOSPA, "R3", merge)
    again = await fhir.put_patient(HOSPA, "R3", merge)
    assert (first[0], again[0]) == (200, 200)
    assert again[1]["id"] == retired["id"] and again[1]["active"] is False
    unknown = patient(HOSPA, "R4", active=False, link=[
        {"type": "replaced-by", "other": {"identifier": {"system": HOSPA, "value": "S3"}}}])
    status, body, _ = await fhir.put_patient(HOSPA, "R4", unknown)
    assert status == 404
    outcome(body, "not-found")


async def test_feed_merge_into_unknown_survivor_changes_the_identifier(fhir: Fhir) -> None:
    _, old, _ = await fhir.put_patient(HOSPA, "R5", patient(HOSPA, "R5"))
    merge = patient(HOSPA, "R5", active=False, link=[
        {"type": "replaced-by", "other": {"identifier": {"system": HOSPA, "value": "S5"}}}])
    status, body, _ = await fhir.put_patient(HOSPA, "R5", merge)
    assert status == 200
    Patient.model_validate(body)
    assert body["id"] == old["id"]
    assert {"use": "usual", "system": HOSPA, "value": "S5"} in body["identifier"]
    status, _, _ = await fhir.call("GET", "/Patient/$ihe-pix",
                                   params={"sourceIdentifier": f"{HOSPA}|R5"})
    assert status == 404
