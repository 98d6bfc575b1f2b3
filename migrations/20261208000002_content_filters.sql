-- Content filters: a subscription may carry a predicate over the event's tags and JSON body (`filter`, as the
-- subscriber gave it) compiled to a jsonpath (`filter_path`, evaluated by the spreader). Both or neither. A
-- request carries the filter it asks for until its verification applies it; a request's `filter` of JSON null
-- asks to remove the current one.
ALTER TABLE subscriptions
    ADD COLUMN filter      jsonb,
    ADD COLUMN filter_path jsonpath,
    ADD CONSTRAINT subscriptions_filter_check CHECK ((filter IS NULL) = (filter_path IS NULL));
ALTER TABLE subscription_requests
    ADD COLUMN filter      jsonb,
    ADD COLUMN filter_path jsonpath;

-- Whether an event on a topic has any filtered subscription to evaluate (the spreader builds the event's
-- document only then).
CREATE INDEX subscriptions_filtered_topic_idx ON subscriptions (topic)
    WHERE state = 'active' AND pattern_prefix IS NULL AND filter_path IS NOT NULL;
CREATE INDEX subscriptions_filtered_prefix_idx ON subscriptions (pattern_prefix)
    WHERE state = 'active' AND pattern_prefix IS NOT NULL AND filter_path IS NOT NULL;

-- The document a filter is evaluated over: {"tags": [...], "body": <the body as JSON, or null>}. The body counts
-- as JSON when its content type is application/json or ends in +json (as the API decides) and it parses; a body
-- that does not parse is null, never an error, so one odd event cannot stop spreading.
CREATE FUNCTION tidings_event_document(tags text[], content_type text, body bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    essence text := lower(trim(split_part(content_type, ';', 1)));
    parsed  jsonb;
BEGIN
    IF essence = 'application/json' OR essence LIKE '%+json' THEN
        BEGIN
            parsed := convert_from(body, 'UTF8')::jsonb;
        EXCEPTION WHEN others THEN
            parsed := NULL;
        END;
    END IF;
    RETURN jsonb_build_object('tags', to_jsonb(coalesce(tags, '{}')), 'body', parsed);
END
$$;
