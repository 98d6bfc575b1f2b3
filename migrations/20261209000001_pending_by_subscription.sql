-- The pending jobs of each subscription in due order: the claim walks the subscriptions that have pending jobs
-- (one descent per step, the next subscription_id after the last) and takes each one's first due jobs through
-- this index, so a subscription it skips (its host saturated) costs one step however large its backlog.
CREATE INDEX outbox_pending_subscription_idx ON outbox (subscription_id, due_at, id) WHERE state = 'pending';
