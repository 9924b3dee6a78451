-- The steward's work (issue 17; docs/steward.md): review items get a version (every decision
-- names the version it was made on; a stale one is refused), the columns the queue filters
-- and sorts on (kept by triggers) and the queue's indexes; the log of steward commands.

-- version: 1 when opened, one more at every change of status (set_review_status).
-- hard_rules: the rules that fired on the pair (explanation -> decision -> hard_rules).
-- domain_ids: the source domains of the item's record and other record.
-- Both filled by the trigger review_item_fill, on every path that opens an item (the
-- registration function, the core's insert, the initial load's COPY); a record's domain never
-- changes.
-- impact: for an open item, how many other open items share one of its records or its
-- candidate person (the queue's impact sort); kept by the trigger review_item_impact.
ALTER TABLE review_item
    ADD COLUMN version integer NOT NULL DEFAULT 1,
    ADD COLUMN hard_rules text[] NOT NULL DEFAULT '{}',
    ADD COLUMN domain_ids integer[] NOT NULL DEFAULT '{}',
    ADD COLUMN impact integer NOT NULL DEFAULT 0;

-- sql/review_item_fill.sql and sql/review_item_impact.sql hold the current definitions;
-- created here because the triggers and the backfill below need them.
CREATE FUNCTION review_item_fill() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.hard_rules := ARRAY(
        SELECT jsonb_array_elements_text(NEW.explanation -> 'decision' -> 'hard_rules')
        WHERE jsonb_typeof(NEW.explanation -> 'decision' -> 'hard_rules') = 'array');
    NEW.domain_ids := ARRAY(
        SELECT DISTINCT r.domain_id FROM source_record r
        WHERE r.id = NEW.record_id OR r.id = NEW.other_record_id ORDER BY 1);
    RETURN NEW;
END;
$$;

CREATE TRIGGER review_item_fill BEFORE INSERT ON review_item
    FOR EACH ROW EXECUTE FUNCTION review_item_fill();

CREATE FUNCTION review_item_impact() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END; $$;  -- the body: sql/review_item_impact.sql

CREATE TRIGGER review_item_impact_insert AFTER INSERT ON review_item
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION review_item_impact();
CREATE TRIGGER review_item_impact_update AFTER UPDATE ON review_item
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION review_item_impact();

-- The queue: items of a status, oldest or newest first, paged (status, created_at, id); the
-- columns its filters and counts read are included, so that counting the open items under a
-- filter, and the open queue by hard rule and domain, read this index alone. The open items by
-- probability and by impact.
DROP INDEX review_item_open;
CREATE INDEX review_item_queue ON review_item (status, created_at, id)
    INCLUDE (score, hard_rules, domain_ids);
CREATE INDEX review_item_open_score ON review_item (score, id) WHERE status = 'open';
CREATE INDEX review_item_open_impact ON review_item (impact DESC, created_at, id)
    WHERE status = 'open';
-- The items of a record (record_id: review_item_open_pair for the open ones, and
-- review_item_record) or of a candidate person: an item's other candidates, the impact and
-- the items a decision settles.
CREATE INDEX review_item_record ON review_item (record_id);
CREATE INDEX review_item_other ON review_item (other_record_id)
    WHERE other_record_id IS NOT NULL;
CREATE INDEX review_item_open_person ON review_item (person_id)
    WHERE status = 'open' AND person_id IS NOT NULL;

-- Items opened before this migration (the impact trigger's body is not there yet: impact is
-- counted here, once).
UPDATE review_item i SET
    impact = CASE WHEN i.status <> 'open' THEN 0 ELSE (
        SELECT count(*) FROM review_item x
        WHERE x.status = 'open' AND x.id <> i.id
          AND (x.record_id = i.record_id OR x.record_id = i.other_record_id
               OR x.other_record_id = i.record_id OR x.other_record_id = i.other_record_id
               OR x.person_id = i.person_id)) END,
    hard_rules = ARRAY(
        SELECT jsonb_array_elements_text(i.explanation -> 'decision' -> 'hard_rules')
        WHERE jsonb_typeof(i.explanation -> 'decision' -> 'hard_rules') = 'array'),
    domain_ids = ARRAY(
        SELECT DISTINCT r.domain_id FROM source_record r
        WHERE r.id = i.record_id OR r.id = i.other_record_id ORDER BY 1);

-- One row per steward command (a decision on a review item, a merge of two persons, an
-- unlink, an undo), written in the command's transaction: who decided what and when, for the
-- decisions log and the dashboard. What the command changed is in history (command_id).
CREATE TABLE steward_decision (
    command_id     uuid PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('same_person', 'different_persons', 'dismiss',
                                                 'merge', 'unlink', 'undo')),
    review_item_id bigint REFERENCES review_item (id),
    person_ids     bigint[] NOT NULL DEFAULT '{}',
    record_ids     bigint[] NOT NULL DEFAULT '{}',
    reason         text,
    undoes         uuid
);
CREATE INDEX steward_decision_at ON steward_decision (at) INCLUDE (actor, kind);
CREATE INDEX steward_decision_actor ON steward_decision (actor, at);
CREATE INDEX steward_decision_undoes ON steward_decision (undoes) WHERE undoes IS NOT NULL;

-- The dashboard's share of automatic links counts the records joined to a person that
-- already existed: an automatic link with a score, or a manual or verified one. A person's
-- first record (an automatic link without a score) is left out, and out of this index.
CREATE INDEX link_joined ON link (kind) WHERE score IS NOT NULL OR kind <> 'automatic';
