-- Secret rotation with a grace period: when a verified subscribe (or the admin API) replaces a subscription's
-- secret, the one it replaces is kept until `previous_secret_until`, and deliveries until then carry a Standard
-- Webhooks signature under both (X-Hub-Signature uses the new one only). Both columns are set or neither; a
-- previous secret past its time is never used and is overwritten by the next rotation.
ALTER TABLE subscriptions
    ADD COLUMN previous_secret       text,
    ADD COLUMN previous_secret_until timestamptz,
    ADD CONSTRAINT subscriptions_previous_secret_check CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL));
