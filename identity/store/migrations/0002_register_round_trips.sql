-- Registration in few round trips. Each function runs its statements with fresh snapshots
-- (volatile PL/pgSQL, READ COMMITTED), so that what is read after a lock was taken sees every
-- transaction that held the lock before.

-- The history rows, outbox rows and stored reply of a command, in one call (parallel arrays,
-- in order; p_sender NULL: no reply to store).
CREATE FUNCTION append_events(
    p_command uuid[], p_event text[], p_entity text[], p_entity_id bigint[],
    p_person bigint[], p_record bigint[], p_before jsonb[], p_after jsonb[],
    p_actor text[], p_message text[],
    p_topic text[], p_payload jsonb[], p_outbox_command uuid[],
    p_sender text, p_control_id text, p_reply text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_event) > 0 THEN
        INSERT INTO history (command_id, event, entity, entity_id, person_id, record_id,
                             before, after, actor, message_id)
        SELECT x.c, x.e, x.n, x.i, x.p, x.r, x.b, x.a, x.w, x.m
        FROM unnest(p_command, p_event, p_entity, p_entity_id, p_person, p_record, p_before,
                    p_after, p_actor, p_message)
             WITH ORDINALITY AS x(c, e, n, i, p, r, b, a, w, m, o)
        ORDER BY x.o;
    END IF;
    IF cardinality(p_topic) > 0 THEN
        INSERT INTO outbox (topic, payload, command_id)
        SELECT y.t, y.p, y.c
        FROM unnest(p_topic, p_payload, p_outbox_command) WITH ORDINALITY AS y(t, p, c, o)
        ORDER BY y.o;
    END IF;
    IF p_sender IS NOT NULL THEN
        INSERT INTO processed_message (sender, control_id, reply)
        VALUES (p_sender, p_control_id, p_reply)
        ON CONFLICT DO NOTHING;
    END IF;
END;
$$;

-- The candidates of a record (p_exclude: the record itself, NULL when it is new), read under
-- the caller's blocking-key locks: every block (the active records under each key, at most
-- p_per_key) and, when the usable blocks (at most p_max_block records, or an id: key) hold at
-- most p_max_candidates records, those records (prefetched) and every active record of their
-- persons (parties: [record id, domain id, person id, normalized], by record id). When the
-- cap bites, prefetched and parties are NULL: the caller selects and fetches.
CREATE FUNCTION register_candidates(
    p_keys text[],
    p_exclude bigint,
    p_per_key integer,
    p_max_block integer,
    p_max_candidates integer
) RETURNS TABLE (blocks jsonb, prefetched bigint[], parties jsonb)
LANGUAGE plpgsql
-- Planned for the values at hand: a plan cached while the tables were small (a new index)
-- scans them whole once they have grown.
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_usable bigint[];
    v_blocks jsonb;
BEGIN
    WITH blk AS (
        SELECT k.ord, k.key,
               ARRAY(SELECT b.source_record_id FROM blocking_key b
                     JOIN source_record r ON r.id = b.source_record_id
                     WHERE b.key = k.key AND r.status = 'active'
                       AND b.source_record_id IS DISTINCT FROM p_exclude
                     LIMIT p_per_key) AS ids
        FROM unnest(p_keys) WITH ORDINALITY AS k(key, ord)
    )
    SELECT coalesce(jsonb_agg(jsonb_build_array(blk.key, to_jsonb(blk.ids)) ORDER BY blk.ord),
                    '[]'::jsonb),
           coalesce((SELECT array_agg(DISTINCT x) FROM blk u, unnest(u.ids) AS x
                     WHERE cardinality(u.ids) <= p_max_block OR u.key LIKE 'id:%'),
                    '{}'::bigint[])
    INTO v_blocks, v_usable
    FROM blk;
    IF cardinality(v_usable) > p_max_candidates THEN
        RETURN QUERY SELECT v_blocks, NULL::bigint[], NULL::jsonb;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT v_blocks, v_usable,
           (SELECT coalesce(jsonb_agg(jsonb_build_array(r.id, r.domain_id, l.person_id,
                                                        r.normalized) ORDER BY r.id),
                            '[]'::jsonb)
            FROM link l JOIN source_record r ON r.id = l.source_record_id
            WHERE l.person_id IN (SELECT l2.person_id FROM link l2
                                  WHERE l2.source_record_id = ANY(v_usable))
              AND r.status = 'active');
END;
$$;

-- Step 1 of a registration: lock the record key, read the record (row-locked FOR NO KEY UPDATE,
-- which a foreign-key check does not wait for) with its blocking keys and no-match partners.
-- A record not yet known has no old blocking keys: its new ones (p_key_locks, hashed by the
-- caller) are then locked in the same call, in one sorted call after the record key, and its
-- candidates are fetched: every block (the active records under each key, at most p_per_key)
-- and, when the usable blocks (at most p_max_block records, or an id: key) hold at most
-- p_max_candidates records, every active record of their persons (prefetched, else NULL).
CREATE FUNCTION register_begin(
    p_record_lock bigint,
    p_domain_id integer,
    p_identifier text,
    p_key_locks bigint[],
    p_keys text[],
    p_per_key integer,
    p_max_block integer,
    p_max_candidates integer
) RETURNS TABLE (
    id bigint, domain_id integer, identifier text, status text, merged_into bigint,
    demographics jsonb, normalized jsonb, version integer,
    created_at timestamptz, updated_at timestamptz,
    person_id bigint, link_kind text, link_score double precision, link_actor text,
    link_created_at timestamptz, enterprise_id text, others text[],
    old_keys text[], no_match bigint[], blocks jsonb, prefetched bigint[], parties jsonb
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(p_record_lock);
    RETURN QUERY
    SELECT r.id, r.domain_id, r.identifier, r.status, r.merged_into, r.demographics,
           r.normalized, r.version, r.created_at, r.updated_at,
           l.person_id, l.kind, l.score, l.actor, l.created_at, p.enterprise_id,
           coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier,
                                            coalesce(ri.type_code, '')]
                                      ORDER BY ri.domain_id, ri.identifier)
                     FROM record_identifier ri WHERE ri.source_record_id = r.id), '{}'),
           ARRAY(SELECT b.key::text FROM blocking_key b WHERE b.source_record_id = r.id
                 ORDER BY b.key),
           ARRAY(SELECT n.record_b FROM no_match n WHERE n.record_a = r.id
                 UNION SELECT n.record_a FROM no_match n WHERE n.record_b = r.id),
           NULL::jsonb, NULL::bigint[], NULL::jsonb
    FROM source_record r
    LEFT JOIN link l ON l.source_record_id = r.id
    LEFT JOIN person p ON p.id = l.person_id
    WHERE r.domain_id = p_domain_id AND r.identifier = p_identifier
    FOR NO KEY UPDATE OF r;
    IF FOUND THEN
        RETURN;
    END IF;

    PERFORM lock_keys(p_key_locks);
    RETURN QUERY
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::bigint, NULL::jsonb,
           NULL::jsonb, NULL::integer, NULL::timestamptz, NULL::timestamptz,
           NULL::bigint, NULL::text, NULL::double precision, NULL::text,
           NULL::timestamptz, NULL::text, NULL::text[], NULL::text[], NULL::bigint[],
           c.blocks, c.prefetched, c.parties
    FROM register_candidates(p_keys, NULL, p_per_key, p_max_block, p_max_candidates) AS c;
END;
$$;

-- Step 2 of the registration of a new record: the record, its other identifiers and blocking
-- keys, its person (p_person_id: the person it links to, touched; NULL: a new person), its link
-- and its review items, in one call. Returns what the reply needs and the database assigned.
CREATE FUNCTION register_insert(
    p_domain_id integer,
    p_identifier text,
    p_demographics jsonb,
    p_normalized jsonb,
    p_search text[],          -- family_norm, given_norm, family_phon, given_phon, birth_date,
                              -- sex, postal_code, city_norm, mothers_maiden_norm
    p_phone_digits text[],
    p_source text,
    p_other_domains integer[],
    p_other_values text[],
    p_other_types text[],
    p_keys text[],
    p_person_id bigint,
    p_link_kind text,
    p_link_score double precision,
    p_link_explanation jsonb,
    p_actor text,
    p_review_others bigint[],
    p_review_persons bigint[],
    p_review_scores double precision[],
    p_review_reasons text[],
    p_review_explanations jsonb    -- a JSON array, one element per review item
) RETURNS TABLE (
    record_id bigint, tx_now timestamptz, others text[],
    person_id bigint, enterprise_id text, person_status text, person_merged_into bigint,
    person_version integer, person_created_at timestamptz, person_updated_at timestamptz,
    review_ids bigint[], review_explanations jsonb
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_record bigint;
    v_person person%ROWTYPE;
    v_review bigint;
    v_review_explanation jsonb;
    v_ids bigint[] := '{}';
    v_explanations jsonb := '[]'::jsonb;
BEGIN
    INSERT INTO source_record (domain_id, identifier, demographics, normalized,
        family_norm, given_norm, family_phon, given_phon, birth_date, sex,
        postal_code, city_norm, phone_digits, mothers_maiden_norm, last_source)
    VALUES (p_domain_id, p_identifier, p_demographics, p_normalized,
        p_search[1], p_search[2], p_search[3], p_search[4], p_search[5], p_search[6],
        p_search[7], p_search[8], p_phone_digits, p_search[9], p_source)
    RETURNING source_record.id INTO v_record;

    IF cardinality(p_other_domains) > 0 THEN
        INSERT INTO record_identifier (source_record_id, domain_id, identifier, type_code)
        SELECT v_record, d, v, t FROM unnest(p_other_domains, p_other_values, p_other_types)
            WITH ORDINALITY AS x(d, v, t, ord)
        ORDER BY ord
        ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(p_keys) > 0 THEN
        INSERT INTO blocking_key (key, source_record_id)
        SELECT DISTINCT k, v_record FROM unnest(p_keys) AS k;
    END IF;

    IF p_person_id IS NULL THEN
        INSERT INTO person (enterprise_id)
        VALUES (lpad(nextval('enterprise_id_seq')::text, 10, '0'))
        RETURNING * INTO v_person;
    ELSE
        UPDATE person SET version = version + 1, updated_at = now() WHERE id = p_person_id
        RETURNING * INTO v_person;
    END IF;

    INSERT INTO link (source_record_id, person_id, kind, score, explanation, actor)
    VALUES (v_record, v_person.id, p_link_kind, p_link_score, p_link_explanation, p_actor);

    FOR i IN 1 .. coalesce(cardinality(p_review_reasons), 0) LOOP
        v_review := NULL;
        v_review_explanation := NULL;
        INSERT INTO review_item (record_id, other_record_id, person_id, score, reason,
                                 explanation)
        VALUES (v_record, p_review_others[i], p_review_persons[i], p_review_scores[i],
                p_review_reasons[i], p_review_explanations -> (i - 1))
        ON CONFLICT (record_id, coalesce(other_record_id, 0), coalesce(person_id, 0))
            WHERE status = 'open' DO NOTHING
        RETURNING review_item.id, review_item.explanation INTO v_review, v_review_explanation;
        v_ids := v_ids || v_review;
        v_explanations := v_explanations || jsonb_build_array(v_review_explanation);
    END LOOP;

    RETURN QUERY
    SELECT v_record, now(),
           coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier,
                                            coalesce(ri.type_code, '')]
                                      ORDER BY ri.domain_id, ri.identifier)
                     FROM record_identifier ri WHERE ri.source_record_id = v_record), '{}'),
           v_person.id, v_person.enterprise_id, v_person.status, v_person.merged_into,
           v_person.version, v_person.created_at, v_person.updated_at,
           v_ids, v_explanations;
END;
$$;

-- Step 2 of an update: lock the blocking keys (old and new, hashed by the caller; one sorted
-- call), write the record, its other identifiers and blocking keys and the history and outbox
-- rows known so far, touch its person
-- (p_touch_person, may be NULL) and return, besides what the reply needs, the other active
-- records of p_own_person (the record's current person), read after the locks.
CREATE FUNCTION register_update(
    p_key_locks bigint[],
    p_record_id bigint,
    p_demographics jsonb,
    p_normalized jsonb,
    p_search text[],
    p_phone_digits text[],
    p_source text,
    p_other_domains integer[],
    p_other_values text[],
    p_other_types text[],
    p_keys text[],
    p_touch_person bigint,
    p_own_person bigint,
    p_per_key integer,
    p_max_block integer,
    p_max_candidates integer,
    -- history and outbox rows known before the call (see append_events)
    p_command uuid[], p_event text[], p_entity text[], p_entity_id bigint[],
    p_person bigint[], p_record bigint[], p_before jsonb[], p_after jsonb[],
    p_actor text[], p_message text[],
    p_topic text[], p_payload jsonb[], p_outbox_command uuid[]
) RETURNS TABLE (
    version integer, updated_at timestamptz, others text[],
    person_id bigint, enterprise_id text, person_status text, person_merged_into bigint,
    person_version integer, person_created_at timestamptz, person_updated_at timestamptz,
    own_parties jsonb, blocks jsonb, prefetched bigint[], parties jsonb
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_version integer;
    v_updated timestamptz;
    v_person person%ROWTYPE;
    v_own jsonb;
    v_blocks jsonb;
    v_prefetched bigint[];
    v_parties jsonb;
BEGIN
    PERFORM lock_keys(p_key_locks);
    UPDATE source_record SET demographics = p_demographics, normalized = p_normalized,
           family_norm = p_search[1], given_norm = p_search[2], family_phon = p_search[3],
           given_phon = p_search[4], birth_date = p_search[5], sex = p_search[6],
           postal_code = p_search[7], city_norm = p_search[8], phone_digits = p_phone_digits,
           mothers_maiden_norm = p_search[9], last_source = p_source,
           status = 'active', merged_into = NULL,
           version = source_record.version + 1, updated_at = now()
    WHERE source_record.id = p_record_id
    RETURNING source_record.version, source_record.updated_at INTO v_version, v_updated;

    DELETE FROM record_identifier WHERE source_record_id = p_record_id;
    IF cardinality(p_other_domains) > 0 THEN
        INSERT INTO record_identifier (source_record_id, domain_id, identifier, type_code)
        SELECT p_record_id, d, v, t FROM unnest(p_other_domains, p_other_values, p_other_types)
            WITH ORDINALITY AS x(d, v, t, ord)
        ORDER BY ord
        ON CONFLICT DO NOTHING;
    END IF;
    -- the blocking keys: only the difference is written
    DELETE FROM blocking_key b
    WHERE b.source_record_id = p_record_id AND NOT (b.key = ANY(p_keys));
    INSERT INTO blocking_key (key, source_record_id)
    SELECT DISTINCT k, p_record_id FROM unnest(p_keys) AS k
    ON CONFLICT DO NOTHING;

    IF p_touch_person IS NOT NULL THEN
        UPDATE person SET version = person.version + 1, updated_at = now()
        WHERE person.id = p_touch_person
        RETURNING * INTO v_person;
    END IF;
    PERFORM append_events(p_command, p_event, p_entity, p_entity_id, p_person, p_record,
                          p_before, p_after, p_actor, p_message,
                          p_topic, p_payload, p_outbox_command, NULL, NULL, NULL);

    IF p_own_person IS NOT NULL THEN
        SELECT coalesce(jsonb_agg(jsonb_build_array(r.id, r.domain_id, l.person_id,
                                                    r.normalized) ORDER BY r.id),
                        '[]'::jsonb)
        INTO v_own
        FROM link l JOIN source_record r ON r.id = l.source_record_id
        WHERE l.person_id = p_own_person AND r.status = 'active' AND r.id <> p_record_id;
        IF v_own = '[]'::jsonb THEN
            SELECT c.blocks, c.prefetched, c.parties INTO v_blocks, v_prefetched, v_parties
            FROM register_candidates(p_keys, p_record_id, p_per_key, p_max_block,
                                     p_max_candidates) AS c;
        END IF;
    END IF;

    RETURN QUERY
    SELECT v_version, v_updated,
           coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier,
                                            coalesce(ri.type_code, '')]
                                      ORDER BY ri.domain_id, ri.identifier)
                     FROM record_identifier ri WHERE ri.source_record_id = p_record_id), '{}'),
           v_person.id, v_person.enterprise_id, v_person.status, v_person.merged_into,
           v_person.version, v_person.created_at, v_person.updated_at,
           v_own, v_blocks, v_prefetched, v_parties;
END;
$$;
