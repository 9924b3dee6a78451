"""Records of each kind, as the doors will build them, for the audit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from identity.audit.record import (
    Auditor,
    AuditRecord,
    cx,
    fhir_client,
    hl7_peer,
    human_requestor,
    scope_roles,
)
from identity.config import Settings

AT = datetime(2026, 12, 3, 2, 28, 40, 123456, tzinfo=UTC)
HOSPA = "1.2.3.4.5.1"
MPI = "1.3.6.1.4.1.21367.2026.1.1"
PIX_QUERY = (
    b"MSH|^~\\&|PIXC|CLINIC|IDENTITY|MPI|20261203022831||QBP^Q23^QBP_Q21|PIXC-000001|P|2.5\r"
    b"QPD|IHE PIX Query|Q0001|HA1001^^^HOSPA\rRCP|I\r"
)
PDQ_QUERY = (
    b"MSH|^~\\&|PDQC|CLINIC|IDENTITY|MPI|20261203022831||QBP^Q22^QBP_Q21|PDQC-000001|P|2.5\r"
    b"QPD|IHE PDQ Query|Q0002|@PID.5.1.1^EVERYWOMAN\rRCP|I\r"
)


def auditor() -> Auditor:
    settings = Settings(audit={"source_id": "identity-test", "enterprise_site": "HOSP"})
    return Auditor(settings, hostname="mpi.example.org",
                   fhir_endpoint="https://mpi.example.org/fhir")  # fmt: skip


def feed(action: str = "C", at: datetime = AT) -> AuditRecord:
    """An ADT^A04 (action C) or A08 (U) from ADT_A|HOSPA."""
    return auditor().patient_feed(
        "ITI-8",
        action=action,
        caller=hl7_peer("ADT_A", "HOSPA", "10.1.2.3"),
        patient=[cx("HA1001", oid=HOSPA), cx("0000000001", oid=MPI)],
        message_id="HOSPA-000001",
        at=at,
    )


def pix_query(at: datetime = AT) -> AuditRecord:
    [record] = auditor().query(
        "ITI-9",
        caller=hl7_peer("PIXC", "CLINIC", "10.1.2.4"),
        query=PIX_QUERY,
        patients=[[cx("HA1001", oid=HOSPA), cx("0000000001", oid=MPI)]],
        message_id="PIXC-000001",
        query_id="Q0001",
        at=at,
    )
    return record


def pdq_query(at: datetime = AT) -> list[AuditRecord]:
    return auditor().query(
        "ITI-21",
        caller=hl7_peer("PDQC", "CLINIC", "10.1.2.5"),
        query=PDQ_QUERY,
        patients=[[cx("HA1001", oid=HOSPA)], [cx("B-77001", namespace="HOSPB")]],
        message_id="PDQC-000001",
        query_id="Q0002",
        at=at,
    )


def pixm_query(at: datetime = AT) -> AuditRecord:
    [record] = auditor().query(
        "ITI-83",
        caller=fhir_client("PIXM_APP", "10.1.2.6"),
        query=b"GET /fhir/Patient/$ihe-pix?sourceIdentifier=urn:oid:1.2.3.4.5.1|HA1001",
        patients=[[cx("HA1001", oid=HOSPA)]],
        message_id="req-83",
        human=human_requestor("dr.who", roles=scope_roles(["system/Patient.read"])),
        at=at,
    )
    return record


def pdqm_query(at: datetime = AT) -> list[AuditRecord]:
    return auditor().query(
        "ITI-78",
        caller=fhir_client("PDQM_APP", "10.1.2.7"),
        query=b"GET /fhir/Patient?family=EVERYWOMAN&birthdate=1980-03-12",
        patients=[],
        message_id="req-78",
        at=at,
    )


def pixm_feed(action: str = "U", at: datetime = AT) -> AuditRecord:
    return auditor().patient_feed(
        "ITI-104",
        action=action,
        caller=fhir_client("HOSPA_FHIR", "10.1.2.8"),
        patient=[cx("HA1002", oid=HOSPA)],
        message_id="req-104",
        resource="Patient/3",
        at=at,
    )


def refused_feed(at: datetime = AT) -> AuditRecord:
    return auditor().refused(
        "ITI-8",
        caller=hl7_peer("ADT_B", "HOSPB", "10.1.2.9"),
        reason="ADT_B may not assign identifiers in HOSPA",
        action="U",
        patient=[cx("HA1001", oid=HOSPA)],
        message_id="HOSPB-000009",
        at=at,
    )


def refused_query(at: datetime = AT) -> AuditRecord:
    return auditor().refused(
        "ITI-78",
        caller=fhir_client("NOSCOPE", "10.1.2.10"),
        reason="the token has no system/Patient.read scope",
        query=b"GET /fhir/Patient?family=EVERYWOMAN",
        message_id="req-403",
        at=at,
    )


def steward_link(at: datetime = AT) -> AuditRecord:
    return auditor().steward_decision(
        "link",
        steward=human_requestor("steward.sue", user_name="Sue Steward",
                                roles=scope_roles(["steward"])),
        application=fhir_client("STEWARD_CONSOLE", "10.1.2.11"),
        patient=[cx("HA1001", oid=HOSPA), cx("B-77001", namespace="HOSPB")],
        message_id="req-steward",
        at=at,
    )  # fmt: skip


def every_kind() -> list[AuditRecord]:
    a = auditor()
    return [
        feed("C"),
        feed("U"),
        pix_query(),
        *pdq_query(),
        pixm_query(),
        *pdqm_query(),
        pixm_feed("C"),
        pixm_feed("D"),
        refused_feed(),
        refused_query(),
        steward_link(),
        a.notification(consumer=hl7_peer("PIXC", "HOSP", "10.1.2.12"),
                       patient=[cx("HA1001", oid=HOSPA)], message_id="N1", at=AT),
        a.read(caller=fhir_client("APP"), patient=[cx("HA1001", oid=HOSPA)],
               resource="Patient/1", request="GET /fhir/Patient/1", message_id="r1", at=AT),
        a.authentication_failure(caller=fhir_client(None, "10.9.9.9"), reason="token expired",
                                 door="fhir", attempted="ITI-78", at=AT),
        a.authentication_failure(caller=hl7_peer(None, None, "10.9.9.8"), node=True,
                                 reason="CERTIFICATE_VERIFY_FAILED", door="hl7v2", at=AT),
        a.audit_log_used(caller=fhir_client("AUDITOR"), query="GET /fhir/AuditEvent?patient=x",
                         log_uri="https://mpi.example.org/fhir/AuditEvent", at=AT),
        a.patient_feed("ITI-93", action="U", caller=fhir_client("PMIR_SRC"),
                       patient=[cx("HA1001", oid=HOSPA)], message_id="b1", at=AT),
    ]  # fmt: skip
