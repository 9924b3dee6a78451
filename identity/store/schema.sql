-- Schema of a freshly migrated identity database (identity.store.schema_dump).
-- Generated: do not edit. Regenerate with
--     python -m identity.store.schema_dump > identity/store/schema.sql

-- Sequences

CREATE SEQUENCE audit_event_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 OWNED BY audit_event.id;

CREATE SEQUENCE domain_id_seq AS integer START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 2147483647 CACHE 1 OWNED BY domain.id;

CREATE SEQUENCE enterprise_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE history_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 OWNED BY history.id;

CREATE SEQUENCE match_model_version_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 OWNED BY match_model.version;

CREATE SEQUENCE outbox_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 OWNED BY outbox.id;

CREATE SEQUENCE person_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 OWNED BY person.id;

CREATE SEQUENCE review_item_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 OWNED BY review_item.id;

CREATE SEQUENCE source_record_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1 OWNED BY source_record.id;

-- Tables

CREATE TABLE audit_event (
    id bigint DEFAULT nextval('audit_event_id_seq'::regclass) NOT NULL,
    recorded timestamp with time zone NOT NULL,
    transaction text NOT NULL,
    event_id text NOT NULL,
    interaction text,
    subtypes text[] DEFAULT '{}'::text[] NOT NULL,
    action text NOT NULL,
    outcome smallint NOT NULL,
    agent text NOT NULL,
    requestor text,
    patients text[] DEFAULT '{}'::text[] NOT NULL,
    record jsonb NOT NULL
);

CREATE TABLE blocking_key (
    key text COLLATE "C" NOT NULL,
    source_record_id bigint NOT NULL
);

CREATE TABLE domain (
    id integer DEFAULT nextval('domain_id_seq'::regclass) NOT NULL,
    namespace text NOT NULL,
    oid text,
    sources text[] DEFAULT '{}'::text[] NOT NULL,
    identifies_person boolean DEFAULT false NOT NULL,
    is_enterprise boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE history (
    id bigint DEFAULT nextval('history_id_seq'::regclass) NOT NULL,
    command_id uuid NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    event text NOT NULL,
    entity text NOT NULL,
    entity_id bigint NOT NULL,
    person_id bigint,
    record_id bigint,
    before jsonb,
    after jsonb,
    actor text NOT NULL,
    message_id text
);

CREATE TABLE history_archive (
    id bigint NOT NULL,
    command_id uuid NOT NULL,
    at timestamp with time zone NOT NULL,
    event text NOT NULL,
    entity text NOT NULL,
    entity_id bigint NOT NULL,
    person_id bigint,
    record_id bigint,
    before jsonb,
    after jsonb,
    actor text NOT NULL,
    message_id text,
    archived_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE link (
    source_record_id bigint NOT NULL,
    person_id bigint NOT NULL,
    kind text NOT NULL,
    score double precision,
    explanation jsonb,
    actor text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE match_model (
    version bigint NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    created_by text NOT NULL,
    model jsonb NOT NULL,
    auto_link double precision NOT NULL,
    review double precision NOT NULL,
    report jsonb DEFAULT '{}'::jsonb NOT NULL,
    active boolean DEFAULT false NOT NULL
);

CREATE TABLE no_match (
    record_a bigint NOT NULL,
    record_b bigint NOT NULL,
    actor text NOT NULL,
    reason text,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE outbox (
    id bigint DEFAULT nextval('outbox_id_seq'::regclass) NOT NULL,
    topic text NOT NULL,
    payload jsonb NOT NULL,
    command_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    available_at timestamp with time zone DEFAULT now() NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    last_error text,
    delivered_at timestamp with time zone
);

CREATE TABLE person (
    id bigint DEFAULT nextval('person_id_seq'::regclass) NOT NULL,
    enterprise_id text NOT NULL,
    status text DEFAULT 'active'::text NOT NULL,
    merged_into bigint,
    version integer DEFAULT 1 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE processed_message (
    sender text NOT NULL,
    control_id text NOT NULL,
    reply text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    digest text
);

CREATE TABLE record_identifier (
    source_record_id bigint NOT NULL,
    domain_id integer NOT NULL,
    identifier text NOT NULL,
    type_code text
);

CREATE TABLE review_item (
    id bigint DEFAULT nextval('review_item_id_seq'::regclass) NOT NULL,
    record_id bigint NOT NULL,
    other_record_id bigint,
    person_id bigint,
    score double precision,
    reason text NOT NULL,
    explanation jsonb,
    status text DEFAULT 'open'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    resolved_at timestamp with time zone,
    resolved_by text,
    version integer DEFAULT 1 NOT NULL,
    hard_rules text[] DEFAULT '{}'::text[] NOT NULL,
    domain_ids integer[] DEFAULT '{}'::integer[] NOT NULL,
    impact integer DEFAULT 0 NOT NULL
);

CREATE TABLE schema_function (
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE schema_migration (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE TABLE source_record (
    id bigint DEFAULT nextval('source_record_id_seq'::regclass) NOT NULL,
    domain_id integer NOT NULL,
    identifier text NOT NULL,
    status text DEFAULT 'active'::text NOT NULL,
    merged_into bigint,
    demographics jsonb NOT NULL,
    normalized jsonb NOT NULL,
    family_norm text COLLATE "C",
    given_norm text COLLATE "C",
    family_phon text,
    given_phon text,
    birth_date text COLLATE "C",
    sex text,
    postal_code text COLLATE "C",
    city_norm text COLLATE "C",
    phone_digits text[] DEFAULT '{}'::text[] NOT NULL,
    mothers_maiden_norm text COLLATE "C",
    last_source text,
    version integer DEFAULT 1 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);

ALTER TABLE source_record ALTER COLUMN family_norm SET STATISTICS 1000;

ALTER TABLE source_record ALTER COLUMN given_norm SET STATISTICS 1000;

CREATE TABLE steward_decision (
    command_id uuid NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    actor text NOT NULL,
    kind text NOT NULL,
    review_item_id bigint,
    person_ids bigint[] DEFAULT '{}'::bigint[] NOT NULL,
    record_ids bigint[] DEFAULT '{}'::bigint[] NOT NULL,
    reason text,
    undoes uuid
);

-- Constraints

ALTER TABLE audit_event ADD CONSTRAINT audit_event_pkey PRIMARY KEY (id);

ALTER TABLE blocking_key ADD CONSTRAINT blocking_key_pkey PRIMARY KEY (key, source_record_id);

ALTER TABLE blocking_key ADD CONSTRAINT blocking_key_source_record_id_fkey FOREIGN KEY (source_record_id) REFERENCES source_record(id) ON DELETE CASCADE;

ALTER TABLE domain ADD CONSTRAINT domain_namespace_key UNIQUE (namespace);

ALTER TABLE domain ADD CONSTRAINT domain_oid_key UNIQUE (oid);

ALTER TABLE domain ADD CONSTRAINT domain_pkey PRIMARY KEY (id);

ALTER TABLE history ADD CONSTRAINT history_pkey PRIMARY KEY (id);

ALTER TABLE history_archive ADD CONSTRAINT history_archive_pkey PRIMARY KEY (id);

ALTER TABLE link ADD CONSTRAINT link_kind_check CHECK ((kind = ANY (ARRAY['automatic'::text, 'manual'::text, 'verified'::text])));

ALTER TABLE link ADD CONSTRAINT link_person_id_fkey FOREIGN KEY (person_id) REFERENCES person(id);

ALTER TABLE link ADD CONSTRAINT link_pkey PRIMARY KEY (source_record_id);

ALTER TABLE link ADD CONSTRAINT link_source_record_id_fkey FOREIGN KEY (source_record_id) REFERENCES source_record(id);

ALTER TABLE match_model ADD CONSTRAINT match_model_auto_link_check CHECK (((auto_link > (0)::double precision) AND (auto_link <= (1)::double precision)));

ALTER TABLE match_model ADD CONSTRAINT match_model_check CHECK (((review >= (0)::double precision) AND (review <= auto_link)));

ALTER TABLE match_model ADD CONSTRAINT match_model_pkey PRIMARY KEY (version);

ALTER TABLE no_match ADD CONSTRAINT no_match_check CHECK ((record_a < record_b));

ALTER TABLE no_match ADD CONSTRAINT no_match_pkey PRIMARY KEY (record_a, record_b);

ALTER TABLE no_match ADD CONSTRAINT no_match_record_a_fkey FOREIGN KEY (record_a) REFERENCES source_record(id);

ALTER TABLE no_match ADD CONSTRAINT no_match_record_b_fkey FOREIGN KEY (record_b) REFERENCES source_record(id);

ALTER TABLE outbox ADD CONSTRAINT outbox_pkey PRIMARY KEY (id);

ALTER TABLE person ADD CONSTRAINT person_enterprise_id_key UNIQUE (enterprise_id);

ALTER TABLE person ADD CONSTRAINT person_merged_into_fkey FOREIGN KEY (merged_into) REFERENCES person(id);

ALTER TABLE person ADD CONSTRAINT person_pkey PRIMARY KEY (id);

ALTER TABLE person ADD CONSTRAINT person_status_check CHECK ((status = ANY (ARRAY['active'::text, 'merged'::text, 'retired'::text])));

ALTER TABLE processed_message ADD CONSTRAINT processed_message_pkey PRIMARY KEY (sender, control_id);

ALTER TABLE record_identifier ADD CONSTRAINT record_identifier_domain_id_fkey FOREIGN KEY (domain_id) REFERENCES domain(id);

ALTER TABLE record_identifier ADD CONSTRAINT record_identifier_pkey PRIMARY KEY (source_record_id, domain_id, identifier);

ALTER TABLE record_identifier ADD CONSTRAINT record_identifier_source_record_id_fkey FOREIGN KEY (source_record_id) REFERENCES source_record(id) ON DELETE CASCADE;

ALTER TABLE review_item ADD CONSTRAINT review_item_other_record_id_fkey FOREIGN KEY (other_record_id) REFERENCES source_record(id);

ALTER TABLE review_item ADD CONSTRAINT review_item_person_id_fkey FOREIGN KEY (person_id) REFERENCES person(id);

ALTER TABLE review_item ADD CONSTRAINT review_item_pkey PRIMARY KEY (id);

ALTER TABLE review_item ADD CONSTRAINT review_item_record_id_fkey FOREIGN KEY (record_id) REFERENCES source_record(id);

ALTER TABLE review_item ADD CONSTRAINT review_item_status_check CHECK ((status = ANY (ARRAY['open'::text, 'linked'::text, 'rejected'::text, 'dismissed'::text])));

ALTER TABLE schema_function ADD CONSTRAINT schema_function_pkey PRIMARY KEY (name);

ALTER TABLE schema_migration ADD CONSTRAINT schema_migration_pkey PRIMARY KEY (version);

ALTER TABLE source_record ADD CONSTRAINT source_record_domain_id_fkey FOREIGN KEY (domain_id) REFERENCES domain(id);

ALTER TABLE source_record ADD CONSTRAINT source_record_domain_id_identifier_key UNIQUE (domain_id, identifier);

ALTER TABLE source_record ADD CONSTRAINT source_record_merged_into_fkey FOREIGN KEY (merged_into) REFERENCES source_record(id);

ALTER TABLE source_record ADD CONSTRAINT source_record_pkey PRIMARY KEY (id);

ALTER TABLE source_record ADD CONSTRAINT source_record_status_check CHECK ((status = ANY (ARRAY['active'::text, 'merged'::text, 'removed'::text])));

ALTER TABLE steward_decision ADD CONSTRAINT steward_decision_kind_check CHECK ((kind = ANY (ARRAY['same_person'::text, 'different_persons'::text, 'dismiss'::text, 'merge'::text, 'unlink'::text, 'undo'::text])));

ALTER TABLE steward_decision ADD CONSTRAINT steward_decision_pkey PRIMARY KEY (command_id);

ALTER TABLE steward_decision ADD CONSTRAINT steward_decision_review_item_id_fkey FOREIGN KEY (review_item_id) REFERENCES review_item(id);

-- Indexes

CREATE INDEX audit_event_agent ON audit_event USING btree (agent, id);

CREATE INDEX audit_event_failures ON audit_event USING btree (id) WHERE (outcome <> 0);

CREATE INDEX audit_event_patients ON audit_event USING gin (patients);

CREATE INDEX audit_event_recorded ON audit_event USING btree (recorded);

CREATE INDEX audit_event_requestor ON audit_event USING btree (requestor, id) WHERE (requestor IS NOT NULL);

CREATE INDEX audit_event_transaction ON audit_event USING btree (transaction, id);

CREATE INDEX blocking_key_record ON blocking_key USING btree (source_record_id);

CREATE UNIQUE INDEX domain_one_enterprise ON domain USING btree (is_enterprise) WHERE is_enterprise;

CREATE INDEX history_command ON history USING btree (command_id);

CREATE INDEX history_entity ON history USING btree (entity, entity_id, id);

CREATE INDEX history_person ON history USING btree (person_id, id) WHERE (person_id IS NOT NULL);

CREATE INDEX history_record ON history USING btree (record_id, id) WHERE (record_id IS NOT NULL);

CREATE INDEX history_archive_command ON history_archive USING btree (command_id);

CREATE INDEX link_joined ON link USING btree (kind) WHERE ((score IS NOT NULL) OR (kind <> 'automatic'::text));

CREATE INDEX link_person ON link USING btree (person_id);

CREATE UNIQUE INDEX match_model_active ON match_model USING btree (active) WHERE active;

CREATE INDEX no_match_b ON no_match USING btree (record_b);

CREATE INDEX outbox_delivered ON outbox USING btree (delivered_at) WHERE (delivered_at IS NOT NULL);

CREATE INDEX outbox_pending ON outbox USING btree (topic, id) WHERE (delivered_at IS NULL);

CREATE INDEX processed_message_created ON processed_message USING btree (created_at);

CREATE INDEX record_identifier_lookup ON record_identifier USING btree (domain_id, identifier);

CREATE INDEX review_item_open_impact ON review_item USING btree (impact DESC, created_at, id) WHERE (status = 'open'::text);

CREATE UNIQUE INDEX review_item_open_pair ON review_item USING btree (record_id, COALESCE(other_record_id, (0)::bigint), COALESCE(person_id, (0)::bigint)) WHERE (status = 'open'::text);

CREATE INDEX review_item_open_person ON review_item USING btree (person_id) WHERE ((status = 'open'::text) AND (person_id IS NOT NULL));

CREATE INDEX review_item_open_score ON review_item USING btree (score, id) WHERE (status = 'open'::text);

CREATE INDEX review_item_open_uncertain ON review_item USING btree (COALESCE(abs((score - (0.5)::double precision)), 'Infinity'::double precision), created_at, id) WHERE (status = 'open'::text);

CREATE INDEX review_item_other ON review_item USING btree (other_record_id) WHERE (other_record_id IS NOT NULL);

CREATE INDEX review_item_queue ON review_item USING btree (status, created_at, id) INCLUDE (score, hard_rules, domain_ids);

CREATE INDEX review_item_record ON review_item USING btree (record_id);

CREATE INDEX source_record_account_number ON source_record USING btree (((demographics ->> 'account_number'::text))) WHERE ((demographics ->> 'account_number'::text) IS NOT NULL);

CREATE INDEX source_record_birth_family ON source_record USING btree (birth_date, family_norm);

CREATE INDEX source_record_family ON source_record USING btree (family_norm, given_norm);

CREATE INDEX source_record_family_phon ON source_record USING btree (family_phon);

CREATE INDEX source_record_given ON source_record USING btree (given_norm);

CREATE INDEX source_record_given_phon ON source_record USING btree (given_phon);

CREATE INDEX source_record_mothers_identifier ON source_record USING btree ((((demographics -> 'mothers_identifier'::text) ->> 'value'::text))) WHERE (((demographics -> 'mothers_identifier'::text) ->> 'value'::text) IS NOT NULL);

CREATE INDEX source_record_phone ON source_record USING gin (phone_digits);

CREATE INDEX source_record_postal ON source_record USING btree (postal_code);

CREATE INDEX source_record_updated_at ON source_record USING btree (updated_at);

CREATE INDEX steward_decision_actor ON steward_decision USING btree (actor, at);

CREATE INDEX steward_decision_at ON steward_decision USING btree (at) INCLUDE (actor, kind);

CREATE INDEX steward_decision_undoes ON steward_decision USING btree (undoes) WHERE (undoes IS NOT NULL);

-- Functions

CREATE OR REPLACE FUNCTION append_events(p_command uuid[], p_event text[], p_entity text[], p_entity_id bigint[], p_person bigint[], p_record bigint[], p_before jsonb[], p_after jsonb[], p_actor text[], p_message text[], p_topic text[], p_payload jsonb[], p_outbox_command uuid[], p_sender text, p_control_id text, p_reply text, p_digest text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION lock_keys(keys bigint[])
 RETURNS void
 LANGUAGE plpgsql
AS $function$
BEGIN
    -- the sorted keys' locks in one statement: a Sort node feeds the projection its rows in
    -- order, one lock call per row (a loop of PERFORMs cost a statement per key)
    PERFORM pg_advisory_xact_lock(x)
    FROM (SELECT DISTINCT x FROM unnest(keys) AS x ORDER BY x) AS sorted;
END;
$function$;

CREATE OR REPLACE FUNCTION message_begin(p_lock bigint, p_sender text, p_control_id text, OUT reply text, OUT digest text)
 RETURNS record
 LANGUAGE plpgsql
AS $function$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT m.reply, m.digest INTO reply, digest FROM processed_message m
    WHERE m.sender = p_sender AND m.control_id = p_control_id;
END;
$function$;

CREATE OR REPLACE FUNCTION register_begin(p_record_lock bigint, p_domain_id integer, p_identifier text, p_key_locks bigint[], p_keys text[], p_per_key integer, p_max_block integer, p_max_candidates integer, p_margin integer, p_min_keys integer, p_rare_block integer, p_presized boolean)
 RETURNS TABLE(id bigint, domain_id integer, identifier text, status text, merged_into bigint, demographics jsonb, normalized jsonb, version integer, created_at timestamp with time zone, updated_at timestamp with time zone, person_id bigint, link_kind text, link_score double precision, link_actor text, link_created_at timestamp with time zone, enterprise_id text, others text[], old_keys text[], no_match bigint[], candidates_found integer, prefetched bigint[], parties jsonb[], oversized text[])
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION register_candidates(p_keys text[], p_exclude bigint, p_per_key integer, p_max_block integer, p_max_candidates integer, p_margin integer, p_min_keys integer, p_rare_block integer)
 RETURNS TABLE(candidates_found integer, prefetched bigint[], parties jsonb[], oversized text[])
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION register_insert(p_domain_id integer, p_identifier text, p_demographics jsonb, p_normalized jsonb, p_search text[], p_phone_digits text[], p_source text, p_other_domains integer[], p_other_values text[], p_other_types text[], p_keys text[], p_person_id bigint, p_link_kind text, p_link_score double precision, p_link_explanation jsonb, p_actor text, p_review_others bigint[], p_review_persons bigint[], p_review_scores double precision[], p_review_reasons text[], p_review_explanations jsonb)
 RETURNS TABLE(record_id bigint, tx_now timestamp with time zone, others text[], person_id bigint, enterprise_id text, person_status text, person_merged_into bigint, person_version integer, person_created_at timestamp with time zone, person_updated_at timestamp with time zone, review_ids bigint[], review_explanations jsonb)
 LANGUAGE plpgsql
AS $function$
#variable_conflict use_column
DECLARE
    v_record bigint;
    v_person person%ROWTYPE;
    v_review bigint;
    v_review_explanation jsonb;
    v_ids bigint[] := '{}';
    v_explanations jsonb := '[]'::jsonb;
BEGIN
    INSERT INTO source_record (domain_id, identifier, demographics, normalized,
        family_norm, given_norm, family_phon, given_phon, birth_date, sex,
        postal_code, city_norm, phone_digits, mothers_maiden_norm, last_source)
    VALUES (p_domain_id, p_identifier, p_demographics, p_normalized,
        p_search[1], p_search[2], p_search[3], p_search[4], p_search[5], p_search[6],
        p_search[7], p_search[8], p_phone_digits, p_search[9], p_source)
    RETURNING source_record.id INTO v_record;

    IF cardinality(p_other_domains) > 0 THEN
        INSERT INTO record_identifier (source_record_id, domain_id, identifier, type_code)
        SELECT v_record, d, v, t FROM unnest(p_other_domains, p_other_values, p_other_types)
            WITH ORDINALITY AS x(d, v, t, ord)
        ORDER BY ord
        ON CONFLICT DO NOTHING;
    END IF;
    IF cardinality(p_keys) > 0 THEN
        INSERT INTO blocking_key (key, source_record_id)
        SELECT DISTINCT k, v_record FROM unnest(p_keys) AS k;
    END IF;

    IF p_person_id IS NULL THEN
        INSERT INTO person (enterprise_id)
        VALUES (lpad(nextval('enterprise_id_seq')::text, 10, '0'))
        RETURNING * INTO v_person;
    ELSE
        UPDATE person SET version = version + 1, updated_at = now() WHERE id = p_person_id
        RETURNING * INTO v_person;
    END IF;

    INSERT INTO link (source_record_id, person_id, kind, score, explanation, actor)
    VALUES (v_record, v_person.id, p_link_kind, p_link_score, p_link_explanation, p_actor);

    FOR i IN 1 .. coalesce(cardinality(p_review_reasons), 0) LOOP
        v_review := NULL;
        v_review_explanation := NULL;
        INSERT INTO review_item (record_id, other_record_id, person_id, score, reason,
                                 explanation)
        VALUES (v_record, p_review_others[i], p_review_persons[i], p_review_scores[i],
                p_review_reasons[i], p_review_explanations -> (i - 1))
        ON CONFLICT (record_id, coalesce(other_record_id, 0), coalesce(person_id, 0))
            WHERE status = 'open' DO NOTHING
        RETURNING review_item.id, review_item.explanation INTO v_review, v_review_explanation;
        v_ids := v_ids || v_review;
        v_explanations := v_explanations || jsonb_build_array(v_review_explanation);
    END LOOP;

    RETURN QUERY
    SELECT v_record, now(),
           coalesce((SELECT array_agg(ARRAY[ri.domain_id::text, ri.identifier,
                                            coalesce(ri.type_code, '')]
                                      ORDER BY ri.domain_id, ri.identifier)
                     FROM record_identifier ri WHERE ri.source_record_id = v_record), '{}'),
           v_person.id, v_person.enterprise_id, v_person.status, v_person.merged_into,
           v_person.version, v_person.created_at, v_person.updated_at,
           v_ids, v_explanations;
END;
$function$;

CREATE OR REPLACE FUNCTION register_update(p_key_locks bigint[], p_record_id bigint, p_demographics jsonb, p_normalized jsonb, p_search text[], p_phone_digits text[], p_source text, p_other_domains integer[], p_other_values text[], p_other_types text[], p_keys text[], p_touch_person bigint, p_own_person bigint, p_per_key integer, p_max_block integer, p_max_candidates integer, p_margin integer, p_min_keys integer, p_rare_block integer, p_command uuid[], p_event text[], p_entity text[], p_entity_id bigint[], p_person bigint[], p_record bigint[], p_before jsonb[], p_after jsonb[], p_actor text[], p_message text[], p_topic text[], p_payload jsonb[], p_outbox_command uuid[])
 RETURNS TABLE(version integer, updated_at timestamp with time zone, others text[], person_id bigint, enterprise_id text, person_status text, person_merged_into bigint, person_version integer, person_created_at timestamp with time zone, person_updated_at timestamp with time zone, own_parties jsonb, candidates_found integer, prefetched bigint[], parties jsonb[])
 LANGUAGE plpgsql
AS $function$
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
                          p_topic, p_payload, p_outbox_command, NULL, NULL, NULL, NULL);

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
$function$;

CREATE OR REPLACE FUNCTION review_item_fill()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    NEW.hard_rules := ARRAY(
        SELECT jsonb_array_elements_text(NEW.explanation -> 'decision' -> 'hard_rules')
        WHERE jsonb_typeof(NEW.explanation -> 'decision' -> 'hard_rules') = 'array');
    NEW.domain_ids := ARRAY(
        SELECT DISTINCT r.domain_id FROM source_record r
        WHERE r.id = NEW.record_id OR r.id = NEW.other_record_id ORDER BY 1);
    RETURN NEW;
END;
$function$;

CREATE OR REPLACE FUNCTION review_item_impact()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
DECLARE
    v_moved bigint[];
    v_ids bigint[];
BEGIN
    IF pg_trigger_depth() > 1 THEN
        RETURN NULL;  -- the UPDATE below, of impact only
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(n.id) INTO v_moved FROM new_rows n;
    ELSE
        SELECT array_agg(n.id) INTO v_moved
        FROM new_rows n JOIN old_rows o ON o.id = n.id
        WHERE o.status IS DISTINCT FROM n.status;
    END IF;
    IF v_moved IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(DISTINCT x.id ORDER BY x.id) INTO v_ids
    FROM review_item m
    JOIN review_item x
      ON x.status = 'open'
     AND (x.id = m.id
          OR x.record_id = m.record_id OR x.record_id = m.other_record_id
          OR x.other_record_id = m.record_id OR x.other_record_id = m.other_record_id
          OR x.person_id = m.person_id)
    WHERE m.id = ANY (v_moved);
    SELECT array_agg(l.id) INTO v_ids FROM (
        SELECT id FROM review_item WHERE id = ANY (v_ids) OR id = ANY (v_moved)
        ORDER BY id FOR NO KEY UPDATE SKIP LOCKED) l;  -- the statement's own rows: held already
    UPDATE review_item a SET impact = CASE WHEN a.status <> 'open' THEN 0 ELSE (
        SELECT count(*) FROM review_item x
        WHERE x.status = 'open' AND x.id <> a.id
          AND (x.record_id = a.record_id OR x.record_id = a.other_record_id
               OR x.other_record_id = a.record_id OR x.other_record_id = a.other_record_id
               OR x.person_id = a.person_id)) END
    WHERE a.id = ANY (v_ids) AND (a.status = 'open' OR a.impact <> 0);
    RETURN NULL;
END;
$function$;

CREATE OR REPLACE FUNCTION usable_keys(p_keys text[], p_key_locks bigint[], p_max_block integer, OUT keys text[], OUT locks bigint[])
 RETURNS record
 LANGUAGE plpgsql
 SET plan_cache_mode TO 'force_generic_plan'
 SET enable_seqscan TO 'off'
 SET enable_hashjoin TO 'off'
 SET enable_mergejoin TO 'off'
AS $function$
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
$function$;

-- Triggers

CREATE TRIGGER review_item_fill BEFORE INSERT ON review_item FOR EACH ROW EXECUTE FUNCTION review_item_fill();

CREATE TRIGGER review_item_impact_insert AFTER INSERT ON review_item REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION review_item_impact();

CREATE TRIGGER review_item_impact_update AFTER UPDATE ON review_item REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION review_item_impact();
