-- Dead deliveries are counted for metrics and redelivered per subscription; both stay index-backed however
-- large the outbox grows.
CREATE INDEX outbox_dead_idx ON outbox (subscription_id, created_at) WHERE state = 'dead';
