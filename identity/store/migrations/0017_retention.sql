-- Retention (identity.maintenance, docs/operations.md "Self-maintenance"): what lets each
-- deletion find its rows without a pass over the table, and where archived history goes.
-- Expand-safe: indexes and a new table only, nothing an older release reads changes.

-- Delivered outbox rows by age. The update that delivers a row already changes the
-- predicate of outbox_pending (no HOT update), so this index adds one entry per delivery.
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE delivered_at IS NOT NULL;

-- Stored replies by age: one more index entry per message.
CREATE INDEX processed_message_created ON processed_message (created_at);

-- History rows older than [maintenance] history_retention_days, moved out of history (same
-- columns); undo refuses a command found here. Read by nothing on the hot path.
CREATE TABLE history_archive (
    id          bigint PRIMARY KEY,
    command_id  uuid NOT NULL,
    at          timestamptz NOT NULL,
    event       text NOT NULL,
    entity      text NOT NULL,
    entity_id   bigint NOT NULL,
    person_id   bigint,
    record_id   bigint,
    before      jsonb,
    after       jsonb,
    actor       text NOT NULL,
    message_id  text,
    archived_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX history_archive_command ON history_archive (command_id);
