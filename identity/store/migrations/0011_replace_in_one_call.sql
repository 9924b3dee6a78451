-- A FHIR PUT of a known patient reads and writes its record in one call (issue 5: ITI-104
-- updates per second).
--
-- Until now an update took four round trips: BEGIN, register_begin (lock the record key, read
-- the record), register_update (lock the old and new blocking keys, write), COMMIT. Between the
-- two calls the service only decided what to write, and for a replacing update (a FHIR PUT:
-- the demographics and other identifiers given replace the stored ones) it knows that before
-- the first call: the write does not depend on what is stored. register_replace does both
-- calls' work in one: register_begin, then, when the record is known, active or removed, and
-- the update changes something, register_update with the history and outbox rows of the
-- update made here. What the service decides after the write (is the link still good?) is
-- unchanged. An HL7 v2 update (A08, A31) merges what it is sent with what is stored, so it
-- still reads first and writes second.
--
-- The blocking keys the record had are read in the call, so their lock ids are made in SQL:
-- key_lock(text) is the first 8 bytes of the key's SHA-256 as a signed bigint, and the service
-- makes every lock id (record, message, outbox and blocking keys) the same way
-- (identity.store.repository.key_hash; until now BLAKE2b). A service process of an earlier
-- version would take other locks than this one for the same keys: stop every process of the
-- old version before starting the new one (an upgrade runs this migration at start).
--
-- Other identifiers are written again only when their set changed (an update of a telephone
-- number no longer deletes and inserts the record's national and account numbers); the same
-- change is made to register_update, which the HL7 v2 path calls.

CREATE FUNCTION key_lock(p_key text) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT ('x' || left(encode(sha256(convert_to(p_key, 'UTF8')), 'hex'), 16))::bit(64)::bigint
$$;

-- Write a record's other identifiers when their set differs from the stored one (the same
-- domain, value and type code, in any order); returns whether it wrote.
CREATE FUNCTION write_other_identifiers(
    p_record_id bigint, p_domains integer[], p_values text[], p_types text[]
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier,
                                        coalesce(ri.type_code, '')]
                                  ORDER BY ri.domain_id, ri.identifier, coalesce(ri.type_code, ''))
                 FROM record_identifier ri WHERE ri.source_record_id = p_record_id), '{}')
       = coalesce((SELECT array_agg(ARRAY[x.d::text, x.v, x.t] ORDER BY x.d, x.v, x.t)
                   FROM (SELECT DISTINCT d, v, coalesce(t, '') AS t
                         FROM unnest(p_domains, p_values, p_types) AS u(d, v, t)) AS x), '{}')
    THEN
        RETURN false;
    END IF;
    DELETE FROM record_identifier WHERE source_record_id = p_record_id;
    IF cardinality(p_domains) > 0 THEN
        INSERT INTO record_identifier (source_record_id, domain_id, identifier, type_code)
        SELECT p_record_id, d, v, t FROM unnest(p_domains, p_values, p_types)
            WITH ORDINALITY AS x(d, v, t, ord)
        ORDER BY ord
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN true;
END;
$$;

-- As in 0006, but the other identifiers are written only when they changed.
CREATE OR REPLACE FUNCTION register_update(
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
    p_margin integer,
    p_min_keys integer,
    p_rare_block integer,
    p_command uuid[], p_event text[], p_entity text[], p_entity_id bigint[],
    p_person bigint[], p_record bigint[], p_before jsonb[], p_after jsonb[],
    p_actor text[], p_message text[],
    p_topic text[], p_payload jsonb[], p_outbox_command uuid[]
) RETURNS TABLE (
    version integer, updated_at timestamptz, others text[],
    person_id bigint, enterprise_id text, person_status text, person_merged_into bigint,
    person_version integer, person_created_at timestamptz, person_updated_at timestamptz,
    own_parties jsonb, candidates_found integer, prefetched bigint[], parties jsonb[]
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_version integer;
    v_updated timestamptz;
    v_person person%ROWTYPE;
    v_own jsonb;
    v_found integer;
    v_prefetched bigint[];
    v_parties jsonb[];
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

    PERFORM write_other_identifiers(p_record_id, p_other_domains, p_other_values, p_other_types);
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
                                                    r.normalized, r.version) ORDER BY r.id),
                        '[]'::jsonb)
        INTO v_own
        FROM link l JOIN source_record r ON r.id = l.source_record_id
        WHERE l.person_id = p_own_person AND r.status = 'active' AND r.id <> p_record_id;
        IF v_own = '[]'::jsonb THEN
            SELECT c.candidates_found, c.prefetched, c.parties INTO v_found, v_prefetched, v_parties
            FROM register_candidates(p_keys, p_record_id, p_per_key, p_max_block,
                                     p_max_candidates, p_margin, p_min_keys,
                                     p_rare_block) AS c;
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
           v_own, v_found, v_prefetched, v_parties;
END;
$$;

-- register_begin, then (a known record, not merged, that the update changes) register_update.
-- `outcome`: 'new' (not known: candidates read under its keys' locks, as register_begin),
-- 'merged' (nothing written), 'unchanged' (active and linked, with the same demographics and
-- other identifiers: nothing written) or 'updated'. The columns up to `oversized` are
-- register_begin's (the record as it was); the `new_` and `person_` columns and `own_parties`
-- are register_update's, and so are `candidates_found`, `prefetched` and `parties` when the
-- update read candidates. The update's history row (record_updated) and, when the record is
-- linked, its outbox rows (p_topics: record.updated and its subscribers) are written here;
-- p_all_keys: every blocking key of the new demographics (p_keys may leave out oversized ones).
CREATE FUNCTION register_replace(
    p_record_lock bigint,
    p_domain_id integer,
    p_identifier text,
    p_key_locks bigint[],
    p_keys text[],
    p_per_key integer,
    p_max_block integer,
    p_max_candidates integer,
    p_margin integer,
    p_min_keys integer,
    p_rare_block integer,
    p_presized boolean,
    p_all_keys text[],
    p_demographics jsonb,
    p_normalized jsonb,
    p_search text[],
    p_phone_digits text[],
    p_source text,
    p_other_domains integer[],
    p_other_values text[],
    p_other_types text[],
    p_command uuid,
    p_actor text,
    p_message text,
    p_topics text[]
) RETURNS TABLE (
    id bigint, domain_id integer, identifier text, status text, merged_into bigint,
    demographics jsonb, normalized jsonb, version integer,
    created_at timestamptz, updated_at timestamptz,
    person_id bigint, link_kind text, link_score double precision, link_actor text,
    link_created_at timestamptz, enterprise_id text, others text[],
    old_keys text[], no_match bigint[], candidates_found integer, prefetched bigint[],
    parties jsonb[], oversized text[],
    outcome text, new_version integer, new_updated_at timestamptz, new_others text[],
    person_status text, person_merged_into bigint, person_version integer,
    person_created_at timestamptz, person_updated_at timestamptz, own_parties jsonb
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    b record;
    u record;
    v_linked boolean;
    v_snapshot jsonb;
    v_payload jsonb;
BEGIN
    SELECT * INTO b
    FROM register_begin(p_record_lock, p_domain_id, p_identifier, p_key_locks, p_keys,
                        p_per_key, p_max_block, p_max_candidates, p_margin, p_min_keys,
                        p_rare_block, p_presized);
    v_linked := b.status = 'active' AND b.person_id IS NOT NULL;
    IF b.id IS NULL OR b.status = 'merged'
       OR (v_linked AND b.demographics = p_demographics
           AND b.others = coalesce(
               (SELECT array_agg(ARRAY[x.d::text, x.v, x.t] ORDER BY x.d, x.v, x.t)
                FROM (SELECT DISTINCT d, v, coalesce(t, '') AS t
                      FROM unnest(p_other_domains, p_other_values, p_other_types)
                           AS o(d, v, t)) AS x), '{}'))
    THEN
        RETURN QUERY SELECT b.id, b.domain_id, b.identifier, b.status, b.merged_into,
            b.demographics, b.normalized, b.version, b.created_at, b.updated_at, b.person_id,
            b.link_kind, b.link_score, b.link_actor, b.link_created_at, b.enterprise_id,
            b.others, b.old_keys, b.no_match, b.candidates_found, b.prefetched, b.parties,
            b.oversized,
            CASE WHEN b.id IS NULL THEN 'new' WHEN b.status = 'merged' THEN 'merged'
                 ELSE 'unchanged' END,
            NULL::integer, NULL::timestamptz, NULL::text[], NULL::text, NULL::bigint,
            NULL::integer, NULL::timestamptz, NULL::timestamptz, NULL::jsonb;
        RETURN;
    END IF;

    v_snapshot := jsonb_build_object('domain_id', b.domain_id, 'identifier', b.identifier,
                                     'status', b.status, 'demographics', b.demographics);
    v_payload := jsonb_build_object('event', 'record_updated', 'record_id', b.id,
                                    'person_ids', jsonb_build_array(b.person_id));
    SELECT * INTO u
    FROM register_update(
        ARRAY(SELECT key_lock(k) FROM unnest(p_all_keys || b.old_keys) AS k),
        b.id, p_demographics, p_normalized, p_search, p_phone_digits, p_source,
        p_other_domains, p_other_values, p_other_types, p_all_keys,
        CASE WHEN v_linked THEN b.person_id END,
        CASE WHEN v_linked AND b.link_kind = 'automatic' THEN b.person_id END,
        p_per_key, p_max_block, p_max_candidates, p_margin, p_min_keys, p_rare_block,
        ARRAY[p_command], ARRAY['record_updated'], ARRAY['source_record'], ARRAY[b.id],
        ARRAY[b.person_id], ARRAY[b.id], ARRAY[v_snapshot],
        ARRAY[v_snapshot || jsonb_build_object('status', 'active',
                                               'demographics', p_demographics)],
        ARRAY[p_actor], ARRAY[p_message],
        CASE WHEN v_linked THEN p_topics ELSE '{}' END,
        CASE WHEN v_linked THEN array_fill(v_payload, ARRAY[cardinality(p_topics)])
             ELSE '{}' END,
        CASE WHEN v_linked THEN array_fill(p_command, ARRAY[cardinality(p_topics)])
             ELSE '{}' END);
    RETURN QUERY SELECT b.id, b.domain_id, b.identifier, b.status, b.merged_into,
        b.demographics, b.normalized, b.version, b.created_at, b.updated_at, b.person_id,
        b.link_kind, b.link_score, b.link_actor, b.link_created_at, b.enterprise_id,
        b.others, b.old_keys, b.no_match, u.candidates_found, u.prefetched, u.parties,
        NULL::text[], 'updated', u.version, u.updated_at, u.others, u.person_status,
        u.person_merged_into, u.person_version, u.person_created_at, u.person_updated_at,
        u.own_parties;
END;
$$;
