-- Auto-disable: a subscription whose deliveries have all failed for a window, with enough of them dead in a row,
-- becomes `disabled` (no new jobs; its pending ones die and can be redelivered once it is enabled again).
-- `failing_since` is the first failed attempt since the last delivered one (NULL while healthy) and
-- `dead_in_a_row` the deliveries that died since then; a delivered one clears both. Healthy subscriptions are
-- never written by this: only the first failure and each death touch the row.
ALTER TABLE subscriptions
    DROP CONSTRAINT subscriptions_state_check,
    ADD CONSTRAINT subscriptions_state_check
        CHECK (state IN ('pending', 'active', 'expired', 'unsubscribed', 'denied', 'disabled')),
    ADD COLUMN failing_since timestamptz,
    ADD COLUMN dead_in_a_row integer NOT NULL DEFAULT 0;
