-- Core schema of the MPI: domains, source records, persons, links, review queue,
-- no-match assertions, history, outbox and processed messages.
-- Plain PostgreSQL 16 without contrib extensions (the embedded server has none).

CREATE TABLE domain (
    id                serial PRIMARY KEY,
    namespace         text NOT NULL UNIQUE,
    oid               text UNIQUE,
    sources           text[] NOT NULL DEFAULT '{}',
    identifies_person boolean NOT NULL DEFAULT false,
    is_enterprise     boolean NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX domain_one_enterprise ON domain (is_enterprise) WHERE is_enterprise;

CREATE SEQUENCE enterprise_id_seq;

CREATE TABLE person (
    id            bigserial PRIMARY KEY,
    enterprise_id text NOT NULL UNIQUE,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'merged', 'retired')),
    merged_into   bigint REFERENCES person (id),
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE source_record (
    id            bigserial PRIMARY KEY,
    domain_id     integer NOT NULL REFERENCES domain (id),
    identifier    text NOT NULL,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'merged', 'removed')),
    merged_into   bigint REFERENCES source_record (id),
    demographics  jsonb NOT NULL,
    normalized    jsonb NOT NULL,
    -- normalised search columns (computed by matching.normalize)
    family_norm   text COLLATE "C",
    given_norm    text COLLATE "C",
    family_phon   text,
    given_phon    text,
    birth_date    text COLLATE "C",           -- ISO partial date: YYYY, YYYY-MM or YYYY-MM-DD
    sex           text,
    postal_code   text COLLATE "C",
    city_norm     text COLLATE "C",
    phone_digits  text[] NOT NULL DEFAULT '{}',
    mothers_maiden_norm text COLLATE "C",
    last_source   text,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (domain_id, identifier)
);
CREATE INDEX source_record_family ON source_record (family_norm, given_norm);
CREATE INDEX source_record_given ON source_record (given_norm);
CREATE INDEX source_record_family_phon ON source_record (family_phon);
CREATE INDEX source_record_given_phon ON source_record (given_phon);
CREATE INDEX source_record_birth_date ON source_record (birth_date);
CREATE INDEX source_record_postal ON source_record (postal_code);
CREATE INDEX source_record_phone ON source_record USING gin (phone_digits);

-- Other identifiers a record carries (a national ID in a second PID-3 repetition, PID-19, ...).
CREATE TABLE record_identifier (
    source_record_id bigint NOT NULL REFERENCES source_record (id) ON DELETE CASCADE,
    domain_id        integer NOT NULL REFERENCES domain (id),
    identifier       text NOT NULL,
    type_code        text,
    PRIMARY KEY (source_record_id, domain_id, identifier)
);
CREATE INDEX record_identifier_lookup ON record_identifier (domain_id, identifier);

-- The current link of each source record to its person. Past links live in history.
CREATE TABLE link (
    source_record_id bigint PRIMARY KEY REFERENCES source_record (id),
    person_id        bigint NOT NULL REFERENCES person (id),
    kind             text NOT NULL CHECK (kind IN ('automatic', 'manual', 'verified')),
    score            double precision,
    explanation      jsonb,
    actor            text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX link_person ON link (person_id);

-- Blocking keys: strings computed by matching/; the store only indexes them.
CREATE TABLE blocking_key (
    key              text COLLATE "C" NOT NULL,
    source_record_id bigint NOT NULL REFERENCES source_record (id) ON DELETE CASCADE,
    PRIMARY KEY (key, source_record_id)
);
CREATE INDEX blocking_key_record ON blocking_key (source_record_id);

CREATE TABLE review_item (
    id              bigserial PRIMARY KEY,
    record_id       bigint NOT NULL REFERENCES source_record (id),
    other_record_id bigint REFERENCES source_record (id),
    person_id       bigint REFERENCES person (id),
    score           double precision,
    reason          text NOT NULL,
    explanation     jsonb,
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'linked', 'rejected', 'dismissed')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolved_by     text
);
CREATE INDEX review_item_open ON review_item (created_at) WHERE status = 'open';
CREATE UNIQUE INDEX review_item_open_pair
    ON review_item (record_id, coalesce(other_record_id, 0), coalesce(person_id, 0))
    WHERE status = 'open';

-- A steward's assertion that two records are different people. Stored with record_a < record_b.
CREATE TABLE no_match (
    record_a   bigint NOT NULL REFERENCES source_record (id),
    record_b   bigint NOT NULL REFERENCES source_record (id),
    actor      text NOT NULL,
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (record_a, record_b),
    CHECK (record_a < record_b)
);
CREATE INDEX no_match_b ON no_match (record_b);

-- Append-only: one row per state change, written in the change's own transaction.
-- command_id groups the rows of one command (one message, one request, one steward decision).
CREATE TABLE history (
    id          bigserial PRIMARY KEY,
    command_id  uuid NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    event       text NOT NULL,
    entity      text NOT NULL,
    entity_id   bigint NOT NULL,
    person_id   bigint,
    record_id   bigint,
    before      jsonb,
    after       jsonb,
    actor       text NOT NULL,
    message_id  text
);
CREATE INDEX history_command ON history (command_id);
CREATE INDEX history_entity ON history (entity, entity_id, id);
CREATE INDEX history_person ON history (person_id, id) WHERE person_id IS NOT NULL;
CREATE INDEX history_record ON history (record_id, id) WHERE record_id IS NOT NULL;

-- Work that leaves the process after commit (ITI-10 notifications, audit records).
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    payload      jsonb NOT NULL,
    command_id   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    delivered_at timestamptz
);
CREATE INDEX outbox_pending ON outbox (topic, id) WHERE delivered_at IS NULL;

-- Idempotent re-delivery: the reply sent for a (sender, message control id).
CREATE TABLE processed_message (
    sender      text NOT NULL,
    control_id  text NOT NULL,
    reply       text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sender, control_id)
);

-- Transaction-level advisory locks on a set of keys, taken in ascending order so that two
-- transactions locking overlapping sets cannot deadlock. One round trip for any number of keys.
CREATE FUNCTION lock_keys(keys bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k bigint;
BEGIN
    FOR k IN SELECT DISTINCT x FROM unnest(keys) AS x ORDER BY x LOOP
        PERFORM pg_advisory_xact_lock(k);
    END LOOP;
END;
$$;
