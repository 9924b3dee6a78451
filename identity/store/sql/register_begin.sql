-- register_begin, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0002, 0005, 0006, 0010.

-- Step 1 of a registration: lock the record key, read the record (row-locked FOR NO KEY UPDATE,
-- which a foreign-key check does not wait for) with its blocking keys and no-match partners.
-- A record not yet known has no old blocking keys: the keys that can give it candidates are
-- locked in the same call (one sorted call, after the record key) and its candidates read
-- (register_candidates). Those keys are the ones given when p_presized (the caller left out
-- the keys it knows to be oversized, 0010), else the usable ones among them (usable_keys, 0005).
-- The new record's oversized keys are returned for the caller to remember.
CREATE OR REPLACE FUNCTION register_begin(
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
