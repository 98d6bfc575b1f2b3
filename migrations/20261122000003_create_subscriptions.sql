-- Subscriptions, keyed by (topic, callback) as W3C WebSub requires, and the requests that change them.
--
-- A subscription row is the current state of one (topic, callback) pair. A subscribe or unsubscribe request
-- never changes it directly: the request is stored in `subscription_requests` and only a successful verification
-- of intent applies it (so a failed verification leaves the previous state exactly as it was). Every applied
-- transition is also appended to the event log (kind 'subscription'), so a subscription's history can be read.
CREATE TABLE subscriptions (
    id             uuid        NOT NULL,
    topic          text        NOT NULL,
    callback       text        NOT NULL,
    -- For a pattern topic (`a.b.*`, `*`): its lowercase prefix (`a.b.`, ``); NULL for an exact topic.
    pattern_prefix text,
    -- host:port of the callback, for per-host delivery concurrency.
    callback_host  text        NOT NULL,
    state          text        NOT NULL DEFAULT 'pending',
    secret         text,
    lease_seconds  integer,
    expires_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT subscriptions_pkey PRIMARY KEY (id),
    CONSTRAINT subscriptions_topic_callback_key UNIQUE (topic, callback),
    CONSTRAINT subscriptions_state_check CHECK (state IN ('pending', 'active', 'expired', 'unsubscribed', 'denied')),
    CONSTRAINT subscriptions_active_has_lease CHECK (state <> 'active' OR expires_at IS NOT NULL)
);

CREATE INDEX subscriptions_active_topic_idx ON subscriptions (topic) WHERE state = 'active';
CREATE INDEX subscriptions_active_pattern_idx ON subscriptions (pattern_prefix)
    WHERE state = 'active' AND pattern_prefix IS NOT NULL;
CREATE INDEX subscriptions_active_expiry_idx ON subscriptions (expires_at) WHERE state = 'active';

CREATE TABLE subscription_requests (
    id              uuid        NOT NULL,
    subscription_id uuid        NOT NULL REFERENCES subscriptions (id),
    mode            text        NOT NULL,
    lease_seconds   integer,
    secret          text,
    reason          text,
    state           text        NOT NULL DEFAULT 'pending',
    error           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CONSTRAINT subscription_requests_pkey PRIMARY KEY (id),
    CONSTRAINT subscription_requests_mode_check CHECK (mode IN ('subscribe', 'unsubscribe', 'denied')),
    CONSTRAINT subscription_requests_state_check
        CHECK (state IN ('pending', 'verified', 'failed', 'notified', 'superseded'))
);

CREATE INDEX subscription_requests_subscription_idx ON subscription_requests (subscription_id, created_at);
