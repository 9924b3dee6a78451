-- register_candidates, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0002, 0004, 0005, 0006, 0009, 0010.

-- The candidates of a record (p_exclude: the record itself, NULL when it is new), read under
-- the caller's blocking-key locks: how many distinct candidates the usable blocks held
-- (candidates_found), the ones kept by the floor, margin and cap (prefetched: 0006), every
-- active record of their persons (parties: [record id, domain id, person id, normalized,
-- version], by record id) and the keys given whose blocks hold more than p_max_block records
-- (oversized: 0010; id: keys excepted, as they are always read). The plan is cached and may
-- only use index look-ups and nested loops (0009).
CREATE OR REPLACE FUNCTION register_candidates(
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
