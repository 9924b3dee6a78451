-- Registration at scale (issue 4: throughput at 1M persons >= 0.8 x at 10k).
--
-- 1. Blocking keys exist only for active records: merge and remove delete a record's keys,
--    an update that reactivates a record writes them again (feed.py keeps this invariant).
--    The candidate query therefore reads the key index alone (index-only scan) instead of
--    joining every id under a key to source_record to test its status: at 1M records a key
--    holds up to max_block + 1 ids and the join was most of the registration's database time.
--
-- 2. A new record locks only the keys that can give it candidates. A key whose block holds
--    more than max_block records is skipped by the candidate selection (unless every key is
--    that large: then the smallest block is used), so two registrations that share only such
--    a key can never become each other's candidates, and need not wait for each other. The
--    blocks are sized before the locks are taken; only the keys locked are then read for
--    candidates, so every key a registration reads candidates from is one it holds the lock
--    of (two registrations that could pair still run one after the other). At 1M records the
--    common keys (family name + postal code, given name + postal code, ...) are oversized and
--    were serialising unrelated registrations. (A block can shrink only when records are
--    merged or removed; one that crosses max_block between two registrations' sizing can
--    at worst let them miss each other, a missed match, never a false one.)
--
--    p_key_locks is now aligned with p_keys (the lock hash of each key, in the same order).
--
-- 3. The candidate cap is applied in the database (see register_candidates).
--
-- 4. Parties as an array (see register_candidates).

-- The result types change (parties: jsonb[]), so the three functions are dropped and created.
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
    p_max_candidates integer
) RETURNS TABLE (blocks jsonb, prefetched bigint[], parties jsonb[])
LANGUAGE plpgsql
-- Planned for the values at hand, as in 0004: a plan cached while the tables were small
-- (a new index) would scan them whole once they have grown, until ANALYZE re-plans it
-- (measured: 245 ms a call after 300,000 keys went in; ruling sequential scans out is not
-- enough, the planner then walks a whole index instead).
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_selected bigint[];
    v_blocks jsonb;
BEGIN
    -- Every block (at most p_per_key ids per key), and the candidates selected from them as
    -- matching.blocking.select_candidates does: usable blocks (at most p_max_block ids, or an
    -- id: key; when none, the smallest block, first among equals), ranked by shared keys (an
    -- id: key counts 100), ties in order of first appearance, cut at p_max_candidates.
    -- 3. The cut is made here, so that the candidates' persons are prefetched in the same
    --    call even when the cap bites (it used to cost two more round trips then).
    WITH blk AS (
        SELECT k.ord, k.key,
               ARRAY(SELECT b.source_record_id FROM blocking_key b
                     WHERE b.key = k.key
                       AND b.source_record_id IS DISTINCT FROM p_exclude
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
    ranked AS (
        SELECT x.id,
               sum(CASE WHEN u.key LIKE 'id:%' THEN 100 ELSE 1 END) AS score,
               min(u.ord * 1000000 + x.pos) AS first_seen
        FROM usable u, unnest(u.ids) WITH ORDINALITY AS x(id, pos)
        GROUP BY x.id
    )
    SELECT coalesce((SELECT jsonb_agg(jsonb_build_array(blk.key, to_jsonb(blk.ids))
                                      ORDER BY blk.ord) FROM blk), '[]'::jsonb),
           coalesce((SELECT array_agg(r.id ORDER BY r.score DESC, r.first_seen)
                     FROM (SELECT * FROM ranked ORDER BY score DESC, first_seen
                           LIMIT p_max_candidates) r), '{}'::bigint[])
    INTO v_blocks, v_selected;
    -- 4. An array of [record id, domain id, person id, normalized, version] values, not one
    --    jsonb_agg document: building that document cost about 10 ms for 200 candidates.
    RETURN QUERY
    SELECT v_blocks, v_selected,
           (SELECT coalesce(array_agg(jsonb_build_array(r.id, r.domain_id, l.person_id,
                                                        r.normalized, r.version) ORDER BY r.id),
                            '{}'::jsonb[])
            FROM link l JOIN source_record r ON r.id = l.source_record_id
            WHERE l.person_id IN (SELECT l2.person_id FROM link l2
                                  WHERE l2.source_record_id = ANY(v_selected))
              AND r.status = 'active');
END;
$$;

-- The keys of a new record worth locking and reading (see 2 above), with their lock hashes:
-- id: keys and keys holding at most p_max_block records; when there are none, the key of the
-- smallest block (first in order among equals).
CREATE FUNCTION usable_keys(
    p_keys text[],
    p_key_locks bigint[],
    p_max_block integer,
    OUT keys text[],
    OUT locks bigint[]
)
LANGUAGE plpgsql
SET plan_cache_mode = force_custom_plan  -- see register_candidates
AS $$
DECLARE
    v_smallest_key text;
    v_smallest_lock bigint;
BEGIN
    WITH sized AS (
        SELECT k.key, k.h, k.ord,
               (SELECT count(*) FROM (SELECT 1 FROM blocking_key b WHERE b.key = k.key
                                      LIMIT p_max_block + 1) s) AS n
        FROM unnest(p_keys, p_key_locks) WITH ORDINALITY AS k(key, h, ord)
    )
    SELECT coalesce(array_agg(s.key ORDER BY s.ord)
                        FILTER (WHERE s.key LIKE 'id:%' OR s.n <= p_max_block), '{}'),
           coalesce(array_agg(s.h ORDER BY s.ord)
                        FILTER (WHERE s.key LIKE 'id:%' OR s.n <= p_max_block), '{}'),
           (array_agg(s.key ORDER BY s.n, s.ord))[1],
           (array_agg(s.h ORDER BY s.n, s.ord))[1]
    INTO keys, locks, v_smallest_key, v_smallest_lock
    FROM sized s;
    IF cardinality(keys) = 0 AND v_smallest_key IS NOT NULL THEN
        keys := ARRAY[v_smallest_key];
        locks := ARRAY[v_smallest_lock];
    END IF;
END;
$$;

-- Step 1 of a registration (as in 0002), the new-record branch locking and reading only the
-- usable keys.
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
    old_keys text[], no_match bigint[], blocks jsonb, prefetched bigint[], parties jsonb[]
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
           NULL::jsonb, NULL::bigint[], NULL::jsonb[]
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
           c.blocks, c.prefetched, c.parties
    FROM register_candidates(v_keys, NULL, p_per_key, p_max_block, p_max_candidates) AS c;
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
    -- history and outbox rows known before the call (see append_events)
    p_command uuid[], p_event text[], p_entity text[], p_entity_id bigint[],
    p_person bigint[], p_record bigint[], p_before jsonb[], p_after jsonb[],
    p_actor text[], p_message text[],
    p_topic text[], p_payload jsonb[], p_outbox_command uuid[]
) RETURNS TABLE (
    version integer, updated_at timestamptz, others text[],
    person_id bigint, enterprise_id text, person_status text, person_merged_into bigint,
    person_version integer, person_created_at timestamptz, person_updated_at timestamptz,
    own_parties jsonb, blocks jsonb, prefetched bigint[], parties jsonb[]
)
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_version integer;
    v_updated timestamptz;
    v_person person%ROWTYPE;
    v_own jsonb;
    v_blocks jsonb;
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
