-- lock_keys, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0001.

-- Transaction-level advisory locks on a set of keys, taken in ascending order so that two
-- transactions locking overlapping sets cannot deadlock. One round trip for any number of keys.
CREATE OR REPLACE FUNCTION lock_keys(keys bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k bigint;
BEGIN
    FOR k IN SELECT DISTINCT x FROM unnest(keys) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
END;
$$;
