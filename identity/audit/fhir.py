"""An AuditRecord as a FHIR R4 ``AuditEvent`` in the shapes of the IHE Basic Audit Log Patterns.

A transaction of the FHIR door follows BALP 3:5.7.3 *RESTful activities* and the profile its IHE
profile derives from it (PIXm ITI-83 ``IHE.PIXm.Query.Audit.Manager``, ITI-104
``IHE.PIXm.Feed.{Create,Update,Delete}.Audit.Manager``; PDQm ITI-78 and ITI-119
``IHE.PDQm.*.Audit.Supplier``): ``type`` = ``audit-event-type#rest``, ``subtype`` = the RESTful
interaction (``search``, ``read``, ``create``, ``update``, ``delete``, ``operation``) and the
transaction (``urn:ihe:event-type-code#ITI-83``). PMIR ITI-93 (``IHE.PMIR.Feed.Audit``) and every
other record (the HL7 v2 transactions, steward decisions, security events) have the DICOM
EventID as ``type`` and the EventTypeCode(s) as ``subtype``, the mapping the AuditEvent resource
makes of the DICOM AuditMessage.

Agents: the client is ``DCM#110153`` Source Role ID, the server ``DCM#110152`` Destination Role
ID (BALP agent[client] / agent[server]), each ``who`` an identifier (the client id, the HL7
``APP|FACILITY``, the server's URL), ``network`` its address; a human requestor is
``v3-ParticipationType#IRCP`` (information recipient) for a read or query and ``#AUT`` for a
change (BALP agent[user]). Entities: the patient as ``what.identifier`` only (type 1 person,
role 1 patient), the query (type 2 system object, role 24 query, ``query`` base64), the
X-Request-Id (BALP ``BasicAuditEntityType#XrequestId``), the resource written or read (type 2,
role 4 domain resource, ``what.reference``). The MSH-10 of an HL7 v2 message is an entity
``detail`` of type ``MSH-10``.
"""

from __future__ import annotations

import base64
from typing import Any

from identity.audit.record import (
    DCM,
    DESTINATION,
    IHE_TRANSACTIONS,
    LOCAL,
    PATIENT_RECORD,
    QUERY,
    RFC_3881,
    SOURCE,
    Action,
    AuditRecord,
    Code,
    Participant,
    system_of_cx,
)

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
IHE_EVENT_TYPE_SYSTEM = "urn:ihe:event-type-code"
LOCAL_SYSTEM = "https://identity.example.org/fhir/CodeSystem/audit-event-type"
AUDIT_EVENT_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/object-role"
NETWORK_TYPE_SYSTEM = "http://hl7.org/fhir/network-type"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"

SYSTEMS = {DCM: DCM_SYSTEM, IHE_TRANSACTIONS: IHE_EVENT_TYPE_SYSTEM, LOCAL: LOCAL_SYSTEM}
"""DICOM codeSystemName -> FHIR code system URI."""

REST = {"system": AUDIT_EVENT_TYPE_SYSTEM, "code": "rest", "display": "Restful Operation"}
SOURCE_TYPES = {"4": "Application Server"}
ENTITY_TYPES = {1: "Person", 2: "System Object", 3: "Organization", 4: "Other"}
OBJECT_ROLES = {1: "Patient", 4: "Domain Resource", 13: "Security Resource", 24: "Query"}
NETWORK_TYPES = {1: "Machine Name", 2: "IP Address", 3: "Telephone Number", 4: "Email address",
                 5: "URI"}  # fmt: skip

Json = dict[str, Any]


def coding(code: Code) -> Json:
    """A Coding of a DICOM coded value (the system URI of its codeSystemName, else the name
    itself when it is a URI)."""
    system = SYSTEMS.get(code.system, code.system)
    return {"system": system, "code": code.code, "display": code.display}


def _b64(value: str | bytes) -> str:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return base64.b64encode(data).decode("ascii")


def _instant(record: AuditRecord) -> str:
    moment = record.recorded
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def is_rest(record: AuditRecord) -> bool:
    """Recorded in the BALP RESTful shape (type ``rest``)?"""
    return record.interaction is not None


def type_coding(record: AuditRecord) -> Json:
    return dict(REST) if is_rest(record) else coding(record.event_id)


def subtype_codings(record: AuditRecord) -> list[Json]:
    codings = []
    if record.interaction is not None:
        codings.append({"system": RESTFUL_INTERACTION_SYSTEM, "code": record.interaction,
                        "display": record.interaction})  # fmt: skip
    codings.extend(coding(c) for c in record.event_types)
    return codings


def _agent_type(record: AuditRecord, participant: Participant) -> Json | None:
    for role in (SOURCE, DESTINATION):
        if participant.has_role(role):
            return {"coding": [coding(role)]}
    if participant.human:
        reading = record.action in (Action.READ, Action.EXECUTE)
        code, display = ("IRCP", "information recipient") if reading else ("AUT", "author")
        return {"coding": [{"system": PARTICIPATION_TYPE_SYSTEM, "code": code,
                            "display": display}]}  # fmt: skip
    for role in participant.roles:
        if role.system == DCM:
            return {"coding": [coding(role)]}
    return None


def _agent(record: AuditRecord, participant: Participant) -> Json:
    agent: Json = {}
    kind = _agent_type(record, participant)
    if kind is not None:
        agent["type"] = kind
    if participant.human and participant.roles:
        agent["role"] = [{"coding": [coding(r)]} for r in participant.roles]
    agent["who"] = {"identifier": {"value": participant.user_id}}
    if participant.alternative_user_id is not None:
        agent["altId"] = participant.alternative_user_id
    if participant.user_name is not None:
        agent["name"] = participant.user_name
    agent["requestor"] = participant.requestor
    if participant.network_id is not None:
        network: Json = {"address": participant.network_id}
        if participant.network_type is not None:
            network["type"] = str(int(participant.network_type))
        agent["network"] = network
    return agent


def _entity_type(code: int) -> Json:
    return {"system": ENTITY_TYPE_SYSTEM, "code": str(code), "display": ENTITY_TYPES[code]}


def _entity_role(code: int) -> Json:
    return {"system": OBJECT_ROLE_SYSTEM, "code": str(code),
            "display": OBJECT_ROLES.get(code, str(code))}  # fmt: skip


def _msh10(record: AuditRecord) -> list[Json]:
    if record.message_id is None or record.message_id_kind != "MSH-10":
        return []
    return [{"type": "MSH-10", "valueBase64Binary": _b64(record.message_id)}]


def _entities(record: AuditRecord) -> list[Json]:
    entities: list[Json] = []
    is_query = record.query is not None or record.event_id == QUERY
    for patient in record.patients:
        system, value = system_of_cx(patient)
        entity: Json = {
            "what": {"identifier": {"system": system, "value": value}},
            "type": _entity_type(1),
            "role": _entity_role(1),
        }
        if not is_query and (detail := _msh10(record)):
            entity["detail"] = detail
        entities.append(entity)
    if record.query is not None:
        entity = {"type": _entity_type(2), "role": _entity_role(24),
                  "query": _b64(record.query)}  # fmt: skip
        if detail := _msh10(record):
            entity["detail"] = detail
        entities.append(entity)
    if record.resource is not None:
        entities.append({"what": {"reference": record.resource}, "type": _entity_type(2),
                         "role": _entity_role(4)})  # fmt: skip
    for other in record.objects:
        entity = {"type": _entity_type(other.type)}
        if other.id_type.system == RFC_3881 and other.id_type.code == "12":
            entity["what"] = {"display": other.id}
            entity["name"] = other.id
        else:
            entity["what"] = {"identifier": {"value": other.id}}
        if other.role is not None:
            entity["role"] = _entity_role(other.role)
        entities.append(entity)
    if record.message_id is not None and record.message_id_kind == "X-Request-Id":
        entities.append({
            "what": {"identifier": {"value": record.message_id}},
            "type": {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
                     "code": "XrequestId"},
        })  # fmt: skip
    return entities


def audit_event(record: AuditRecord, *, id: str | None = None) -> Json:
    """The AuditEvent (R4) of one record, as a JSON dict; ``id`` its id in our store."""
    event: Json = {"resourceType": "AuditEvent"}
    if id is not None:
        event["id"] = id
    event["type"] = type_coding(record)
    if subtypes := subtype_codings(record):
        event["subtype"] = subtypes
    event["action"] = record.action.value
    event["recorded"] = _instant(record)
    event["outcome"] = str(int(record.outcome))
    if record.outcome_description:
        event["outcomeDesc"] = record.outcome_description
    event["agent"] = [_agent(record, p) for p in record.participants]
    source: Json = {}
    if record.source.site is not None:
        source["site"] = record.source.site
    source["observer"] = {"identifier": {"value": record.source.id}, "display": record.source.id}
    source_type = record.source.type
    source["type"] = [{
        "system": SOURCE_TYPE_SYSTEM,
        "code": source_type.code,
        "display": SOURCE_TYPES.get(source_type.code, source_type.display),
    }]  # fmt: skip
    event["source"] = source
    if entities := _entities(record):
        event["entity"] = entities
    return event


def type_code(record: AuditRecord) -> str:
    """The code of AuditEvent.type (what ``type=`` searches): ``rest`` or the EventID."""
    return "rest" if is_rest(record) else record.event_id.code


__all__ = [
    "AUDIT_EVENT_TYPE_SYSTEM",
    "DCM_SYSTEM",
    "IHE_EVENT_TYPE_SYSTEM",
    "LOCAL_SYSTEM",
    "PATIENT_RECORD",
    "RESTFUL_INTERACTION_SYSTEM",
    "audit_event",
    "coding",
    "subtype_codings",
    "type_code",
    "type_coding",
]
