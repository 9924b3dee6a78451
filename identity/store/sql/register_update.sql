-- register_update, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0002, 0004, 0005, 0006.

-- Step 2 of an update: lock the blocking keys (old and new, hashed by the caller; one sorted
-- call), write the record, its other identifiers and blocking keys and the history and outbox
-- rows known so far, touch its person (p_touch_person, may be NULL) and return, besides what
-- the reply needs, the candidates of the record (register_candidates) and the other active
-- records of p_own_person (the record's current person), read after the locks.
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
    -- history and outbox rows known before the call (see append_events)
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
                          p_topic, p_payload, p_outbox_command, NULL, NULL, NULL, NULL);

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
