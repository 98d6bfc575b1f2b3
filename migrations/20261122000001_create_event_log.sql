-- The event log: append-only, the single source of truth for everything published and for every
-- subscription lifecycle change.
--
-- Ordering: `position` is assigned when a row is inserted, not when its transaction commits, so positions
-- become visible out of order. Every row therefore also records the id of the transaction that wrote it
-- (`txid`, xid8). A reader that processes rows in (txid, position) order and only reads rows whose txid is
-- below the oldest transaction still in flight (pg_snapshot_xmin) can never see a row appear behind its
-- cursor. See src/spreader.rs.
CREATE TABLE events (
    position     bigint      GENERATED ALWAYS AS IDENTITY,
    id           uuid        NOT NULL,
    kind         text        NOT NULL DEFAULT 'content',
    topic        text        NOT NULL,
    content_type text        NOT NULL,
    body         bytea       NOT NULL,
    tags         text[]      NOT NULL DEFAULT '{}',
    group_id     text,
    published_at timestamptz NOT NULL DEFAULT now(),
    txid         xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_pkey PRIMARY KEY (position),
    CONSTRAINT events_id_key UNIQUE (id),
    CONSTRAINT events_kind_check CHECK (kind IN ('content', 'subscription')),
    CONSTRAINT events_topic_not_empty CHECK (length(topic) > 0)
);

CREATE INDEX events_txid_position_idx ON events (txid, position);
CREATE INDEX events_topic_position_idx ON events (topic, position);
CREATE INDEX events_group_id_idx ON events (group_id, position) WHERE group_id IS NOT NULL;
CREATE INDEX events_tags_idx ON events USING gin (tags);
CREATE INDEX events_published_at_idx ON events USING brin (published_at);

-- The application never changes or removes a row of the log. Retention (dropping old rows) is a separate,
-- explicit operation that must set `tidings.allow_log_retention` for its own transaction.
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('tidings.allow_log_retention', true), '') = 'on' AND TG_OP <> 'UPDATE' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the event log is append-only: % is not allowed on events', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();
