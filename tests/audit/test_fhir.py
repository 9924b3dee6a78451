"""The FHIR AuditEvent of each kind of record: valid R4 (fhir.resources' R4B models) and in the
IHE BALP shapes."""

from __future__ import annotations

import base64

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from identity.audit.fhir import audit_event, type_code
from identity.audit.record import AuditRecord

from .helpers import (
    HOSPA,
    PIX_QUERY,
    every_kind,
    feed,
    pdqm_query,
    pix_query,
    pixm_feed,
    pixm_query,
    refused_query,
    steward_link,
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"
IHE = "urn:ihe:event-type-code"
REST = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"


def valid(record: AuditRecord, id: str | None = "7") -> dict:
    event = audit_event(record, id=id)
    AuditEvent.model_validate(event)
    return event


def codes(codings: list[dict]) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in codings]


def agent(event: dict, code: str) -> dict:
    [found] = [a for a in event["agent"] if a.get("type", {}).get("coding", [{}])[0].get("code")
               == code]  # fmt: skip
    return found


def entities(event: dict, type_code: str, role: str) -> list[dict]:
    return [e for e in event.get("entity", ())
            if e["type"]["code"] == type_code and e.get("role", {}).get("code") == role]


@pytest.mark.parametrize("record", every_kind(), ids=lambda r: f"{r.transaction}-{r.action}")
def test_every_record_is_a_valid_audit_event(record: AuditRecord) -> None:
    event = valid(record)
    assert event["resourceType"] == "AuditEvent" and event["id"] == "7"
    assert event["outcome"] in {"0", "4", "8", "12"}
    assert event["source"]["observer"]["identifier"]["value"] == "identity-test"
    assert event["source"]["type"][0]["code"] == "4"
    assert event["type"]["code"] == type_code(record)


def test_pixm_query_is_balp_patient_query() -> None:
    """PIXm IHE.PIXm.Query.Audit.Manager (BALP PatientQuery): type rest, subtype search and
    ITI-83, action E, client 110153 / server 110152 with network, the patient as an
    identifier, the query base64 (type 2 role 24), the X-Request-Id."""
    event = valid(pixm_query())
    assert (event["type"]["system"], event["type"]["code"]) == (REST, "rest")
    assert codes(event["subtype"]) == [(INTERACTION, "search"), (IHE, "ITI-83")]
    assert event["action"] == "E" and event["outcome"] == "0"
    client = agent(event, "110153")
    assert client["who"]["identifier"]["value"] == "PIXM_APP" and client["requestor"] is False
    assert client["network"] == {"address": "10.1.2.6", "type": "2"}
    server = agent(event, "110152")
    assert server["who"]["identifier"]["value"] == "https://mpi.example.org/fhir"
    assert server["network"]["type"] == "5"
    user = agent(event, "IRCP")
    assert user["requestor"] is True and user["who"]["identifier"]["value"] == "dr.who"
    assert user["role"][0]["coding"][0]["code"] == "system/Patient.read"
    [patient] = entities(event, "1", "1")
    assert patient["what"] == {"identifier": {"system": f"urn:oid:{HOSPA}", "value": "HA1001"}}
    [query] = entities(event, "2", "24")
    assert base64.b64decode(query["query"]).startswith(b"GET /fhir/Patient/$ihe-pix")
    [transaction] = [e for e in event["entity"] if e["type"]["code"] == "XrequestId"]
    assert transaction["what"]["identifier"]["value"] == "req-83"


def test_pdqm_query_without_result_has_no_patient() -> None:
    [record] = pdqm_query()
    event = valid(record)
    assert codes(event["subtype"]) == [(INTERACTION, "search"), (IHE, "ITI-78")]
    assert entities(event, "1", "1") == []


def test_pixm_feed_is_balp_patient_create_update_delete() -> None:
    for action, interaction in (("C", "create"), ("U", "update"), ("D", "delete")):
        event = valid(pixm_feed(action))
        assert event["action"] == action
        assert codes(event["subtype"]) == [(INTERACTION, interaction), (IHE, "ITI-104")]
        [patient] = entities(event, "1", "1")
        assert patient["what"]["identifier"]["value"] == "HA1002"
        [data] = entities(event, "2", "4")
        assert data["what"] == {"reference": "Patient/3"}


def test_v2_records_keep_the_dicom_event_as_type() -> None:
    event = valid(feed("C"))
    assert (event["type"]["system"], event["type"]["code"]) == (DCM, "110110")
    assert codes(event["subtype"]) == [(IHE, "ITI-8")]
    assert event["action"] == "C"
    assert agent(event, "110153")["who"]["identifier"]["value"] == "ADT_A|HOSPA"
    assert agent(event, "110152")["altId"].isdigit()
    for patient in entities(event, "1", "1"):
        assert patient["detail"] == [{"type": "MSH-10",
                                      "valueBase64Binary": base64.b64encode(b"HOSPA-000001")
                                      .decode()}]  # fmt: skip
    event = valid(pix_query())
    assert event["type"]["code"] == "110112" and event["action"] == "E"
    [query] = entities(event, "2", "24")
    assert base64.b64decode(query["query"]) == PIX_QUERY
    assert query["detail"][0]["type"] == "MSH-10"


def test_refused_and_steward() -> None:
    event = valid(refused_query())
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "the token has no system/Patient.read scope"
    event = valid(steward_link())
    assert event["type"]["code"] == "110110"
    assert codes(event["subtype"]) == [
        ("https://identity.example.org/fhir/CodeSystem/audit-event-type", "steward-link")]
    steward = agent(event, "AUT")
    assert steward["requestor"] is True and steward["name"] == "Sue Steward"
    assert len(entities(event, "1", "1")) == 2


def test_pmir_feed_is_execute() -> None:
    """PMIR IHE.PMIR.Feed.Audit: type 110110, subtype ITI-93, action E."""
    [event] = [valid(r) for r in every_kind() if r.transaction == "ITI-93"]
    assert event["type"]["code"] == "110110" and event["action"] == "E"
    assert codes(event["subtype"]) == [(IHE, "ITI-93")]
