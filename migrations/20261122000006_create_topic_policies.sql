-- Topic policies: what content a topic (or a pattern of topics) accepts. Checked at publish time; an event that
-- breaks a policy is refused with 422 and never written.
CREATE TABLE topic_policies (
    topic         text        NOT NULL,
    json_schema   jsonb,
    max_bytes     integer,
    content_types text[],
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT topic_policies_pkey PRIMARY KEY (topic),
    CONSTRAINT topic_policies_max_bytes_check CHECK (max_bytes IS NULL OR max_bytes > 0)
);

-- Whether an event on `event_topic` reaches a subscription to `topic` (pattern_prefix as stored on subscriptions).
-- The same rule as src/topic.rs; used where a subscription's events are looked up (replay).
CREATE FUNCTION tidings_topic_matches(topic text, pattern_prefix text, event_topic text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN pattern_prefix IS NULL THEN event_topic = topic
                ELSE starts_with(lower(event_topic), pattern_prefix) AND length(event_topic) > length(pattern_prefix) END;
