-- Per-subscription custom headers, sent with every delivery of an event (src/subscriptions/headers.rs validates
-- them; the hub's own and framing headers are refused there). A JSON object of name to value.
--
-- A verified subscribe request carrying `hub.x-header` replaces them (`subscription_requests.headers` holds the
-- asked set until then; NULL keeps the current ones, `{}` clears them), and so does the admin API.
ALTER TABLE subscriptions
    ADD COLUMN headers jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD CONSTRAINT subscriptions_headers_check CHECK (jsonb_typeof(headers) = 'object');

ALTER TABLE subscription_requests
    ADD COLUMN headers jsonb,
    ADD CONSTRAINT subscription_requests_headers_check CHECK (headers IS NULL OR jsonb_typeof(headers) = 'object');
