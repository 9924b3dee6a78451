-- append_events, as it runs. identity.store.migrate applies this file again whenever its text
-- changes; a new signature or result type, or dropping the function, needs a numbered
-- migration (see identity/store/migrate.py).
-- History: migrations 0002, 0012 (the digest).

-- The history rows, outbox rows and stored reply of a command, in one call (parallel arrays,
-- in order; p_sender NULL: no reply to store; p_digest: the message's, beside its reply).
CREATE OR REPLACE FUNCTION append_events(
    p_command uuid[], p_event text[], p_entity text[], p_entity_id bigint[],
    p_person bigint[], p_record bigint[], p_before jsonb[], p_after jsonb[],
    p_actor text[], p_message text[],
    p_topic text[], p_payload jsonb[], p_outbox_command uuid[],
    p_sender text, p_control_id text, p_reply text, p_digest text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(p_event) > 0 THEN
        INSERT INTO history (command_id, event, entity, entity_id, person_id, record_id,
                             before, after, actor, message_id)
        SELECT x.c, x.e, x.n, x.i, x.p, x.r, x.b, x.a, x.w, x.m
        FROM unnest(p_command, p_event, p_entity, p_entity_id, p_person, p_record, p_before,
                    p_after, p_actor, p_message)
             WITH ORDINALITY AS x(c, e, n, i, p, r, b, a, w, m, o)
        ORDER BY x.o;
    END IF;
    IF cardinality(p_topic) > 0 THEN
        INSERT INTO outbox (topic, payload, command_id)
        SELECT y.t, y.p, y.c
        FROM unnest(p_topic, p_payload, p_outbox_command) WITH ORDINALITY AS y(t, p, c, o)
        ORDER BY y.o;
    END IF;
    IF p_sender IS NOT NULL THEN
        INSERT INTO processed_message (sender, control_id, reply, digest)
        VALUES (p_sender, p_control_id, p_reply, p_digest)
        ON CONFLICT DO NOTHING;
    END IF;
END;
$$;
