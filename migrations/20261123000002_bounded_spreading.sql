-- Spreading in bounded steps. An event with a very large fan-out (100,000 subscriptions) is spread over several
-- transactions of at most TIDINGS_SPREAD_BATCH_JOBS jobs each: the cursor then stops inside that event, after
-- the last subscription (in id order) it has written a job for. NULL means the cursor's event is done.
ALTER TABLE spreader_cursor ADD COLUMN subscription_id uuid;

-- Exact and pattern matches in subscription id order, so a partly spread event resumes with an index range.
DROP INDEX subscriptions_active_topic_idx;
CREATE INDEX subscriptions_active_topic_idx ON subscriptions (topic, id) WHERE state = 'active';
DROP INDEX subscriptions_active_pattern_idx;
CREATE INDEX subscriptions_active_pattern_idx ON subscriptions (pattern_prefix, id)
    WHERE state = 'active' AND pattern_prefix IS NOT NULL;
