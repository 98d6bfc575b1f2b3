-- Where the callbacks spreader has got to in the log: the (txid, position) of the last event it spread.
-- One row; a spreader holds its lock (FOR UPDATE SKIP LOCKED) for the length of one batch, so replicas take turns
-- and never spread the same event concurrently.
CREATE TABLE spreader_cursor (
    id         boolean     NOT NULL DEFAULT true,
    txid       xid8        NOT NULL DEFAULT '0',
    position   bigint      NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT spreader_cursor_pkey PRIMARY KEY (id),
    CONSTRAINT spreader_cursor_single_row CHECK (id)
);

INSERT INTO spreader_cursor DEFAULT VALUES;

-- Deliverers claim in (due_at, id) order: oldest first, and first-in first-out within one spread batch.
DROP INDEX outbox_due_idx;
CREATE INDEX outbox_due_idx ON outbox (due_at, id) WHERE state = 'pending';
