-- The digest of each processed message beside its reply (issue 16, item 5): a message that
-- reuses an earlier control id of its sender with other content is refused, not given the
-- reply stored for the first one. NULL for messages processed before this migration.
ALTER TABLE processed_message ADD COLUMN digest text;

-- Both functions change their signature (identity/store/sql/ holds the new definitions).
DROP FUNCTION message_begin(bigint, text, text);
DROP FUNCTION append_events(uuid[], text[], text[], bigint[], bigint[], bigint[], jsonb[],
                            jsonb[], text[], text[], text[], jsonb[], uuid[], text, text, text);
