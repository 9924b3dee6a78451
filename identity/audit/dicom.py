"""An AuditRecord as the DICOM ``AuditMessage`` of IHE ITI-20 (DICOM PS3.15 Annex A.5).

ITI TF-2 3.20.7.1 has every IHE actor use the DICOM PS3.15 A.5 Audit Trail Message Format; the
message of each transaction is in its *Audit Record Considerations* section (ITI TF-2 3.8.5.1,
3.9.5.1, 3.10.5.1, 3.21.5.1, ...). The elements follow the order of the DICOM schema (PS3.15
A.5.1), no namespace:

``AuditMessage``
  ``EventIdentification`` (EventActionCode, EventDateTime, EventOutcomeIndicator)
    ``EventID``, ``EventTypeCode``*, ``EventOutcomeDescription``?
  ``ActiveParticipant``+ (UserID, AlternativeUserID?, UserName?, UserIsRequestor,
    NetworkAccessPointID?, NetworkAccessPointTypeCode?)
    ``RoleIDCode``*
  ``AuditSourceIdentification`` (AuditEnterpriseSiteID?, AuditSourceID)
    ``AuditSourceTypeCode``*
  ``ParticipantObjectIdentification``* (ParticipantObjectID, ParticipantObjectTypeCode,
    ParticipantObjectTypeCodeRole?)
    ``ParticipantObjectIDTypeCode``, ``ParticipantObjectQuery``?, ``ParticipantObjectDetail``*

A coded value has ``csd-code``, ``codeSystemName`` and ``originalText`` (and ``displayName``,
left out). Patients are one ParticipantObjectIdentification per CX identifier (type 1 person,
role 1 patient, ID type ``EV(2, RFC-3881, "Patient Number")``); the query is a system object
(type 2, role 24 query, ID type the transaction's code) with the query base64 in
ParticipantObjectQuery; the MSH-10 of an HL7 v2 message is a ParticipantObjectDetail of type
``MSH-10``, on the patient of a feed (ITI TF-2 3.8.5.1, 3.10.5.1) and on the query of a query
(3.9.5.1, 3.21.5.1).
"""

from __future__ import annotations

import base64

from lxml import etree

from identity.audit.record import (
    PATIENT_NUMBER,
    QUERY,
    URI,
    X_REQUEST_ID,
    AuditRecord,
    Code,
    Participant,
    ParticipantObject,
    transaction,
)

SYSLOG_MSGID = "IHE+RFC-3881"
"""ITI TF-2 3.20.4.1.2 item 3: the MSGID of the syslog message that carries an AuditMessage."""


def _coded(parent: etree._Element, tag: str, code: Code) -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.set("csd-code", code.code)
    element.set("codeSystemName", code.system)
    element.set("originalText", code.display)
    return element


def _b64(value: str | bytes) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return base64.b64encode(data).decode("ascii")


def _datetime(record: AuditRecord) -> str:
    moment = record.recorded
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _participant(root: etree._Element, participant: Participant) -> None:
    element = etree.SubElement(root, "ActiveParticipant")
    element.set("UserID", participant.user_id)
    if participant.alternative_user_id is not None:
        element.set("AlternativeUserID", participant.alternative_user_id)
    if participant.user_name is not None:
        element.set("UserName", participant.user_name)
    element.set("UserIsRequestor", "true" if participant.requestor else "false")
    if participant.network_id is not None:
        element.set("NetworkAccessPointID", participant.network_id)
        if participant.network_type is not None:
            element.set("NetworkAccessPointTypeCode", str(int(participant.network_type)))
    for role in participant.roles:
        _coded(element, "RoleIDCode", role)


def _object(root: etree._Element, object_id: str, type_code: int, role: int | None,
            id_type: Code) -> etree._Element:  # fmt: skip
    element = etree.SubElement(root, "ParticipantObjectIdentification")
    element.set("ParticipantObjectID", object_id)
    element.set("ParticipantObjectTypeCode", str(type_code))
    if role is not None:
        element.set("ParticipantObjectTypeCodeRole", str(role))
    _coded(element, "ParticipantObjectIDTypeCode", id_type)
    return element


def _detail(element: etree._Element, kind: str, value: str) -> None:
    detail = etree.SubElement(element, "ParticipantObjectDetail")
    detail.set("type", kind)
    detail.set("value", _b64(value))


def audit_message(record: AuditRecord) -> etree._Element:
    """The ``AuditMessage`` element of one record."""
    root = etree.Element("AuditMessage")

    event = etree.SubElement(root, "EventIdentification")
    event.set("EventActionCode", record.action.value)
    event.set("EventDateTime", _datetime(record))
    event.set("EventOutcomeIndicator", str(int(record.outcome)))
    _coded(event, "EventID", record.event_id)
    for event_type in record.event_types:
        _coded(event, "EventTypeCode", event_type)
    if record.outcome_description:
        etree.SubElement(event, "EventOutcomeDescription").text = record.outcome_description

    for participant in record.participants:
        _participant(root, participant)

    source = etree.SubElement(root, "AuditSourceIdentification")
    if record.source.site is not None:
        source.set("AuditEnterpriseSiteID", record.source.site)
    source.set("AuditSourceID", record.source.id)
    _coded(source, "AuditSourceTypeCode", record.source.type)

    msh10 = record.message_id if record.message_id_kind == "MSH-10" else None
    is_query = record.query is not None or record.event_id == QUERY
    for patient in record.patients:
        element = _object(root, patient, 1, 1, PATIENT_NUMBER)
        if msh10 is not None and not is_query:
            _detail(element, "MSH-10", msh10)

    if record.query is not None:
        id_type = _query_id_type(record)
        element = _object(root, record.query_id or record.message_id or "query", 2, 24, id_type)
        etree.SubElement(element, "ParticipantObjectQuery").text = _b64(record.query)
        if msh10 is not None:
            _detail(element, "MSH-10", msh10)

    if record.resource is not None:
        _object(root, record.resource, 2, 4, URI)
    for other in record.objects:
        _other(root, other)
    if record.message_id is not None and record.message_id_kind == "X-Request-Id":
        _object(root, record.message_id, 2, None, X_REQUEST_ID)
    return root


def _query_id_type(record: AuditRecord) -> Code:
    """The query's ParticipantObjectIDTypeCode: the transaction's code (``EV("ITI-9", "IHE
    Transactions", "PIX Query")``), else the first event type."""
    try:
        return transaction(record.transaction).code
    except ValueError:
        if record.event_types:
            return record.event_types[0]
        return Code("query", "IDENTITY", "Query")


def _other(root: etree._Element, other: ParticipantObject) -> None:
    _object(root, other.id, other.type, other.role, other.id_type)


def to_xml(record: AuditRecord) -> bytes:
    """The AuditMessage as UTF-8 XML with its declaration (the MSG of ITI-20's syslog
    message)."""
    return etree.tostring(audit_message(record), xml_declaration=True, encoding="UTF-8")


__all__ = ["SYSLOG_MSGID", "audit_message", "to_xml"]
