-- The web console (src/console): login sessions, and the indexes its newest-first lists page through.
--
-- A session row holds only the SHA-256 of the session id the browser keeps in its cookie, so a copy of this table
-- cannot be used to log in. Logging out sets `revoked_at`; a session is valid only while it is not revoked and
-- `expires_at` is in the future.
CREATE TABLE console_sessions (
    id_hash     bytea       NOT NULL,
    csrf_token  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    CONSTRAINT console_sessions_pkey PRIMARY KEY (id_hash)
);

CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

-- Deliveries filtered by state, newest first (keyset on id).
CREATE INDEX outbox_state_id_idx ON outbox (state, id);
