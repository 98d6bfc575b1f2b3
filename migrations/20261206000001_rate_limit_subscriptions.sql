-- Per-subscription rate limits, enforced by the claim across every deliverer (the limit and its state live here,
-- not in one process's memory).
--
-- A subscription's limit (`rate_per_second` deliveries a second, bursts of up to `rate_burst`) is set by a
-- verified subscribe request carrying `hub.x-rate` (so `subscription_requests` holds the asked limit until its
-- verification applies it) or by the admin API. Both columns are set or neither.
ALTER TABLE subscriptions
    ADD COLUMN rate_per_second double precision,
    ADD COLUMN rate_burst      integer,
    ADD CONSTRAINT subscriptions_rate_check CHECK (
        (rate_per_second IS NULL AND rate_burst IS NULL)
        OR (rate_per_second > 0 AND rate_burst >= 1));

ALTER TABLE subscription_requests
    ADD COLUMN rate_per_second double precision,
    ADD COLUMN rate_burst      integer,
    ADD CONSTRAINT subscription_requests_rate_check CHECK (
        (rate_per_second IS NULL AND rate_burst IS NULL)
        OR (rate_per_second > 0 AND rate_burst >= 1));

-- The state of each limit, written only by the claim (src/outbox/claim.rs) under the row's lock, so claims on
-- several deliverers take turns: a generic cell rate algorithm's theoretical arrival time `tat` (a delivery may
-- start at `now` when `tat - now <= (burst - 1) / rate`). Every delivery a claim locks moves `tat` on by
-- `1 / rate`: those it may start now are leased, the others are given the slots after them (see
-- `outbox.reserved`), so slots are handed out once, in order, and never drift when a claim comes a little late.
-- With the limit it was last computed under, and how many deliveries the last claim wanted and could start.
CREATE TABLE delivery_throttles (
    subscription_id uuid             NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    tat             timestamptz      NOT NULL,
    rate_per_second double precision NOT NULL,
    rate_burst      integer          NOT NULL,
    wanted          bigint           NOT NULL,
    granted         integer          NOT NULL,
    CONSTRAINT delivery_throttles_pkey PRIMARY KEY (subscription_id)
);

-- A delivery a rate limit has given a slot: its `due_at` is the slot, and when it comes due it starts without
-- asking the limit again (unless it is claimed more than one interval late, when it asks again, so a deliverer that
-- stalled does not send the slots it missed all at once).
ALTER TABLE outbox ADD COLUMN reserved boolean NOT NULL DEFAULT false;

-- How many of `wanted` deliveries a limit lets start at `at`, given its theoretical arrival time `tat` (NULL for a
-- limit never used). The one-microsecond allowance absorbs rounding of `tat` to timestamp precision.
CREATE FUNCTION tidings_throttle_grant(tat timestamptz, at timestamptz, rate double precision, burst integer,
                                       wanted bigint) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN least(wanted, greatest(0, floor(
        burst - rate * extract(epoch FROM greatest(coalesce(tat, at), at) - at) + rate * 0.000001)))::integer;
