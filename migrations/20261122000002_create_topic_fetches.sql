-- Thin pings (`hub.mode=publish`): one row per topic URL to fetch. A durable little queue: a crashed API process
-- leaves the row pending with an expired lease and another process picks it up. The fetched content is appended
-- to the log with the fetch's id as the event id, so repeating a fetch after a crash never appends twice.
CREATE TABLE topic_fetches (
    id           uuid        NOT NULL,
    topic        text        NOT NULL,
    state        text        NOT NULL DEFAULT 'pending',
    attempts     integer     NOT NULL DEFAULT 0,
    due_at       timestamptz NOT NULL DEFAULT now(),
    requested_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    status_code  integer,
    error        text,
    event_id     uuid,
    CONSTRAINT topic_fetches_pkey PRIMARY KEY (id),
    CONSTRAINT topic_fetches_state_check CHECK (state IN ('pending', 'fetched', 'failed'))
);

CREATE INDEX topic_fetches_due_idx ON topic_fetches (due_at) WHERE state = 'pending';
CREATE INDEX topic_fetches_topic_idx ON topic_fetches (topic, requested_at);
