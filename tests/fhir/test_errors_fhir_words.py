"""Errors speak FHIR (issue 18 item 0): an OperationOutcome names identifier systems as FHIR
does, never the core's domain names or HL7 v2 forms (``http://...&&``)."""

from __future__ import annotations

from tests.fhir.conftest import HOSPA, Fhir, patient
from tests.fhir.test_pixm import outcome

UNKNOWN = "http://example.org/fhir/mrn"


def diagnostics(body: dict[str, object]) -> str:
    issues = body["issue"]
    assert isinstance(issues, list)
    return " ".join(str(i["diagnostics"]) for i in issues)


async def test_an_unknown_system_is_named_as_its_uri(fhir: Fhir) -> None:
    status, body, _ = await fhir.put_patient(UNKNOWN, "X1", patient(UNKNOWN, "X1"))
    assert status == 400
    outcome(body, "code-invalid")
    text = diagnostics(body)
    assert UNKNOWN in text and "&" not in text and "assigning authority" not in text
    status, body, _ = await fhir.call("POST", "/Patient", patient(UNKNOWN, "X1"),
                                      client="ADT_A")
    assert status == 400
    text = diagnostics(body)
    assert UNKNOWN in text and "&" not in text
    assert body["issue"][0]["expression"] == ["Patient.identifier.system"]


async def test_a_forbidden_domain_and_an_unknown_identifier_name_the_system(
    fhir: Fhir,
) -> None:
    status, body, _ = await fhir.put_patient(HOSPA, "X2", patient(HOSPA, "X2"), client="LIS")
    assert status == 403
    text = diagnostics(body)
    assert HOSPA in text and "domain HOSPA" not in text
    status, body, _ = await fhir.call("DELETE", "/Patient", client="ADT_A",
                                      params={"identifier": f"{HOSPA}|X3"})
    assert status == 404
    text = diagnostics(body)
    assert HOSPA in text and "domain HOSPA" not in text


async def test_a_pmir_entry_error_names_the_system(fhir: Fhir) -> None:
    from tests.fhir.test_pmir import message, post

    entry = {"resource": patient(UNKNOWN, "X4"), "request": {"method": "POST", "url": "Patient"}}
    reply = await post(fhir, message([entry]))
    failed = reply["entry"][1]["resource"]["entry"][0]["response"]
    assert failed["status"] == "400"
    text = diagnostics(failed["outcome"])
    assert UNKNOWN in text and "&" not in text


async def test_a_change_to_a_merged_or_removed_patient_names_it_by_its_system(
    fhir: Fhir,
) -> None:
    for value, family in (("X5", "Smith"), ("X6", "Jones"), ("X7", "Brown")):
        status, _, _ = await fhir.put_patient(HOSPA, value, patient(HOSPA, value, family))
        assert status == 201
    merge = patient(HOSPA, "X5", active=False, link=[{
        "type": "replaced-by", "other": {"identifier": {"system": HOSPA, "value": "X6"}}}])
    status, _, _ = await fhir.put_patient(HOSPA, "X5", merge)
    assert status == 200
    status, body, _ = await fhir.put_patient(HOSPA, "X5", patient(HOSPA, "X5"))
    assert status == 422
    outcome(body, "business-rule")
    text = diagnostics(body)
    assert f"{HOSPA}|X5" in text and "replaced-by" in text

    status, _, _ = await fhir.call("DELETE", "/Patient", client="ADT_A",
                                   params={"identifier": f"{HOSPA}|X7"})
    assert status == 204
    merge = patient(HOSPA, "X6", active=False, link=[{
        "type": "replaced-by", "other": {"identifier": {"system": HOSPA, "value": "X7"}}}])
    status, body, _ = await fhir.put_patient(HOSPA, "X6", merge)
    assert status == 422
    text = diagnostics(body)
    assert f"{HOSPA}|X7" in text and "surviving identifier" not in text
    assert body["issue"][0]["expression"] == ["Patient.link.other"]
