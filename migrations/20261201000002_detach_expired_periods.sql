-- Retention detaches an expired period's partitions with DETACH PARTITION ... CONCURRENTLY, then drops them as
-- tables of their own. Dropping a partition in place took an ACCESS EXCLUSIVE lock on the three parents, and while
-- it waited for that lock every publish, claim and outcome queued behind it (in a 30-minute soak, 110-215 ms at
-- each drop). A concurrent detach takes only SHARE UPDATE EXCLUSIVE on the parent, which no read or write
-- conflicts with. It cannot run inside a transaction, so the steps are driven from src/partitions.rs; these
-- functions are the parts that can.

DROP FUNCTION tidings_drop_partition(text);

-- How each table of a period stands, in the order retention detaches them: 'attached', 'detaching' (a concurrent
-- detach was interrupted; `DETACH PARTITION ... FINALIZE` completes it), 'detached' or 'missing'. Names are quoted
-- for use in SQL.
CREATE FUNCTION tidings_period_tables(p_suffix text)
    RETURNS TABLE (parent text, child text, state text)
    LANGUAGE sql STABLE AS $$
    SELECT format('%I', t.parent), format('%I', t.parent || '_p' || p_suffix),
           CASE WHEN c.oid IS NULL THEN 'missing'
                WHEN i.inhrelid IS NULL THEN 'detached'
                WHEN i.inhdetachpending THEN 'detaching'
                ELSE 'attached' END
    FROM unnest(ARRAY['outbox', 'delivery_attempts', 'events']) WITH ORDINALITY AS t (parent, n)
    LEFT JOIN pg_class c ON c.oid = to_regclass(format('%I', t.parent || '_p' || p_suffix))
    LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = t.parent::regclass
    ORDER BY t.n
$$;

-- Attaches again the tables of a period that were detached (retention found a job pending again after detaching,
-- or the period is no longer expired). Returns how many it attached.
CREATE FUNCTION tidings_reattach_period(p_suffix text) RETURNS integer
    LANGUAGE plpgsql AS $$
DECLARE
    period log_partitions;
    t record;
    attached integer := 0;
BEGIN
    SELECT * INTO STRICT period FROM log_partitions WHERE suffix = p_suffix AND dropped_at IS NULL;
    FOR t IN SELECT * FROM tidings_period_tables(p_suffix) WHERE state = 'detached' LOOP
        EXECUTE format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)', t.parent, t.child,
                       period.starts_at, period.ends_at);
        attached := attached + 1;
    END LOOP;
    RETURN attached;
END;
$$;

-- Drops the tables of a period once all three are detached, and records the drop. Returns the bytes freed.
CREATE FUNCTION tidings_drop_detached_period(p_suffix text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    bytes bigint;
BEGIN
    IF EXISTS (SELECT 1 FROM tidings_period_tables(p_suffix) WHERE state <> 'detached') THEN
        RAISE EXCEPTION 'period % is still attached; retention drops only detached tables', p_suffix;
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
