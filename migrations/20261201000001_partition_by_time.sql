-- Time partitions for everything that grows with traffic: the event log, the outbox and the attempt history are
-- range-partitioned by time, in the same periods, so retention removes one period of all three at once by
-- dropping whole tables — never by deleting rows — and a queue partition that has gone quiet is never scanned
-- for dead rows again.
--
-- The time that places a row:
--   events.published_at      the publish time;
--   outbox.logged_at         for a delivery, its event's published_at (so an event and its jobs share a period);
--                            for a verification or denial notice, when the job was created;
--   delivery_attempts.logged_at  its job's logged_at.
-- Partitions are created ahead of need by the hub itself (src/partitions.rs, TIDINGS_PARTITION_INTERVAL), and
-- recorded in `log_partitions`; this migration creates none for a new database (the interval is configuration),
-- and moves an existing database's rows into one `history` partition ending now.
--
-- Event ids stay unique, but a unique index on a partitioned table must contain the partition key, so the log
-- keeps a plain index on `id` and publishing checks for an id itself (see src/events.rs).

-- Keep the old tables aside (their indexes renamed out of the way) while the new ones are built.
ALTER TABLE events RENAME TO events_unpartitioned;
ALTER TABLE outbox RENAME TO outbox_unpartitioned;
ALTER TABLE delivery_attempts RENAME TO delivery_attempts_unpartitioned;
DO $$
DECLARE index_name text;
BEGIN
    FOR index_name IN
        SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid IN ('events_unpartitioned'::regclass, 'outbox_unpartitioned'::regclass,
                             'delivery_attempts_unpartitioned'::regclass)
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', index_name, left(index_name, 50) || '_unpartitioned');
    END LOOP;
END;
$$;

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
    CONSTRAINT events_pkey PRIMARY KEY (position, published_at),
    CONSTRAINT events_kind_check CHECK (kind IN ('content', 'subscription')),
    CONSTRAINT events_topic_not_empty CHECK (length(topic) > 0)
) PARTITION BY RANGE (published_at);

CREATE INDEX events_id_idx ON events (id);
CREATE INDEX events_txid_position_idx ON events (txid, position);
CREATE INDEX events_topic_position_idx ON events (topic, position);
CREATE INDEX events_group_id_idx ON events (group_id, position) WHERE group_id IS NOT NULL;
CREATE INDEX events_tags_idx ON events USING gin (tags);

CREATE TABLE outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY,
    kind            text        NOT NULL,
    subscription_id uuid        NOT NULL,
    event_position  bigint,
    request_id      uuid,
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    logged_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_pkey PRIMARY KEY (id, logged_at),
    CONSTRAINT outbox_kind_check CHECK (kind IN ('deliver', 'verify', 'deny')),
    CONSTRAINT outbox_state_check CHECK (state IN ('pending', 'delivered', 'dead', 'cancelled')),
    CONSTRAINT outbox_delivery_key UNIQUE (event_position, subscription_id, logged_at)
) PARTITION BY RANGE (logged_at);

CREATE INDEX outbox_due_idx ON outbox (due_at, id) WHERE state = 'pending';
CREATE INDEX outbox_subscription_idx ON outbox (subscription_id, id);
CREATE INDEX outbox_request_idx ON outbox (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX outbox_dead_idx ON outbox (subscription_id, created_at) WHERE state = 'dead';
CREATE INDEX outbox_state_id_idx ON outbox (state, id);

CREATE TABLE delivery_attempts (
    id               bigint      GENERATED ALWAYS AS IDENTITY,
    outbox_id        bigint      NOT NULL,
    attempt          integer     NOT NULL,
    started_at       timestamptz NOT NULL,
    duration_ms      integer     NOT NULL,
    status_code      integer,
    error_class      text,
    response_excerpt text,
    outcome          text        NOT NULL,
    logged_at        timestamptz NOT NULL,
    CONSTRAINT delivery_attempts_pkey PRIMARY KEY (id, logged_at),
    CONSTRAINT delivery_attempts_outcome_check
        CHECK (outcome IN ('delivered', 'retry', 'dead', 'gone', 'verified', 'refused', 'notified'))
) PARTITION BY RANGE (logged_at);

CREATE INDEX delivery_attempts_outbox_idx ON delivery_attempts (outbox_id, id);
CREATE INDEX delivery_attempts_started_at_idx ON delivery_attempts USING brin (started_at);

-- The log stays append-only: no row of any partition is ever updated or deleted, and no partition truncated.
-- Dropping an expired partition (retention) is the one way history leaves the log.
CREATE OR REPLACE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event log is append-only: % is not allowed on events', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_append_only();
CREATE TRIGGER events_never_truncated BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- Every partition period ever created; `dropped_at` is set when retention removed it.
CREATE TABLE log_partitions (
    suffix     text        NOT NULL,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    dropped_at timestamptz,
    CONSTRAINT log_partitions_pkey PRIMARY KEY (suffix),
    CONSTRAINT log_partitions_period_check CHECK (ends_at > starts_at)
);

CREATE INDEX log_partitions_live_idx ON log_partitions (starts_at) WHERE dropped_at IS NULL;

-- Creates the partitions of events, outbox and delivery_attempts for [p_start, p_end) and records them. Each is
-- made as a table of its own and then attached: attaching takes only a SHARE UPDATE EXCLUSIVE lock on the parent,
-- so publishing and delivery go on while a period is added (CREATE TABLE ... PARTITION OF would lock them out).
CREATE FUNCTION tidings_create_partition(p_start timestamptz, p_end timestamptz) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    suffix text := CASE WHEN p_start = '-infinity' THEN 'history'
                        ELSE to_char(p_start AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS') END;
    parent text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['events', 'outbox', 'delivery_attempts'] LOOP
        EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                       parent || '_p' || suffix, parent);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', parent,
                       parent || '_p' || suffix, p_start, p_end);
    END LOOP;
    EXECUTE format('CREATE TRIGGER events_never_truncated BEFORE TRUNCATE ON %I
                    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only()', 'events_p' || suffix);
    INSERT INTO log_partitions (suffix, starts_at, ends_at) VALUES (suffix, p_start, p_end);
    RETURN suffix;
END;
$$;

-- Makes sure partitions cover [p_from, p_to): periods of `p_interval` aligned to the Unix epoch, added before the
-- first live period and after the last one (an interval changed later applies from the end of the last period).
-- Serialised by a transaction-level advisory lock, so every process may call it. Returns how many it created.
CREATE FUNCTION tidings_ensure_partitions(p_from timestamptz, p_to timestamptz, p_interval interval) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    step double precision := extract(epoch FROM p_interval);
    first_start timestamptz;
    last_end timestamptz;
    boundary timestamptz;
    created integer := 0;
BEGIN
    IF step < 1 THEN
        RAISE EXCEPTION 'the partition interval must be at least one second';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('tidings_log_partitions', 0));
    SELECT min(starts_at), max(ends_at) INTO first_start, last_end FROM log_partitions WHERE dropped_at IS NULL;
    IF last_end IS NULL THEN
        first_start := to_timestamp(floor(extract(epoch FROM p_from) / step) * step);
        last_end := first_start;
    END IF;
    WHILE p_from < first_start LOOP
        boundary := to_timestamp(floor(extract(epoch FROM first_start - p_interval) / step) * step);
        PERFORM tidings_create_partition(boundary, first_start);
        first_start := boundary;
        created := created + 1;
    END LOOP;
    WHILE last_end < p_to LOOP
        boundary := to_timestamp((floor(extract(epoch FROM last_end) / step) + 1) * step);
        PERFORM tidings_create_partition(last_end, boundary);
        last_end := boundary;
        created := created + 1;
    END LOOP;
    RETURN created;
END;
$$;

-- What keeps a period from being dropped: its jobs still pending (deliveries inside their retry window,
-- verifications not yet settled) and its events the spreader has not finished spreading.
CREATE FUNCTION tidings_partition_blockers(p_suffix text, OUT pending bigint, OUT unspread bigint)
    LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT count(*) FROM %I WHERE state = ''pending''', 'outbox_p' || p_suffix) INTO pending;
    EXECUTE format('SELECT count(*) FROM %I e, spreader_cursor c
                    WHERE (e.txid, e.position) >= ((SELECT txid FROM spreader_cursor), (SELECT position FROM spreader_cursor))
                      AND ((e.txid, e.position) > (c.txid, c.position) OR c.subscription_id IS NOT NULL)',
                   'events_p' || p_suffix) INTO unspread;
END;
$$;

-- Retention: drops one period's partitions of events, outbox and delivery_attempts, unless something still
-- blocks it. The three tables are locked first, so no job can be added or put back in the queue between the check
-- and the drop; the caller sets a short lock_timeout and tries again later rather than stall the hub. Returns the
-- bytes removed, or NULL when the period was kept.
CREATE FUNCTION tidings_drop_partition(p_suffix text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    blockers record;
    bytes bigint;
BEGIN
    LOCK TABLE outbox, delivery_attempts, events IN ACCESS EXCLUSIVE MODE;
    IF NOT EXISTS (SELECT 1 FROM log_partitions WHERE suffix = p_suffix AND dropped_at IS NULL) THEN
        RETURN NULL;
    END IF;
    blockers := tidings_partition_blockers(p_suffix);
    IF blockers.pending > 0 OR blockers.unspread > 0 THEN
        RETURN NULL;
    END IF;
    bytes := pg_total_relation_size(format('%I', 'events_p' || p_suffix))
           + pg_total_relation_size(format('%I', 'outbox_p' || p_suffix))
           + pg_total_relation_size(format('%I', 'delivery_attempts_p' || p_suffix));
    EXECUTE format('DROP TABLE %I, %I, %I', 'events_p' || p_suffix, 'outbox_p' || p_suffix,
                   'delivery_attempts_p' || p_suffix);
    UPDATE log_partitions SET dropped_at = now() WHERE suffix = p_suffix;
    RETURN bytes;
END;
$$;

-- Move an existing database's rows into one partition that ends now; later periods follow it.
DO $$
DECLARE
    history_end timestamptz := now();
BEGIN
    IF EXISTS (SELECT 1 FROM events_unpartitioned) OR EXISTS (SELECT 1 FROM outbox_unpartitioned)
       OR EXISTS (SELECT 1 FROM delivery_attempts_unpartitioned) THEN
        PERFORM tidings_create_partition('-infinity', history_end);
        INSERT INTO events (position, id, kind, topic, content_type, body, tags, group_id, published_at, txid)
            OVERRIDING SYSTEM VALUE
            SELECT position, id, kind, topic, content_type, body, tags, group_id, published_at, txid
            FROM events_unpartitioned;
        INSERT INTO outbox (id, kind, subscription_id, event_position, request_id, state, attempts, due_at,
                            leased_until, last_status, last_error, created_at, finished_at, logged_at)
            OVERRIDING SYSTEM VALUE
            SELECT o.id, o.kind, o.subscription_id, o.event_position, o.request_id, o.state, o.attempts, o.due_at,
                   o.leased_until, o.last_status, o.last_error, o.created_at, o.finished_at,
                   least(coalesce(e.published_at, o.created_at), history_end)
            FROM outbox_unpartitioned o LEFT JOIN events_unpartitioned e ON e.position = o.event_position;
        INSERT INTO delivery_attempts (id, outbox_id, attempt, started_at, duration_ms, status_code, error_class,
                                       response_excerpt, outcome, logged_at)
            OVERRIDING SYSTEM VALUE
            SELECT a.id, a.outbox_id, a.attempt, a.started_at, a.duration_ms, a.status_code, a.error_class,
                   a.response_excerpt, a.outcome, coalesce(o.logged_at, '-infinity')
            FROM delivery_attempts_unpartitioned a LEFT JOIN outbox o ON o.id = a.outbox_id;
    END IF;
    PERFORM setval(pg_get_serial_sequence('events', 'position'), max(position)) FROM events_unpartitioned
        HAVING max(position) IS NOT NULL;
    PERFORM setval(pg_get_serial_sequence('outbox', 'id'), max(id)) FROM outbox_unpartitioned
        HAVING max(id) IS NOT NULL;
    PERFORM setval(pg_get_serial_sequence('delivery_attempts', 'id'), max(id)) FROM delivery_attempts_unpartitioned
        HAVING max(id) IS NOT NULL;
END;
$$;

DROP TABLE events_unpartitioned, outbox_unpartitioned, delivery_attempts_unpartitioned;
