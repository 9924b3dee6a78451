-- A new record's blocks are read once when the service knows which of its keys are oversized
-- (issue 4: A04 throughput).
--
-- Since 0005 a new record sized every key's block (usable_keys) before locking the usable ones
-- and reading them (register_candidates): two passes over the same blocks. Called alone on 200
-- new records' keys, the two took 1.2-1.6 ms a record at 1M records and 1.1 ms at 10k; the
-- read alone 0.7 ms and 0.5-0.6 ms. The sizing pass only answers which keys hold more than
-- max_block records, which changes rarely: a block grows past max_block once and shrinks only
-- when records are merged or removed.
--
-- So register_candidates now also returns the keys it found oversized (`oversized`), the
-- service remembers them (identity.mpi.feed.OversizedKeys), and register_begin takes
-- `p_presized`: true when the caller left out the keys it knows to be oversized, so that every
-- key given is locked and read at once, without the sizing pass. Every key whose block a
-- registration reads is still one it holds the lock of (0005). A key not yet known to be
-- oversized is locked by the registrations that meet it until one of them has read its block
-- and reported it; a key that shrank below max_block stays left out until the service forgets
-- what it knew (at worst a missed candidate, never a false one). With p_presized false (no key
-- left after leaving out the known ones) the sizing pass runs as before.
--
-- The result types change, so the two functions are dropped and created again; register_update
-- (0006) reads register_candidates' columns by name and is unchanged.
DROP FUNCTION register_begin(bigint, integer, text, bigint[], text[], integer, integer, integer,
                             integer, integer, integer);
DROP FUNCTION register_candidates(text[], bigint, integer, integer, integer, integer, integer,
                                  integer);

-- As in 0006 (the selection) and 0009 (the plan settings), plus `oversized`: the keys given
-- whose blocks hold more than p_max_block records (id: keys excepted, as they are always read).
CREATE FUNCTION register_candidates(
    p_keys text[],
    p_exclude bigint,
    p_per_key integer,
    p_max_block integer,
    p_max_candidates integer,
    p_margin integer,
    p_min_keys integer,
    p_rare_block integer
) RETURNS TABLE (candidates_found integer, prefetched bigint[], parties jsonb[],
                 oversized text[])
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    v_selected bigint[];
    v_found integer;
    v_oversized text[];
BEGIN
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
                                      k.first_seen) FROM kept k), '{}'::bigint[]),
           coalesce((SELECT array_agg(blk.key ORDER BY blk.ord) FROM blk
                     WHERE cardinality(blk.ids) > p_max_block AND blk.key NOT LIKE 'id:%'),
                    '{}'::text[])
    INTO v_found, v_selected, v_oversized;
    RETURN QUERY
    SELECT v_found, v_selected,
           (SELECT coalesce(array_agg(jsonb_build_array(r.id, r.domain_id, l.person_id,
                                                        r.normalized, r.version) ORDER BY r.id),
                            '{}'::jsonb[])
            FROM link l JOIN source_record r ON r.id = l.source_record_id
            WHERE l.person_id IN (SELECT l2.person_id FROM link l2
                                  WHERE l2.source_record_id = ANY(v_selected))
              AND r.status = 'active'),
           v_oversized;
END;
$$;

-- As in 0006, with p_presized (see above) and the new record's oversized keys.
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
    p_rare_block integer,
    p_presized boolean
) RETURNS TABLE (
    id bigint, domain_id integer, identifier text, status text, merged_into bigint,
    demographics jsonb, normalized jsonb, version integer,
    created_at timestamptz, updated_at timestamptz,
    person_id bigint, link_kind text, link_score double precision, link_actor text,
    link_created_at timestamptz, enterprise_id text, others text[],
    old_keys text[], no_match bigint[], candidates_found integer, prefetched bigint[],
    parties jsonb[], oversized text[]
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
           NULL::integer, NULL::bigint[], NULL::jsonb[], NULL::text[]
    FROM source_record r
    LEFT JOIN link l ON l.source_record_id = r.id
    LEFT JOIN person p ON p.id = l.person_id
    WHERE r.domain_id = p_domain_id AND r.identifier = p_identifier
    FOR NO KEY UPDATE OF r;
    IF FOUND THEN
        RETURN;
    END IF;

    IF p_presized THEN
        v_keys := p_keys;
        v_locks := p_key_locks;
    ELSE
        SELECT u.keys, u.locks INTO v_keys, v_locks
        FROM usable_keys(p_keys, p_key_locks, p_max_block) AS u;
    END IF;
    PERFORM lock_keys(v_locks);
    RETURN QUERY
    SELECT NULL::bigint, NULL::integer, NULL::text, NULL::text, NULL::bigint, NULL::jsonb,
           NULL::jsonb, NULL::integer, NULL::timestamptz, NULL::timestamptz,
           NULL::bigint, NULL::text, NULL::double precision, NULL::text,
           NULL::timestamptz, NULL::text, NULL::text[], NULL::text[], NULL::bigint[],
           c.candidates_found, c.prefetched, c.parties, c.oversized
    FROM register_candidates(v_keys, NULL, p_per_key, p_max_block, p_max_candidates,
                             p_margin, p_min_keys, p_rare_block) AS c;
END;
$$;
