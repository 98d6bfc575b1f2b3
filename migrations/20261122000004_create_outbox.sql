-- The outbox: one row per job for the callback deliverer. `deliver` jobs are written by the callbacks spreader,
-- one per (event, subscription) — the unique key makes re-spreading a no-op. `verify` and `deny` jobs carry a
-- subscription request (verification of intent, or the notice of a denial).
--
-- Claiming: a worker takes due pending rows with FOR UPDATE SKIP LOCKED and pushes `due_at` forward by its lease
-- (`leased_until` records the same instant for operators), commits, and only then calls the subscriber. A worker
-- that dies leaves the row pending with a `due_at` that simply comes due again. No foreign keys: rows are written
-- by set-based SQL from joins that already guarantee them, and per-row checks would slow the spreader.
CREATE TABLE outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    kind            text        NOT NULL,
    subscription_id uuid        NOT NULL,
    event_position  bigint,
    request_id      uuid,
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT outbox_pkey PRIMARY KEY (id),
    CONSTRAINT outbox_kind_check CHECK (kind IN ('deliver', 'verify', 'deny')),
    CONSTRAINT outbox_state_check CHECK (state IN ('pending', 'delivered', 'dead', 'cancelled')),
    CONSTRAINT outbox_delivery_key UNIQUE (event_position, subscription_id)
);

CREATE INDEX outbox_due_idx ON outbox (due_at) WHERE state = 'pending';
CREATE INDEX outbox_subscription_idx ON outbox (subscription_id, id);
CREATE INDEX outbox_request_idx ON outbox (request_id) WHERE request_id IS NOT NULL;

-- Every HTTP attempt, append-only: when, how long, the status or the class of error, a short excerpt.
CREATE TABLE delivery_attempts (
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    outbox_id        bigint      NOT NULL,
    attempt          integer     NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      integer     NOT NULL,
    status_code      integer,
    error_class      text,
    response_excerpt text,
    outcome          text        NOT NULL,
    CONSTRAINT delivery_attempts_pkey PRIMARY KEY (id),
    CONSTRAINT delivery_attempts_outcome_check
        CHECK (outcome IN ('delivered', 'retry', 'dead', 'gone', 'verified', 'refused', 'notified'))
);

CREATE INDEX delivery_attempts_outbox_idx ON delivery_attempts (outbox_id, id);
CREATE INDEX delivery_attempts_started_at_idx ON delivery_attempts USING brin (started_at);
