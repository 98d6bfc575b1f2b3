-- The key that signs subscriber-portal links and the nonces a subscriber answers to obtain one. One row, created
-- by the first API process that needs it (32 random bytes), shared by every replica. Deleting the row revokes
-- every link and nonce issued so far; the next request makes a new key.
CREATE TABLE portal_keys (
    name       text        PRIMARY KEY,
    key        bytea       NOT NULL CHECK (octet_length(key) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
