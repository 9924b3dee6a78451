-- Match models estimated from the index by `identity calibrate`: every version is kept, with
-- the thresholds it was proposed with and the dry run's report; at most one is in service.
-- A running service follows the active version (NOTIFY identity_match_model, and a check at
-- each refresh), so that `calibrate --apply` needs no restart.
CREATE TABLE match_model (
    version    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    model      jsonb NOT NULL,
    auto_link  double precision NOT NULL CHECK (auto_link > 0 AND auto_link <= 1),
    review     double precision NOT NULL CHECK (review >= 0 AND review <= auto_link),
    report     jsonb NOT NULL DEFAULT '{}',
    active     boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX match_model_active ON match_model (active) WHERE active;
