-- Fewer, better candidates per registration (issue 4: throughput at 1M >= 0.8 x at 10k).
--
-- 1. A floor and a margin on shared keys. At 1M records a registration found ~60 candidates,
--    most of them sharing one weak key (phonetic family name + birth year, say) with the new
--    record while its true duplicate shares many; reading, scoring and deciding them was what
--    made a registration at 1M slower than at 10k. A candidate is now kept only when it shares
--    an identifier key with the record, or at least p_min_keys demographic keys (fewer when the
--    record has fewer usable ones: a record with sparse demographics still finds candidates;
--    one is enough when its block holds at most p_rare_block records: a rare key shared is
--    evidence, the keys whose blocks grow with the index are not) and no fewer than the best
--    candidate less p_margin (each NULL: not applied); the cap and the ranking are as before.
--    The evidence (true duplicates kept, the engine's decisions unchanged, the online path's
--    precision and recall) comes from benchmarks/candidate_recall.py and
--    benchmarks/online_quality.py and is in the README.
--
-- 2. The blocks are no longer returned: the selection made here is the one used (tested equal
--    to matching.blocking.select_candidates), and shipping every block's ids to the service
--    (up to max_block ids for each of ~15 keys at 1M) cost decoding for nothing.
--    ``candidates_found`` (how many distinct candidates the usable blocks held, before the
--    margin and the cap) stays for the log.
--
-- The result types change, so the three functions are dropped and created again.
DROP FUNCTION register_begin(bigint, integer, text, bigint[], text[], integer, integer, integer);
DROP FUNCTION register_update(bigint[], bigint, jsonb, jsonb, text[], text[], text, integer[],
                              text[], text[], text[], bigint, bigint, integer, integer, integer,
                              uuid[], text[], text[], bigint[], bigint[], bigint[], jsonb[],
                              jsonb[], text[], text[], text[], jsonb[], uuid[]);
DROP FUNCTION register_candidates(text[], bigint, integer, integer, integer);

CREATE FUNCTION register_candidates(
    p_keys text[],
    p_exclude bigint,
    p_per_key integer,
    p_max_block integer,
    p_max_candidates integer,
    p_margin integer,
    p_min_keys integer,
    p_rare_block integer
) RETURNS TABLE (candidates_found integer, prefetched bigint[], parties jsonb[])
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan  -- see 0004 and 0005
AS $$
DECLARE
    v_selected bigint[];
    v_found integer;
BEGIN
    -- matching.blocking.select_candidates: usable blocks (at most p_max_block ids, or an id:
    -- key; when none, the smallest block, first among equals); per candidate the id: keys and
    -- the other keys it shares; kept when it shares an id: key, or at least (best - p_margin)
    -- and at least p_min_keys other keys (fewer when the record has fewer usable other keys,
    -- and one is enough when its block holds at most p_rare_block records);
    -- ranked by 100 x id: keys + other keys, ties in order of first appearance; cut at
    -- p_max_candidates. (A NULL margin or floor is none: greatest ignores NULLs.) (Each block in record id order: the oldest records first.)
    WITH blk AS (
        SELECT k.ord, k.key,
               ARRAY(SELECT b.source_record_id FROM blocking_key b
                     WHERE b.key = k.key
                       AND b.source_record_id IS DISTINCT FROM p_exclude
                     ORDER BY b.source_record_id  -- the primary key's order: free, and stable
                     LIMIT p_per_key) AS ids
        FROM unnest(p_keys) WITH ORDINALITY AS k(key, ord)
    ),
    nonempty AS (
        SELECT * FROM blk WHERE cardinality(blk.ids) > 0
    ),
    usable AS (
        SELECT * FROM nonempty u
        WHERE cardinality(u.ids) <= p_max_block OR u.key LIKE 'id:%'
        UNION ALL
        (SELECT * FROM nonempty s
         WHERE NOT EXISTS (SELECT 1 FROM nonempty u
                           WHERE cardinality(u.ids) <= p_max_block OR u.key LIKE 'id:%')
         ORDER BY cardinality(s.ids), s.ord
         LIMIT 1)
    ),
    shared AS (
        SELECT x.id,
               count(*) FILTER (WHERE u.key LIKE 'id:%') AS by_id,
               count(*) FILTER (WHERE u.key NOT LIKE 'id:%') AS by_demographics,
               min(cardinality(u.ids)) FILTER (WHERE u.key NOT LIKE 'id:%') AS rarest,
               min(u.ord * 1000000 + x.pos) AS first_seen
        FROM usable u, unnest(u.ids) WITH ORDINALITY AS x(id, pos)
        GROUP BY x.id
    ),
    bounds AS (
        SELECT (SELECT max(s.by_demographics) FROM shared s) - p_margin AS by_margin,
               least(coalesce(p_min_keys, 0),
                     (SELECT count(*) FROM blk
                      WHERE blk.key NOT LIKE 'id:%'
                        AND cardinality(blk.ids) <= p_max_block)) AS by_keys
    ),
    kept AS (
        SELECT s.* FROM shared s, bounds b
        WHERE s.by_id > 0
           OR s.by_demographics >= greatest(b.by_margin, b.by_keys, 0)
           OR (s.rarest <= p_rare_block AND s.by_demographics >= coalesce(b.by_margin, 0))
        ORDER BY 100 * s.by_id + s.by_demographics DESC, s.first_seen
        LIMIT p_max_candidates
    )
    SELECT (SELECT count(*) FROM shared),
           coalesce((SELECT array_agg(k.id ORDER BY 100 * k.by_id + k.by_demographics DESC,
                                      k.first_seen) FROM kept k), '{}'::bigint[])
    INTO v_found, v_selected;
    -- An array of [record id, domain id, person id, normalized, version] values (as in 0005).
    RETURN QUERY
    SELECT v_found, v_selected,
           (SELECT coalesce(array_agg(jsonb_build_array(r.id, r.domain_id, l.person_id,
                                                        r.normalized, r.version) ORDER BY r.id),
                            '{}'::jsonb[])
            FROM link l JOIN source_record r ON r.id = l.source_record_id
            WHERE l.person_id IN (SELECT l2.person_id FROM link l2
                                  WHERE l2.source_record_id = ANY(v_selected))
              AND r.status = 'active');
END;
$$;

CREATE FUNCTION register_begin(
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
    p_rare_block integer
) RETURNS TABLE (
    id bigint, domain_id integer, identifier text, status text, merged_into bigint,
    demographics jsonb, normalized jsonb, version integer,
    created_at timestamptz, updated_at timestamptz,
    person_id bigint, link_kind text, link_score double precision, link_actor text,
    link_created_at timestamptz, enterprise_id text, others text[],
    old_keys text[], no_match bigint[], candidates_found integer, prefetched bigint[],
    parties jsonb[]
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_keys text[];
    v_locks bigint[];
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
           NULL::integer, NULL::bigint[], NULL::jsonb[]
    FROM source_record r
    LEFT JOIN link l ON l.source_record_id = r.id
    LEFT JOIN person p ON p.id = l.person_id
    WHERE r.domain_id = p_domain_id AND r.identifier = p_identifier
    FOR NO KEY UPDATE OF r;
    IF FOUND THEN
        RETURN;
    END IF;

    SELECT u.keys, u.locks INTO v_keys, v_locks
    FROM usable_keys(p_keys, p_key_locks, p_max_block) AS u;
    PERFORM lock_keys(v_locks);
    RETURN QUERY
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::bigint, NULL::jsonb,
           NULL::jsonb, NULL::integer, NULL::timestamptz, NULL::timestamptz,
           NULL::bigint, NULL::text, NULL::double precision, NULL::text,
           NULL::timestamptz, NULL::text, NULL::text[], NULL::text[], NULL::bigint[],
           c.candidates_found, c.prefetched, c.parties
    FROM register_candidates(v_keys, NULL, p_per_key, p_max_block, p_max_candidates,
                             p_margin, p_min_keys, p_rare_block) AS c;
END;
$$;

-- Step 2 of an update (as in 0004), returning parties as jsonb[].
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
