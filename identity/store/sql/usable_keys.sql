-- usable_keys, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0005, 0009.

-- The keys of a new record worth locking and reading (0005, point 2), with their lock hashes:
-- id: keys and keys holding at most p_max_block records; when there are none, the key of the
-- smallest block (first in order among equals).
CREATE OR REPLACE FUNCTION usable_keys(
    p_keys text[],
    p_key_locks bigint[],
    p_max_block integer,
    OUT keys text[],
    OUT locks bigint[]
)
LANGUAGE plpgsql
-- The plan is cached and may only use index look-ups and nested loops (0009).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
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
