-- Trigger function (migration 0014), for each statement that opens review items (an INSERT)
-- or changes their status (an UPDATE): keeps each open item's impact, the number of other open
-- items that share one of its records (as record or other record) or its candidate person, so
-- that the queue can be sorted by it through an index (review_item_open_impact). The items
-- whose status the statement set (inserted, opened, closed) and the open items that share a
-- record or person with them are counted again, in one UPDATE; a closed item's impact is 0.
-- The other items are row-locked in id order with SKIP LOCKED: the trigger never waits for
-- another transaction (a steward deciding one of them, a feed opening one), so it cannot add
-- a deadlock to the command that fired it; an item skipped, and two items opened at the same
-- moment by two transactions, keep a figure one off until the next change near them. The
-- impact orders work: it is not a figure to rely on exactly.
CREATE OR REPLACE FUNCTION review_item_impact() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_moved bigint[];
    v_ids bigint[];
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;  -- the UPDATE below, of impact only
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.id) INTO v_moved FROM new_rows n;
    ELSE
        SELECT array_agg(n.id) INTO v_moved
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.status IS DISTINCT FROM n.status;
    END IF;
    IF v_moved IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT x.id ORDER BY x.id) INTO v_ids
    FROM review_item m
    JOIN review_item x
      ON x.status = 'open'
     AND (x.id = m.id
          OR x.record_id = m.record_id OR x.record_id = m.other_record_id
          OR x.other_record_id = m.record_id OR x.other_record_id = m.other_record_id
          OR x.person_id = m.person_id)
    WHERE m.id = ANY (v_moved);
    SELECT array_agg(l.id) INTO v_ids FROM (
        SELECT id FROM review_item WHERE id = ANY (v_ids) OR id = ANY (v_moved)
        ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) l;  -- the statement's own rows: held already
    UPDATE review_item a SET impact = CASE WHEN a.status <> 'open' THEN 0 ELSE (
        SELECT count(*) FROM review_item x
        WHERE x.status = 'open' AND x.id <> a.id
          AND (x.record_id = a.record_id OR x.record_id = a.other_record_id
               OR x.other_record_id = a.record_id OR x.other_record_id = a.other_record_id
               OR x.person_id = a.person_id)) END
    WHERE a.id = ANY (v_ids) AND (a.status = 'open' OR a.impact <> 0);
    RETURN NULL;
END;
$$;
