-- FHIR search by _lastUpdated (issue 18): the records last updated in a period, found through
-- an index instead of a scan of every record (a client that synchronises asks for the records
-- changed since its last visit, often with no other parameter).
CREATE INDEX source_record_updated_at ON source_record (updated_at);
