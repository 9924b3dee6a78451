"""The DICOM AuditMessage (PS3.15 A.5) of each kind of record.

The structure is checked against the schema of DICOM PS3.15 A.5.1 as written out below (element
order, cardinality, required and optional attributes, enumerated values), and the codes of each
transaction against its audit message in the IHE ITI Technical Framework."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import pytest
from lxml import etree

from identity.audit.dicom import audit_message, to_xml
from identity.audit.record import AuditRecord

from .helpers import (
    HOSPA,
    PDQ_QUERY,
    PIX_QUERY,
    every_kind,
    feed,
    pdq_query,
    pdqm_query,
    pix_query,
    pixm_query,
    refused_feed,
    refused_query,
    steward_link,
)

# --- DICOM PS3.15 A.5.1, as a table ------------------------------------------------------

CODED = frozenset({"csd-code", "codeSystemName", "originalText"})


@dataclass(frozen=True)
class Shape:
    children: tuple[tuple[tuple[str, ...], int, int | None], ...] = ()  # (names, min, max)
    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    text: bool = False


def _coded() -> Shape:
    return Shape(required=CODED, optional=frozenset({"displayName"}))


SHAPES: dict[str, Shape] = {
    "AuditMessage": Shape(children=(
        (("EventIdentification",), 1, 1),
        (("ActiveParticipant",), 1, None),
        (("AuditSourceIdentification",), 1, 1),
        (("ParticipantObjectIdentification",), 0, None),
    )),
    "EventIdentification": Shape(
        children=(
            (("EventID",), 1, 1),
            (("EventTypeCode",), 0, None),
            (("EventOutcomeDescription",), 0, 1),
            (("PurposeOfUse",), 0, None),
        ),
        required=frozenset({"EventDateTime", "EventOutcomeIndicator"}),
        optional=frozenset({"EventActionCode"}),
    ),
    "ActiveParticipant": Shape(
        children=((("RoleIDCode",), 0, None), (("MediaIdentifier",), 0, 1)),
        required=frozenset({"UserID", "UserIsRequestor"}),
        optional=frozenset({"AlternativeUserID", "UserName", "NetworkAccessPointID",
                            "NetworkAccessPointTypeCode"}),
    ),
    "AuditSourceIdentification": Shape(
        children=((("AuditSourceTypeCode",), 0, None),),
        required=frozenset({"AuditSourceID"}),
        optional=frozenset({"AuditEnterpriseSiteID"}),
    ),
    "ParticipantObjectIdentification": Shape(
        children=(
            (("ParticipantObjectIDTypeCode",), 1, 1),
            (("ParticipantObjectName", "ParticipantObjectQuery"), 0, 1),
            (("ParticipantObjectDetail",), 0, None),
            (("ParticipantObjectDescription",), 0, None),
        ),
        required=frozenset({"ParticipantObjectID"}),
        optional=frozenset({"ParticipantObjectTypeCode", "ParticipantObjectTypeCodeRole",
                            "ParticipantObjectDataLifeCycle", "ParticipantObjectSensitivity"}),
    ),
    "ParticipantObjectDetail": Shape(required=frozenset({"type", "value"})),
    "ParticipantObjectQuery": Shape(text=True),
    "ParticipantObjectName": Shape(text=True),
    "EventOutcomeDescription": Shape(text=True),
    **{name: _coded() for name in ("EventID", "EventTypeCode", "PurposeOfUse", "RoleIDCode",
                                   "AuditSourceTypeCode", "ParticipantObjectIDTypeCode")},
}  # fmt: skip

ENUMERATED = {
    "EventActionCode": {"C", "R", "U", "D", "E"},
    "EventOutcomeIndicator": {"0", "4", "8", "12"},
    "UserIsRequestor": {"true", "false"},
    "NetworkAccessPointTypeCode": {"1", "2", "3", "4", "5"},
    "ParticipantObjectTypeCode": {"1", "2", "3", "4"},
    "ParticipantObjectTypeCodeRole": {str(n) for n in range(1, 25)},
}
DATETIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def conforms(element: etree._Element) -> None:
    """Assert that ``element`` and its descendants have the shape of DICOM PS3.15 A.5.1."""
    shape = SHAPES.get(element.tag)
    assert shape is not None, f"unexpected element {element.tag}"
    assert element.nsmap == {} and etree.QName(element).namespace is None
    attributes = set(element.attrib)
    assert shape.required <= attributes, (element.tag, shape.required - attributes)
    assert attributes <= shape.required | shape.optional, (element.tag, attributes)
    for name, value in element.attrib.items():
        if name in ENUMERATED:
            assert value in ENUMERATED[name], (name, value)
        assert value.strip(), f"{element.tag}@{name} is empty"
    if "EventDateTime" in element.attrib:
        assert DATETIME.match(element.get("EventDateTime"))
    if element.tag == "ParticipantObjectDetail":
        assert BASE64.match(element.get("value"))
    if element.tag == "ParticipantObjectQuery":
        assert element.text and BASE64.match(element.text)
    if not shape.text:
        assert not (element.text or "").strip(), f"{element.tag} has text"
    children = list(element)
    at = 0
    for names, low, high in shape.children:
        count = 0
        while at < len(children) and children[at].tag in names:
            at += 1
            count += 1
        assert count >= low, f"{element.tag}: {names} at least {low}, found {count}"
        assert high is None or count <= high, f"{element.tag}: {names} at most {high}"
    assert at == len(children), f"{element.tag}: unexpected or misplaced {children[at].tag}"
    for child in children:
        conforms(child)


def parsed(record: AuditRecord) -> etree._Element:
    data = to_xml(record)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = etree.fromstring(data)
    conforms(root)
    return root


def coded(element: etree._Element) -> tuple[str, str, str]:
    return element.get("csd-code"), element.get("codeSystemName"), element.get("originalText")


def participants(root: etree._Element) -> list[etree._Element]:
    return root.findall("ActiveParticipant")


def role(participant: etree._Element) -> str:
    return participant.find("RoleIDCode").get("csd-code")


def objects(root: etree._Element, type_code: str, role_code: str) -> list[etree._Element]:
    return [
        o for o in root.findall("ParticipantObjectIdentification")
        if o.get("ParticipantObjectTypeCode") == type_code
        and o.get("ParticipantObjectTypeCodeRole") == role_code
    ]  # fmt: skip


def b64(text: str) -> bytes:
    return base64.b64decode(text)


# --- every kind has the schema's shape --------------------------------------------------


@pytest.mark.parametrize("record", every_kind(), ids=lambda r: f"{r.transaction}-{r.action}")
def test_every_record_has_the_shape_of_the_dicom_schema(record: AuditRecord) -> None:
    root = parsed(record)
    assert root.tag == "AuditMessage"
    assert audit_message(record).tag == "AuditMessage"


def test_a_checker_that_catches_misplaced_elements() -> None:
    """The shape check itself: a message with its elements out of order does not pass."""
    root = audit_message(feed())
    root.append(root[0])  # EventIdentification moved to the end
    with pytest.raises(AssertionError):
        conforms(root)


# --- per transaction --------------------------------------------------------------------


def test_iti8_feed() -> None:
    """ITI TF-2 3.8.5.1.2: EventID 110110, C for A04 / U for A08, EventTypeCode ITI-8;
    Source and Destination; Patient type 1 role 1 in CX with MSH-10 as detail."""
    root = parsed(feed("C"))
    event = root.find("EventIdentification")
    assert event.get("EventActionCode") == "C"
    assert event.get("EventOutcomeIndicator") == "0"
    assert event.get("EventDateTime") == "2026-12-03T02:28:40.123Z"
    assert coded(event.find("EventID")) == ("110110", "DCM", "Patient Record")
    assert coded(event.find("EventTypeCode")) == ("ITI-8", "IHE Transactions",
                                                  "Patient Identity Feed")  # fmt: skip
    source, destination = participants(root)
    assert role(source) == "110153" and coded(source.find("RoleIDCode"))[1] == "DCM"
    assert source.get("UserID") == "ADT_A|HOSPA"
    assert source.get("NetworkAccessPointID") == "10.1.2.3"
    assert source.get("NetworkAccessPointTypeCode") == "2"
    assert role(destination) == "110152"
    assert destination.get("UserID") == "IDENTITY|MPI"
    assert destination.get("AlternativeUserID").isdigit()  # the process id
    assert destination.get("NetworkAccessPointTypeCode") == "1"
    audit_source = root.find("AuditSourceIdentification")
    assert audit_source.get("AuditSourceID") == "identity-test"
    assert audit_source.get("AuditEnterpriseSiteID") == "HOSP"
    patients = objects(root, "1", "1")
    assert [p.get("ParticipantObjectID") for p in patients] == [
        f"HA1001^^^&{HOSPA}&ISO", "0000000001^^^&1.3.6.1.4.1.21367.2026.1.1&ISO"]
    for patient in patients:
        assert coded(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881",
                                                                      "Patient Number")
        detail = patient.find("ParticipantObjectDetail")
        assert detail.get("type") == "MSH-10" and b64(detail.get("value")) == b"HOSPA-000001"
    assert parsed(feed("U")).find("EventIdentification").get("EventActionCode") == "U"


def test_iti9_pix_query() -> None:
    """ITI TF-2 3.9.5.1.2: EventID 110112 Query, action E, EventTypeCode ITI-9; the query
    object type 2 role 24, ID type ITI-9, the whole QBP message base64, MSH-10 detail."""
    root = parsed(pix_query())
    event = root.find("EventIdentification")
    assert event.get("EventActionCode") == "E"
    assert coded(event.find("EventID")) == ("110112", "DCM", "Query")
    assert coded(event.find("EventTypeCode")) == ("ITI-9", "IHE Transactions", "PIX Query")
    assert [role(p) for p in participants(root)] == ["110153", "110152"]
    assert participants(root)[0].get("UserID") == "PIXC|CLINIC"
    [patient] = objects(root, "1", "1")[:1]
    assert patient.get("ParticipantObjectID") == f"HA1001^^^&{HOSPA}&ISO"
    [query] = objects(root, "2", "24")
    assert coded(query.find("ParticipantObjectIDTypeCode")) == ("ITI-9", "IHE Transactions",
                                                                "PIX Query")  # fmt: skip
    assert query.get("ParticipantObjectID") == "Q0001"
    assert b64(query.find("ParticipantObjectQuery").text) == PIX_QUERY
    detail = query.find("ParticipantObjectDetail")
    assert (detail.get("type"), b64(detail.get("value"))) == ("MSH-10", b"PIXC-000001")


def test_iti21_pdq_query_one_message_per_patient() -> None:
    """ITI TF-2 3.21.5.1.2 (Patient Demographics Supplier): 110112, E, ITI-21, the query;
    one message per patient found (ITI TF-2 3.20.7.1)."""
    roots = [parsed(r) for r in pdq_query()]
    assert len(roots) == 2
    for root, cx_value in zip(roots, [f"HA1001^^^&{HOSPA}&ISO", "B-77001^^^HOSPB"], strict=True):
        assert coded(root.find("EventIdentification/EventTypeCode")) == (
            "ITI-21", "IHE Transactions", "Patient Demographics Query")
        [patient] = objects(root, "1", "1")
        assert patient.get("ParticipantObjectID") == cx_value
        [query] = objects(root, "2", "24")
        assert b64(query.find("ParticipantObjectQuery").text) == PDQ_QUERY


def test_iti83_and_iti78_from_the_fhir_door() -> None:
    """PIXm/PDQm as DICOM messages: 110112 with the IHE transaction as EventTypeCode, the
    request base64, the X-Request-Id as an object; the human requestor when known."""
    root = parsed(pixm_query())
    assert coded(root.find("EventIdentification/EventTypeCode"))[0] == "ITI-83"
    client, human, server = participants(root)
    assert client.get("UserID") == "PIXM_APP" and role(client) == "110153"
    assert human.get("UserID") == "dr.who" and human.get("UserIsRequestor") == "true"
    assert server.get("UserID") == "https://mpi.example.org/fhir"
    assert server.get("NetworkAccessPointTypeCode") == "5"
    [query] = objects(root, "2", "24")
    assert b64(query.find("ParticipantObjectQuery").text).startswith(b"GET /fhir/Patient/$ihe")
    request_ids = [o for o in root.findall("ParticipantObjectIdentification")
                   if o.find("ParticipantObjectIDTypeCode").get("csd-code") == "XrequestId"]
    assert [o.get("ParticipantObjectID") for o in request_ids] == ["req-83"]

    [root78] = [parsed(r) for r in pdqm_query()]
    assert coded(root78.find("EventIdentification/EventTypeCode"))[0] == "ITI-78"
    assert objects(root78, "1", "1") == []  # nobody found: no patient


def test_refused_access() -> None:
    root = parsed(refused_feed())
    event = root.find("EventIdentification")
    assert event.get("EventOutcomeIndicator") == "4"
    assert coded(event.find("EventID"))[0] == "110110"
    assert event.find("EventOutcomeDescription").text == "ADT_B may not assign identifiers in HOSPA"
    root = parsed(refused_query())
    assert root.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert coded(root.find("EventIdentification/EventTypeCode"))[0] == "ITI-78"


def test_steward_decision() -> None:
    root = parsed(steward_link())
    assert coded(root.find("EventIdentification/EventID"))[0] == "110110"
    assert coded(root.find("EventIdentification/EventTypeCode")) == (
        "steward-link", "IDENTITY", "Steward decision: link")
    steward = participants(root)[0]
    assert steward.get("UserIsRequestor") == "true" and steward.get("UserName") == "Sue Steward"


def test_no_patient_name_in_any_message() -> None:
    """Patient data only as identifiers: outside the base64 query, no demographics."""
    for record in every_kind():
        root = etree.fromstring(to_xml(record))
        for query in root.iter("ParticipantObjectQuery"):
            query.text = ""
        text = etree.tostring(root)
        assert b"EVERYWOMAN" not in text and b"1980" not in text
