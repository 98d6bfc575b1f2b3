-- Index-backed pattern matching. A pattern subscription (`a.b.*`, stored as its lowercase prefix `a.b.`) matches
-- an event topic when that prefix is one of the topic's own: the empty prefix (`*`) or a lowercase prefix of the
-- topic that ends with a dot and is followed by at least one more character. Listing those prefixes turns
-- matching into `pattern_prefix = ANY(tidings_pattern_prefixes(topic))`: one probe of
-- subscriptions_active_pattern_idx per dot in the topic, however many pattern subscriptions exist, instead of
-- testing every one of them.
CREATE FUNCTION tidings_pattern_prefixes(topic text) RETURNS text[]
    LANGUAGE sql STABLE PARALLEL SAFE STRICT
AS $$
    SELECT ARRAY[''] || ARRAY(
        SELECT left(l, i) FROM generate_series(1, length(l) - 1) AS i WHERE substr(l, i, 1) = '.' ORDER BY i
    )
    FROM lower(topic) AS l
$$;
