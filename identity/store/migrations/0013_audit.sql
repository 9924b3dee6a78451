-- ATNA audit records (issue 16, item 4; docs/audit.md): one row per record (identity.audit
-- AuditRecord, its JSON in `record`), written in the transaction of the change or read it
-- records; searched by GET /fhir/AuditEvent. The other columns are what that search filters on:
--   transaction  "ITI-8", ..., "steward", "authentication", "audit-log"
--   event_id     DICOM EventID code (110110 Patient Record, 110112 Query, ...)
--   interaction  FHIR RESTful interaction of a FHIR-door transaction (BALP), else NULL
--   subtypes     AuditEvent.subtype codes: the interaction and the EventTypeCodes
--   agent        user id of the system that acted (the source: APP|FACILITY, a client id)
--   requestor    user id of the person who asked, when known (a steward, a token's user)
--   patients     the patient's identifiers as fully qualified CX (`value^^^&oid&ISO`)
CREATE TABLE audit_event (
    id          bigserial PRIMARY KEY,
    recorded    timestamptz NOT NULL,
    transaction text NOT NULL,
    event_id    text NOT NULL,
    interaction text,
    subtypes    text[] NOT NULL DEFAULT '{}',
    action      text NOT NULL,
    outcome     smallint NOT NULL,
    agent       text NOT NULL,
    requestor   text,
    patients    text[] NOT NULL DEFAULT '{}',
    record      jsonb NOT NULL
);

-- Searches return the newest first (id descending) and page by id.
CREATE INDEX audit_event_patients ON audit_event USING gin (patients);
CREATE INDEX audit_event_agent ON audit_event (agent, id);
CREATE INDEX audit_event_requestor ON audit_event (requestor, id) WHERE requestor IS NOT NULL;
CREATE INDEX audit_event_recorded ON audit_event (recorded);
CREATE INDEX audit_event_transaction ON audit_event (transaction, id);
CREATE INDEX audit_event_failures ON audit_event (id) WHERE outcome <> 0;
