"""The audit record: what happened, who took part, which patient, as a neutral, immutable value.

Every door fills the same :class:`AuditRecord`; ``identity.audit.dicom`` renders it as the DICOM
PS3.15 A.5 ``AuditMessage`` that IHE ITI TF-2 3.20 Record Audit Event [ITI-20] sends to an Audit
Record Repository, ``identity.audit.fhir`` as a FHIR R4 ``AuditEvent`` in the shapes of the IHE
Basic Audit Log Patterns (BALP). The codes and the participants of each transaction are those of
the transaction's *Security Considerations / Audit Record Considerations* section in the IHE ITI
Technical Framework (see docs/audit.md for the table and the sections).

Patient data appears in a record only as identifiers: a patient is a list of fully qualified HL7
CX strings (``value^^^&oid&ISO``, or ``value^^^NAMESPACE`` for a domain without an OID), never a
name or another demographic. IHE ITI TF-2 3.20.7.1 asks for one audit message per patient: a
record names at most one patient (all of that patient's identifiers); the helpers that can touch
several patients (queries) return one record per patient.

:class:`Auditor` builds the records of one service (its audit source, its own participant):

- ``patient_feed`` (ITI-8, ITI-30, ITI-104, ITI-93): a change to a patient record;
- ``query`` (ITI-9, ITI-21, ITI-83, ITI-78, ITI-119) and ``read`` (ITI-78 Patient read);
- ``notification`` (ITI-10, which this service sends);
- ``refused``: an access refused (authorisation, scope, source not allowed in the domain);
- ``authentication_failure``: a caller not authenticated (bad token, TLS peer refused);
- ``steward_decision``: a data steward's link, unlink, merge or other decision;
- ``audit_log_used``: someone read the audit records (``GET /fhir/AuditEvent``).

``to_json``/``from_json`` give the record as a JSON object (for a jsonb column and the outbox)
and back, unchanged.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from identity.config import Settings

AUDIT_TOPIC = "audit"
"""The outbox topic of audit records (identity.audit.deliver sends its rows over syslog)."""

FORMAT_VERSION = 1
"""``v`` in ``to_json()``: bumped when the JSON form changes incompatibly."""

# --- code systems (DICOM codeSystemName values) -------------------------------------------

DCM = "DCM"
"""DICOM Controlled Terminology (PS3.16 Annex D)."""
IHE_TRANSACTIONS = "IHE Transactions"
"""The codeSystemName IHE gives the transaction codes ("ITI-8") in EventTypeCode."""
RFC_3881 = "RFC-3881"
"""IHE ITI TF-2 3.20.7.1.3: RFC 3881's integer codes keep "RFC-3881" as codeSystemName."""
LOCAL = "IDENTITY"
"""This service's own codes (steward decisions), where neither DICOM nor IHE has one."""


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value, DICOM's ``EV(code, codeSystemName, "display")``."""

    code: str
    system: str
    display: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "system": self.system, "display": self.display}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Code:
        return cls(str(data["code"]), str(data["system"]), str(data["display"]))


# EventID (DICOM PS3.16 CID 400 "Audit Event ID")
PATIENT_RECORD = Code("110110", DCM, "Patient Record")
QUERY = Code("110112", DCM, "Query")
SECURITY_ALERT = Code("110113", DCM, "Security Alert")
USER_AUTHENTICATION = Code("110114", DCM, "User Authentication")
AUDIT_LOG_USED = Code("110101", DCM, "Audit Log Used")

# EventTypeCode of the events above (DICOM PS3.16 CID 401 "Audit Event Type Code")
LOGIN = Code("110122", DCM, "Login")
NODE_AUTHENTICATION = Code("110126", DCM, "Node Authentication")
USE_OF_RESTRICTED_FUNCTION = Code("110132", DCM, "Use of Restricted Function")

# RoleIDCode (DICOM PS3.16 CID 402 "Audit Active Participant Role ID Code")
APPLICATION = Code("110150", DCM, "Application")
APPLICATION_LAUNCHER = Code("110151", DCM, "Application Launcher")
DESTINATION = Code("110152", DCM, "Destination Role ID")
SOURCE = Code("110153", DCM, "Source Role ID")

# ParticipantObjectIDTypeCode and AuditSourceTypeCode (RFC 3881 integers, ITI TF-2 3.20.7.1.3)
PATIENT_NUMBER = Code("2", RFC_3881, "Patient Number")
URI = Code("12", RFC_3881, "URI")
APPLICATION_SERVER = Code("4", RFC_3881, "Application Server process tier in a multi-tier system")

X_REQUEST_ID = Code(
    "XrequestId",
    "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
    "transport specific unique identifier where http X-Request-Id is used",
)
"""BALP 3:5.7.3.1: the X-Request-Id of an HTTP transaction, to correlate client and server."""


class Action(StrEnum):
    """EventActionCode (DICOM PS3.15 A.5.1; FHIR audit-event-action)."""

    CREATE = "C"
    READ = "R"
    UPDATE = "U"
    DELETE = "D"
    EXECUTE = "E"


class Outcome(IntEnum):
    """EventOutcomeIndicator (DICOM PS3.15 A.5.1; FHIR audit-event-outcome)."""

    SUCCESS = 0
    MINOR_FAILURE = 4
    """The action was not successful due to a minor failure (often an HTTP 4xx: refused)."""
    SERIOUS_FAILURE = 8
    """The action was considered a failure by the requestor (often an HTTP 5xx)."""
    MAJOR_FAILURE = 12
    """An error of such magnitude that the system is no longer available."""


class NetworkType(IntEnum):
    """NetworkAccessPointTypeCode (DICOM PS3.15 A.5.1; FHIR network-type)."""

    MACHINE_NAME = 1
    IP_ADDRESS = 2
    TELEPHONE = 3
    EMAIL = 4
    URI = 5


# --- the IHE transactions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transaction:
    """An IHE transaction as an audit record names it: its EventTypeCode, the EventID IHE
    gives it, the door it comes through, the section of the Technical Framework that defines
    its audit message, and (FHIR) the BALP RESTful interaction it is."""

    code: Code
    event_id: Code
    door: Literal["hl7v2", "fhir", "http"]
    section: str
    interaction: str | None = None


def _iti(number: int, name: str, event_id: Code, door: Any, section: str,
         interaction: str | None = None) -> tuple[str, Transaction]:  # fmt: skip
    key = f"ITI-{number}"
    return key, Transaction(Code(key, IHE_TRANSACTIONS, name), event_id, door, section,
                            interaction)  # fmt: skip


TRANSACTIONS: dict[str, Transaction] = dict(
    [
        _iti(8, "Patient Identity Feed", PATIENT_RECORD, "hl7v2", "ITI TF-2 3.8.5.1, 3.8.5.2"),
        _iti(9, "PIX Query", QUERY, "hl7v2", "ITI TF-2 3.9.5.1.2"),
        _iti(10, "PIX Update Notification", PATIENT_RECORD, "hl7v2", "ITI TF-2 3.10.5.1.1"),
        _iti(21, "Patient Demographics Query", QUERY, "hl7v2", "ITI TF-2 3.21.5.1.2"),
        _iti(30, "Patient Identity Management", PATIENT_RECORD, "hl7v2", "ITI TF-2 3.30"),
        _iti(83, "Mobile Patient Identifier Cross-reference Query", QUERY, "fhir",
             "PIXm ITI-83 (IHE.PIXm.Query.Audit.Manager)", "search"),
        _iti(104, "Patient Identity Feed FHIR", PATIENT_RECORD, "fhir",
             "PIXm ITI-104 (IHE.PIXm.Feed.*.Audit.Manager)", "update"),
        _iti(78, "Mobile Patient Demographics Query", QUERY, "fhir",
             "PDQm ITI-78 (IHE.PDQm.Query.Audit.Supplier)", "search"),
        _iti(119, "Patient Demographics Match", QUERY, "fhir",
             "PDQm ITI-119 (IHE.PDQm.Match.Audit.Supplier)", "operation"),
        _iti(93, "Mobile Patient Identity Feed", PATIENT_RECORD, "fhir",
             "PMIR ITI-93 (IHE.PMIR.Feed.Audit)"),
    ]
)  # fmt: skip

STEWARD = "steward"
"""``transaction`` of a steward decision (not an IHE transaction)."""
AUTHENTICATION = "authentication"
"""``transaction`` of an authentication failure not tied to a transaction."""
AUDIT_LOG = "audit-log"
"""``transaction`` of an access to the audit records."""


def transaction(name: str) -> Transaction:
    try:
        return TRANSACTIONS[name]
    except KeyError:
        raise ValueError(f"not an audited IHE transaction: {name!r}") from None


# --- identifiers ----------------------------------------------------------------------------

_CX_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


_CX_SPECIAL = re.compile(r"[\\|^&~]")


def _escape(text: str) -> str:
    if _CX_SPECIAL.search(text) is None:  # the common case: one scan, no copies
        return text
    for char, code in _CX_ESCAPES:
        text = text.replace(char, code)
    return text


def _unescape(text: str) -> str:
    for char, code in reversed(_CX_ESCAPES):
        text = text.replace(code, char)
    return text


def cx(value: str, *, oid: str | None = None, namespace: str | None = None) -> str:
    """A patient identifier as a fully qualified HL7 CX: ``value^^^&oid&ISO`` when the domain
    has an OID, else ``value^^^NAMESPACE``; HL7 delimiters in the parts are escaped."""
    if not value:
        raise ValueError("an identifier needs a value")
    if oid:
        return f"{_escape(value)}^^^&{_escape(oid)}&ISO"
    if namespace:
        return f"{_escape(value)}^^^{_escape(namespace)}"
    raise ValueError("an identifier needs its domain's OID or namespace")


def cx_of_system(system: str, value: str) -> str:
    """The CX of a FHIR identifier (``urn:oid:<oid>`` systems name the OID, any other system
    the namespace, as identity.fhir does)."""
    if system.lower().startswith("urn:oid:"):
        return cx(value, oid=system[8:])
    return cx(value, namespace=system)


def system_of_cx(text: str) -> tuple[str, str]:
    """(FHIR system, value) of a CX made by :func:`cx`."""
    parts = text.split("^")
    value = _unescape(parts[0])
    authority = parts[3].split("&") if len(parts) > 3 else [""]
    namespace = _unescape(authority[0])
    oid = _unescape(authority[1]) if len(authority) > 1 else ""
    return (f"urn:oid:{oid}" if oid else namespace), value


# --- participants ---------------------------------------------------------------------------


def network_point(address: str | None) -> tuple[str | None, NetworkType | None]:
    """(NetworkAccessPointID, type) of a peer's address: an IP address is type 2, a URI
    (``scheme://``) type 5, any other name a machine name (type 1)."""
    if not address:
        return None, None
    try:
        ipaddress.ip_address(address)
    except ValueError:
        if "://" in address:
            return address, NetworkType.URI
        return address, NetworkType.MACHINE_NAME
    return address, NetworkType.IP_ADDRESS


@dataclass(frozen=True, slots=True, kw_only=True)
class Participant:
    """An ActiveParticipant (DICOM) / agent (FHIR).

    ``roles``: RoleIDCode(s): SOURCE, DESTINATION, APPLICATION, ...; for a human, the access
    control roles that allowed the event (e.g. the token's scopes), ITI TF-2 3.20.7.1.1.
    """

    user_id: str
    requestor: bool = False
    roles: tuple[Code, ...] = ()
    alternative_user_id: str | None = None
    user_name: str | None = None
    network_id: str | None = None
    network_type: NetworkType | None = None
    human: bool = False

    def has_role(self, code: Code) -> bool:
        return any(r.code == code.code and r.system == code.system for r in self.roles)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"user_id": self.user_id, "requestor": self.requestor}
        if self.roles:
            data["roles"] = [r.to_json() for r in self.roles]
        for key in ("alternative_user_id", "user_name", "network_id"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.network_type is not None:
            data["network_type"] = int(self.network_type)
        if self.human:
            data["human"] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Participant:
        network_type = data.get("network_type")
        return cls(
            user_id=str(data["user_id"]),
            requestor=bool(data.get("requestor", False)),
            roles=tuple(Code.from_json(r) for r in data.get("roles") or ()),
            alternative_user_id=data.get("alternative_user_id"),
            user_name=data.get("user_name"),
            network_id=data.get("network_id"),
            network_type=NetworkType(network_type) if network_type is not None else None,
            human=bool(data.get("human", False)),
        )


def hl7_peer(
    application: str | None,
    facility: str | None,
    address: str | None = None,
    *,
    role: Code = SOURCE,
    requestor: bool = False,
    process_id: str | None = None,
) -> Participant:
    """An HL7 v2 application: UserID ``APPLICATION|FACILITY`` (MSH-3|MSH-4 of a sender, MSH-5|
    MSH-6 of a receiver), its network address (IP or machine name)."""
    network_id, network_type = network_point(address)
    return Participant(
        user_id=f"{application or ''}|{facility or ''}",
        requestor=requestor,
        roles=(role,),
        alternative_user_id=process_id,
        network_id=network_id,
        network_type=network_type,
    )


def fhir_client(
    client_id: str | None, address: str | None = None, *, requestor: bool = False
) -> Participant:
    """A FHIR client (BALP agent[client], Source Role ID): its client id (the token's
    ``client_id``, else ``sub``; ``anonymous`` when unknown) and IP address."""
    network_id, network_type = network_point(address)
    return Participant(
        user_id=client_id or "anonymous",
        requestor=requestor,
        roles=(SOURCE,),
        network_id=network_id,
        network_type=network_type,
    )


def human_requestor(
    user_id: str, *, user_name: str | None = None, roles: Iterable[Code] = ()
) -> Participant:
    """The person who asked (a steward, the token's subject when it names a person): the
    requestor of the event; ``roles`` are the access control roles that allowed it."""
    return Participant(
        user_id=user_id, requestor=True, roles=tuple(roles), user_name=user_name, human=True
    )


def scope_roles(scopes: Iterable[str], system: str = "urn:ietf:params:oauth:scope") -> tuple[
    Code, ...
]:
    """OAuth scopes as RoleIDCodes of a human requestor (ITI TF-2 3.20.7.1.1)."""
    return tuple(Code(s, system, s) for s in scopes)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditSource:
    """AuditSourceIdentification (DICOM) / source (FHIR): who recorded the event."""

    id: str
    site: str | None = None
    type: Code = APPLICATION_SERVER

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type.to_json()}
        if self.site is not None:
            data["site"] = self.site
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditSource:
        return cls(
            id=str(data["id"]),
            site=data.get("site"),
            type=Code.from_json(data["type"]) if data.get("type") else APPLICATION_SERVER,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantObject:
    """Another object of the event (not a patient, not the query): an audit log's URI, a
    FHIR resource's reference. ``type``: 2 system object, 3 organization, 4 other; ``role``:
    DICOM ParticipantObjectTypeCodeRole / FHIR object-role (4 domain resource, 13 security
    resource)."""

    id: str
    id_type: Code
    type: int = 2
    role: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "id_type": self.id_type.to_json(),
                                "type": self.type}  # fmt: skip
        if self.role is not None:
            data["role"] = self.role
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ParticipantObject:
        return cls(
            id=str(data["id"]),
            id_type=Code.from_json(data["id_type"]),
            type=int(data.get("type", 2)),
            role=data.get("role"),
        )


# --- the record -----------------------------------------------------------------------------

MessageIdKind = Literal["MSH-10", "X-Request-Id"]


def _per_patient(base: AuditRecord, groups: Sequence[Sequence[str]]) -> list[AuditRecord]:
    """One record per patient (ITI TF-2 3.20.7.1), each ``base`` with that patient's
    identifiers; ``base`` alone, without a patient, when there is none."""
    return [base.with_patient(group) for group in groups] or [base]


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("an audit record's time must be timezone-aware")
    return moment.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One auditable event (DICOM PS3.15 A.5 AuditMessage; FHIR AuditEvent).

    - ``transaction``: "ITI-8", ... (``TRANSACTIONS``), or STEWARD, AUTHENTICATION, AUDIT_LOG;
    - ``event_id``, ``event_types``: EventID and EventTypeCode(s);
    - ``interaction``: the FHIR RESTful interaction (BALP: ``search``, ``update``, ...) of a
      transaction of the FHIR door; None for the HL7 v2 door;
    - ``participants``: source, destination, human requestor, ...;
    - ``patients``: the CX identifiers of the one patient concerned (none for a query that
      found nobody); never a name or another demographic;
    - ``query``: the query as received (HL7 v2: the QBP message; FHIR: the request line and
      body), sent base64 in ParticipantObjectQuery / entity.query;
    - ``message_id``: MSH-10 (HL7 v2) or X-Request-Id (HTTP), per ``message_id_kind``;
    - ``resource``: the FHIR resource written or read (``Patient/12``), when there is one.
    """

    transaction: str
    event_id: Code
    event_types: tuple[Code, ...] = ()
    action: Action
    outcome: Outcome = Outcome.SUCCESS
    outcome_description: str | None = None
    recorded: datetime = field(default_factory=_now)
    interaction: str | None = None
    participants: tuple[Participant, ...]
    source: AuditSource
    patients: tuple[str, ...] = ()
    query: bytes | None = None
    query_id: str | None = None
    message_id: str | None = None
    message_id_kind: MessageIdKind | None = None
    resource: str | None = None
    objects: tuple[ParticipantObject, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "recorded", _utc(self.recorded))
        if type(self.action) is not Action:  # an Enum call costs microseconds: only if needed
            object.__setattr__(self, "action", Action(self.action))
        if type(self.outcome) is not Outcome:
            object.__setattr__(self, "outcome", Outcome(self.outcome))
        if not self.participants:
            raise ValueError("an audit record needs at least one active participant")
        if self.message_id is not None and self.message_id_kind is None:
            raise ValueError("message_id needs message_id_kind (MSH-10 or X-Request-Id)")

    # --- views used by the renderers and the store ----------------------------------------

    @property
    def door(self) -> str | None:
        entry = TRANSACTIONS.get(self.transaction)
        return entry.door if entry is not None else None

    @property
    def agent(self) -> str:
        """The user id of the system that acted: the first participant that is neither the
        destination nor a person (the source of a request, the console of a steward); what
        ``GET /fhir/AuditEvent?agent=`` searches, with ``requestor``."""
        actors = [p for p in self.participants if not p.has_role(DESTINATION)]
        systems = [p for p in actors if not p.human]
        return (systems or actors or list(self.participants))[0].user_id

    @property
    def requestor(self) -> str | None:
        """The user id of the person who asked, when known (a steward, a token's user)."""
        return next((p.user_id for p in self.participants if p.human), None)

    @property
    def syslog_severity(self) -> int:
        """RFC 5424 severity: 5 (notice) for a success, 4 (warning) for a failure (ITI TF-2
        3.20.4.1.2 item 2)."""
        return 5 if self.outcome == Outcome.SUCCESS else 4

    def with_patient(self, patient: Sequence[str]) -> AuditRecord:
        return replace(self, patients=tuple(patient))

    # --- JSON ------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": FORMAT_VERSION,
            "transaction": self.transaction,
            "event_id": self.event_id.to_json(),
            "event_types": [c.to_json() for c in self.event_types],
            "action": self.action.value,
            "outcome": int(self.outcome),
            "recorded": self.recorded.isoformat().replace("+00:00", "Z"),
            "participants": [p.to_json() for p in self.participants],
            "source": self.source.to_json(),
            "patients": list(self.patients),
        }
        optional = {
            "outcome_description": self.outcome_description,
            "interaction": self.interaction,
            "query": base64.b64encode(self.query).decode("ascii") if self.query else None,
            "query_id": self.query_id,
            "message_id": self.message_id,
            "message_id_kind": self.message_id_kind,
            "resource": self.resource,
        }
        data.update({k: v for k, v in optional.items() if v is not None})
        if self.objects:
            data["objects"] = [o.to_json() for o in self.objects]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditRecord:
        version = data.get("v", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"audit record format {version!r} is not known")
        query = data.get("query")
        recorded = datetime.fromisoformat(str(data["recorded"]).replace("Z", "+00:00"))
        return cls(
            transaction=str(data["transaction"]),
            event_id=Code.from_json(data["event_id"]),
            event_types=tuple(Code.from_json(c) for c in data.get("event_types") or ()),
            action=Action(data["action"]),
            outcome=Outcome(int(data["outcome"])),
            outcome_description=data.get("outcome_description"),
            recorded=recorded,
            interaction=data.get("interaction"),
            participants=tuple(Participant.from_json(p) for p in data["participants"]),
            source=AuditSource.from_json(data["source"]),
            patients=tuple(str(p) for p in data.get("patients") or ()),
            query=base64.b64decode(query) if query else None,
            query_id=data.get("query_id"),
            message_id=data.get("message_id"),
            message_id_kind=data.get("message_id_kind"),
            resource=data.get("resource"),
            objects=tuple(ParticipantObject.from_json(o) for o in data.get("objects") or ()),
        )


def outbox_payload(records: Iterable[AuditRecord]) -> dict[str, Any]:
    """The payload of one outbox row on AUDIT_TOPIC: ``{"records": [record JSON, ...]}``."""
    return {"records": [r.to_json() for r in records]}


def records_of_payload(payload: Any) -> list[AuditRecord]:
    """The records of an outbox payload: ``{"records": [...]}``, a list, or one record."""
    if isinstance(payload, Mapping) and "records" in payload:
        items = payload["records"]
    elif isinstance(payload, list):
        items = payload
    else:
        items = [payload]
    return [AuditRecord.from_json(item) for item in items]


# --- building records -----------------------------------------------------------------------

STEWARD_DECISIONS = {
    "link": "Steward decision: link",
    "unlink": "Steward decision: unlink",
    "merge": "Steward decision: merge",
    "no-match": "Steward decision: not the same person",
    "dismiss": "Steward decision: review item dismissed",
    "undo": "Steward decision: undo",
}


class Auditor:
    """Builds the audit records of one service: its audit source (``[audit] source_id``,
    ``enterprise_site``) and its own participant (HL7 v2: ``[hl7] application|facility``;
    FHIR: the endpoint URL) are filled in; the door gives the caller, the patient and the
    outcome.

    Methods return records; writing them (identity.store.audit.AuditStore.insert, in the
    transaction of the change they record) and shipping them (the outbox, AUDIT_TOPIC) is the
    caller's.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        hostname: str | None = None,
        fhir_endpoint: str | None = None,
    ) -> None:
        self.source = AuditSource(id=settings.audit.source_id, site=settings.audit.enterprise_site)
        self.application = settings.hl7.application
        self.facility = settings.hl7.facility
        self.hostname = hostname or socket.gethostname()
        self.fhir_endpoint = (
            fhir_endpoint or settings.fhir.base_url or f"http://{self.hostname}/fhir"
        )
        self._ourselves: dict[tuple[Any, ...], Participant] = {}

    # --- ourselves --------------------------------------------------------------------------

    def ourselves(self, door: str | None, *, endpoint: str | None = None, role: Code = DESTINATION,
                  requestor: bool = False) -> Participant:  # fmt: skip
        """This service as a participant: for HL7 v2 ``APPLICATION|FACILITY`` with the
        process id (IHE: AlternativeUserID "the process ID as used within the local operating
        system") and its machine name (or ``endpoint``, the local address the connection came
        to); over HTTP the endpoint URL (BALP agent[server])."""
        pid = os.getpid()
        key = (door, endpoint, role, requestor, pid)
        found = self._ourselves.get(key)
        if found is not None:
            return found
        if door == "hl7v2":
            found = hl7_peer(self.application, self.facility, endpoint or self.hostname,
                             role=role, requestor=requestor, process_id=str(pid))  # fmt: skip
        else:
            url = endpoint or self.fhir_endpoint
            found = Participant(user_id=url, requestor=requestor, roles=(role,),
                                alternative_user_id=str(pid), network_id=url,
                                network_type=NetworkType.URI)  # fmt: skip
        if len(self._ourselves) < 64:  # a few endpoints (bound by the addresses we listen on)
            self._ourselves[key] = found
        return found

    def _message(self, door: str | None, message_id: str | None) -> dict[str, Any]:
        if message_id is None:
            return {}
        kind: MessageIdKind = "MSH-10" if door == "hl7v2" else "X-Request-Id"
        return {"message_id": message_id, "message_id_kind": kind}

    def _participants(self, caller: Participant, human: Participant | None,
                      us: Participant) -> tuple[Participant, ...]:  # fmt: skip
        return tuple(p for p in (caller, human, us) if p is not None)

    # --- transactions -----------------------------------------------------------------------

    def patient_feed(
        self,
        name: str,
        *,
        action: Action | str,
        caller: Participant,
        patient: Sequence[str],
        message_id: str | None = None,
        outcome: Outcome | int = Outcome.SUCCESS,
        description: str | None = None,
        human: Participant | None = None,
        endpoint: str | None = None,
        resource: str | None = None,
        at: datetime | None = None,
    ) -> AuditRecord:
        """A change to one patient record received from ``caller`` (ITI-8, ITI-30, ITI-104,
        ITI-93): EventID 110110 "Patient Record"; ``action`` C for A01/A04/A05 and a create,
        U for A08 and an update, D for a removal; a merge (A40, ITI-104 replaced-by) is two
        records, D for the retired patient and U for the surviving one (ITI TF-2 3.8.5.2).
        ITI-93 is always E, as PMIR's IHE.PMIR.Feed.Audit fixes it.
        The MSH-10 of an HL7 message goes to the patient's ParticipantObjectDetail."""
        entry = transaction(name)
        action = Action(action)
        if name == "ITI-93":  # IHE.PMIR.Feed.Audit: action E, no RESTful subtype
            action = Action.EXECUTE
        interaction = None
        if entry.door == "fhir" and name != "ITI-93":
            interaction = {Action.CREATE: "create", Action.DELETE: "delete"}.get(
                action, "update"
            )
        return AuditRecord(
            transaction=name,
            event_id=entry.event_id,
            event_types=(entry.code,),
            action=action,
            outcome=Outcome(outcome),
            outcome_description=description,
            recorded=at or _now(),
            interaction=interaction,
            participants=self._participants(
                caller, human, self.ourselves(entry.door, endpoint=endpoint)
            ),
            source=self.source,
            patients=tuple(patient),
            resource=resource,
            **self._message(entry.door, message_id),
        )

    def notification(
        self,
        *,
        consumer: Participant,
        patient: Sequence[str],
        message_id: str | None = None,
        outcome: Outcome | int = Outcome.SUCCESS,
        description: str | None = None,
        at: datetime | None = None,
    ) -> AuditRecord:
        """An ITI-10 PIX Update Notification this service sent (ITI TF-2 3.10.5.1.1): we are
        the Source (with our process id), ``consumer`` (``hl7_peer(MSH-5, MSH-6, address,
        role=DESTINATION)``) the Destination; ``patient``: the identifiers of PID-3."""
        entry = TRANSACTIONS["ITI-10"]
        us = self.ourselves("hl7v2", role=SOURCE, requestor=True)
        destination = replace(consumer, roles=(DESTINATION,), requestor=False)
        return AuditRecord(
            transaction="ITI-10",
            event_id=entry.event_id,
            event_types=(entry.code,),
            action=Action.UPDATE,
            outcome=Outcome(outcome),
            outcome_description=description,
            recorded=at or _now(),
            participants=(us, destination),
            source=self.source,
            patients=tuple(patient),
            **self._message("hl7v2", message_id),
        )

    def query(
        self,
        name: str,
        *,
        caller: Participant,
        query: bytes | str,
        patients: Sequence[Sequence[str]] = (),
        message_id: str | None = None,
        query_id: str | None = None,
        outcome: Outcome | int = Outcome.SUCCESS,
        description: str | None = None,
        human: Participant | None = None,
        endpoint: str | None = None,
        at: datetime | None = None,
    ) -> list[AuditRecord]:
        """A query answered (ITI-9, ITI-21, ITI-83, ITI-78, ITI-119): EventID 110112 "Query",
        action E; the query object holds ``query`` as received (HL7 v2: the complete QBP
        message, MSH and QPD included, ITI TF-2 3.9.5.1.2 / 3.21.5.1.2; FHIR: the request
        line, and the body of a POST) and ``query_id`` (QPD-2 query tag; default the message
        id). One record per patient of ``patients`` (each a list of CX: the queried
        identifier and those returned for a PIX query; each person found for a PDQ query),
        one without a patient when none was found (ITI TF-2 3.20.7.1; BALP PatientQuery)."""
        entry = transaction(name)
        if isinstance(query, str):
            query = query.encode("utf-8")
        groups = [tuple(p) for p in patients if p]
        base = AuditRecord(
            transaction=name,
            event_id=entry.event_id,
            event_types=(entry.code,),
            action=Action.EXECUTE,
            outcome=Outcome(outcome),
            outcome_description=description,
            recorded=at or _now(),
            interaction=entry.interaction,
            participants=self._participants(
                caller, human, self.ourselves(entry.door, endpoint=endpoint)
            ),
            source=self.source,
            query=query,
            query_id=query_id or message_id,
            **self._message(entry.door, message_id),
        )
        return _per_patient(base, groups)

    def read(
        self,
        *,
        caller: Participant,
        patient: Sequence[str],
        resource: str,
        request: bytes | str | None = None,
        message_id: str | None = None,
        outcome: Outcome | int = Outcome.SUCCESS,
        description: str | None = None,
        human: Participant | None = None,
        endpoint: str | None = None,
        at: datetime | None = None,
        interaction: str = "read",
    ) -> AuditRecord:
        """A Patient read (PDQm ITI-78 "Retrieve Patient"), vread or history: EventID 110110
        "Patient Record", action R, BALP PatientRead with the RESTful interaction as subtype
        (``read``, ``vread``, ``history-instance``)."""
        entry = TRANSACTIONS["ITI-78"]
        if isinstance(request, str):
            request = request.encode("utf-8")
        return AuditRecord(
            transaction="ITI-78",
            event_id=PATIENT_RECORD,
            event_types=(entry.code,),
            action=Action.READ,
            outcome=Outcome(outcome),
            outcome_description=description,
            recorded=at or _now(),
            interaction=interaction,
            participants=self._participants(caller, human, self.ourselves("fhir",
                                                                          endpoint=endpoint)),
            source=self.source,
            patients=tuple(patient),
            resource=resource,
            **self._message("fhir", message_id),
        )  # fmt: skip

    # --- refusals ---------------------------------------------------------------------------

    def refused(
        self,
        name: str,
        *,
        caller: Participant,
        reason: str,
        action: Action | str | None = None,
        outcome: Outcome | int = Outcome.MINOR_FAILURE,
        patient: Sequence[str] = (),
        query: bytes | str | None = None,
        message_id: str | None = None,
        human: Participant | None = None,
        endpoint: str | None = None,
        at: datetime | None = None,
    ) -> AuditRecord:
        """An access to transaction ``name`` that was refused (not authorised: a missing
        scope, a source not allowed to write in the domain, an MLLP peer whose certificate
        does not match MSH-3): the transaction's own EventID and EventTypeCode with outcome 4
        (minor failure; HTTP 403, AR/AE) and the reason. DICOM PS3.15 A.5.2 records a failed
        event as the event with its failure outcome, and BALP has a failure follow the
        pattern of its event with a failure outcome; so an auditor who looks for a patient's
        ITI-8 events finds the refused attempts beside the accepted ones. ``action``: default
        E for a query, U for a change."""
        entry = transaction(name)
        if action is None:
            action = Action.EXECUTE if entry.event_id == QUERY else Action.UPDATE
        if isinstance(query, str):
            query = query.encode("utf-8")
        interaction = entry.interaction
        if entry.door == "fhir" and entry.event_id == PATIENT_RECORD and name != "ITI-93":
            interaction = {Action.CREATE: "create", Action.DELETE: "delete"}.get(
                Action(action), "update"
            )
        return AuditRecord(
            transaction=name,
            event_id=entry.event_id,
            event_types=(entry.code,),
            action=Action(action),
            outcome=Outcome(outcome),
            outcome_description=reason,
            recorded=at or _now(),
            interaction=interaction,
            participants=self._participants(
                caller, human, self.ourselves(entry.door, endpoint=endpoint)
            ),
            source=self.source,
            patients=tuple(patient),
            query=query,
            query_id=message_id if query is not None else None,
            **self._message(entry.door, message_id),
        )

    def authentication_failure(
        self,
        *,
        caller: Participant,
        reason: str,
        door: Literal["hl7v2", "fhir", "http"],
        node: bool = False,
        attempted: str | None = None,
        message_id: str | None = None,
        endpoint: str | None = None,
        at: datetime | None = None,
    ) -> AuditRecord:
        """A caller that could not be authenticated, outcome 4. ``node=True``: a peer refused
        during the TLS handshake (unknown or missing client certificate), EventID 110113
        "Security Alert" with EventTypeCode 110126 "Node Authentication" (ITI TF-2
        3.20.4.1.1.1, Node-Authentication-failure); otherwise a bearer token refused (expired,
        wrong issuer or audience, bad signature: HTTP 401), EventID 110114 "User
        Authentication" with EventTypeCode 110122 "Login" (DICOM PS3.15 A.5.3 User
        Authentication). ``attempted``: the transaction the caller tried, when known."""
        event_id, event_type = (
            (SECURITY_ALERT, NODE_AUTHENTICATION) if node else (USER_AUTHENTICATION, LOGIN)
        )
        types = [event_type]
        if attempted in TRANSACTIONS:
            types.append(TRANSACTIONS[attempted].code)
        return AuditRecord(
            transaction=attempted if attempted in TRANSACTIONS else AUTHENTICATION,
            event_id=event_id,
            event_types=tuple(types),
            action=Action.EXECUTE,
            outcome=Outcome.MINOR_FAILURE,
            outcome_description=reason,
            recorded=at or _now(),
            participants=(caller, self.ourselves(door, endpoint=endpoint)),
            source=self.source,
            **self._message(door, message_id),
        )

    # --- the steward ------------------------------------------------------------------------

    def steward_decision(
        self,
        decision: str,
        *,
        steward: Participant,
        patient: Sequence[str],
        application: Participant | None = None,
        action: Action | str = Action.UPDATE,
        outcome: Outcome | int = Outcome.SUCCESS,
        description: str | None = None,
        message_id: str | None = None,
        endpoint: str | None = None,
        resource: str | None = None,
        at: datetime | None = None,
    ) -> AuditRecord:
        """A data steward's decision (``link``, ``unlink``, ``merge``, ``no-match``,
        ``dismiss``, ``undo``) on one patient (the identifiers of the records the decision
        touches that belong to that patient afterwards; an unlink gives one record per
        resulting patient): EventID 110110 "Patient Record", action U (D when a record is
        retired), EventTypeCode ``EV(steward-<decision>, IDENTITY, ...)``; the steward is the
        human requestor, ``application`` (``fhir_client(...)``: the console) the source."""
        if decision not in STEWARD_DECISIONS:
            raise ValueError(f"unknown steward decision {decision!r}")
        if not steward.human or not steward.requestor:
            steward = replace(steward, human=True, requestor=True)
        event_type = Code(f"steward-{decision}", LOCAL, STEWARD_DECISIONS[decision])
        return AuditRecord(
            transaction=STEWARD,
            event_id=PATIENT_RECORD,
            event_types=(event_type,),
            action=Action(action),
            outcome=Outcome(outcome),
            outcome_description=description,
            recorded=at or _now(),
            participants=tuple(
                p for p in (steward, application, self.ourselves("http", endpoint=endpoint))
                if p is not None
            ),
            source=self.source,
            patients=tuple(patient),
            resource=resource,
            **self._message("http", message_id),
        )

    def steward_read(
        self,
        what: str,
        *,
        steward: Participant,
        patients: Sequence[Sequence[str]] = (),
        query: bytes | str,
        search: bool = False,
        message_id: str | None = None,
        endpoint: str | None = None,
        at: datetime | None = None,
    ) -> list[AuditRecord]:
        """A data steward looked at patients' records (``what``: ``review-item``, ``person``,
        ``record``) or searched for them (``search=True``): EventID 110110 "Patient Record"
        action R, or 110112 "Query" action E for a search, EventTypeCode ``EV(steward-view|
        steward-search, IDENTITY, ...)``, the steward as the human requestor and the request
        (redacted like a PDQ query) as the query. One record per patient shown (each a list of
        CX), one without a patient when none was (ITI TF-2 3.20.7.1: one per patient)."""
        if not steward.human or not steward.requestor:
            steward = replace(steward, human=True, requestor=True)
        code = "steward-search" if search else "steward-view"
        title = "Steward search" if search else f"Steward view: {what.replace('-', ' ')}"
        if isinstance(query, str):
            query = query.encode("utf-8")
        groups = [tuple(p) for p in patients if p]
        base = AuditRecord(
            transaction=STEWARD,
            event_id=QUERY if search else PATIENT_RECORD,
            event_types=(Code(code, LOCAL, title),),
            action=Action.EXECUTE if search else Action.READ,
            outcome=Outcome.SUCCESS,
            recorded=at or _now(),
            participants=(steward, self.ourselves("http", endpoint=endpoint)),
            source=self.source,
            query=query,
            query_id=message_id,
            **self._message("http", message_id),
        )
        return _per_patient(base, groups)

    # --- the audit log ----------------------------------------------------------------------

    def audit_log_used(
        self,
        *,
        caller: Participant,
        query: bytes | str,
        log_uri: str,
        outcome: Outcome | int = Outcome.SUCCESS,
        description: str | None = None,
        human: Participant | None = None,
        message_id: str | None = None,
        endpoint: str | None = None,
        at: datetime | None = None,
    ) -> AuditRecord:
        """Someone searched the audit records (ITI TF-2 3.20.4.1.1.1 Audit-Log-Used; DICOM
        PS3.15 A.5.3 "Audit Log Used"): EventID 110101, action R, the audit log as a
        participant object (system object, role 13 security resource, ID type 12 URI) and the
        search as the query. Its AuditEvent.type is 110101 (not BALP's ``rest``) so that
        ``type=110101`` finds every look at the log."""
        if isinstance(query, str):
            query = query.encode("utf-8")
        log = ParticipantObject(id=log_uri, id_type=URI, type=2, role=13)
        return AuditRecord(
            transaction=AUDIT_LOG,
            event_id=AUDIT_LOG_USED,
            action=Action.READ,
            outcome=Outcome(outcome),
            outcome_description=description,
            recorded=at or _now(),
            participants=self._participants(caller, human,
                                            self.ourselves("fhir", endpoint=endpoint)),
            source=self.source,
            query=query,
            query_id=message_id,
            objects=(log,),
            **self._message("fhir", message_id),
        )  # fmt: skip


__all__ = [
    "APPLICATION",
    "APPLICATION_LAUNCHER",
    "AUDIT_LOG",
    "AUDIT_TOPIC",
    "AUTHENTICATION",
    "Action",
    "AuditRecord",
    "AuditSource",
    "Auditor",
    "Code",
    "DESTINATION",
    "NetworkType",
    "Outcome",
    "Participant",
    "ParticipantObject",
    "SOURCE",
    "STEWARD",
    "TRANSACTIONS",
    "Transaction",
    "cx",
    "cx_of_system",
    "fhir_client",
    "hl7_peer",
    "human_requestor",
    "network_point",
    "outbox_payload",
    "records_of_payload",
    "scope_roles",
    "system_of_cx",
    "transaction",
]
