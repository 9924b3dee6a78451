-- PDQ (ITI-21) on PID-18 (patient account number) and PID-21 (mother's identifier).
-- Both are held in source_record.demographics as received (account_number: CX.1;
-- mothers_identifier: {value, authority: {namespace, oid}, type}); they are searched through
-- partial expression indexes on that JSON, so no column, trigger or function changes: the
-- feed, update and bulk COPY paths keep writing demographics only, and a row without these
-- keys costs one predicate evaluation per index on write. CREATE INDEX covers existing rows.

CREATE INDEX source_record_account_number
    ON source_record ((demographics ->> 'account_number'))
    WHERE (demographics ->> 'account_number') IS NOT NULL;

CREATE INDEX source_record_mothers_identifier
    ON source_record ((demographics -> 'mothers_identifier' ->> 'value'))
    WHERE (demographics -> 'mothers_identifier' ->> 'value') IS NOT NULL;
