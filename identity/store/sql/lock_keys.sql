-- lock_keys, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0001; one statement instead of a loop of them (issue 19, 2026-12-03).

-- Transaction-level advisory locks on a set of keys, taken in ascending order so that two
-- transactions locking overlapping sets cannot deadlock. One round trip for any number of keys.
CREATE OR REPLACE FUNCTION lock_keys(keys bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    -- the sorted keys' locks in one statement: a Sort node feeds the projection its rows in
    -- order, one lock call per row (a loop of PERFORMs cost a statement per key)
    PERFORM pg_advisory_xact_lock(x)
    FROM (SELECT DISTINCT x FROM unnest(keys) AS x ORDER BY x) AS sorted;
END;
$$;
