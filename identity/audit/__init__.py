"""ATNA audit (IHE ITI-20): audit records (``record``), their DICOM AuditMessage (``dicom``) and
FHIR AuditEvent (``fhir``) forms, the syslog sender (``syslog``) and the outbox worker that
uses it (``deliver``). Storage is identity.store.audit, the search identity.fhir.audit. See
docs/audit.md."""

from identity.audit.record import (
    AUDIT_TOPIC,
    Action,
    Auditor,
    AuditRecord,
    AuditSource,
    Outcome,
    Participant,
    cx,
    fhir_client,
    hl7_peer,
    human_requestor,
    scope_roles,
)

__all__ = [
    "AUDIT_TOPIC",
    "Action",
    "AuditRecord",
    "AuditSource",
    "Auditor",
    "Outcome",
    "Participant",
    "cx",
    "fhir_client",
    "hl7_peer",
    "human_requestor",
    "scope_roles",
]
