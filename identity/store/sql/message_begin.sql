-- message_begin, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0007, 0012 (the digest).

-- One round trip fewer per HL7 v2 feed message: the message's own lock and the look-up of a
-- stored reply in one call. The reply is read after the lock is held (a new statement, a new
-- snapshot), so a process that applied the same message and committed while this one waited
-- is seen, and the message is applied once.
-- The stored message's digest comes with its reply, so that a reused control id with other
-- content is told from a re-sent copy.
CREATE OR REPLACE FUNCTION message_begin(
    p_lock bigint, p_sender text, p_control_id text, OUT reply text, OUT digest text
)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT m.reply, m.digest INTO reply, digest FROM processed_message m
    WHERE m.sender = p_sender AND m.control_id = p_control_id;
END;
$$;
