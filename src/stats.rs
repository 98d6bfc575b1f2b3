//! Read models over the outbox and the log: progress of a group of events, delivery statistics per topic and
//! per subscription. Reads only; the jobs themselves are created and reset by [`crate::outbox`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::outbox::delivery_status;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, PartialEq, Eq)]
pub struct GroupProgress {
    pub events: i64,
    pub pending: i64,
    pub retrying: i64,
    pub delivered: i64,
    pub dead: i64,
    pub cancelled: i64,
}

/// How the deliveries of every event with this group id stand.
pub async fn group_progress(pool: &PgPool, group_id: &str) -> Result<GroupProgress, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT (SELECT count(*) FROM events WHERE group_id = $1 AND kind = 'content') AS events,
                count(o.id) FILTER (WHERE status = 'pending') AS pending,
                count(o.id) FILTER (WHERE status = 'retrying') AS retrying,
                count(o.id) FILTER (WHERE status = 'delivered') AS delivered,
                count(o.id) FILTER (WHERE status = 'dead') AS dead,
                count(o.id) FILTER (WHERE status = 'cancelled') AS cancelled
         FROM events e JOIN outbox o ON o.event_position = e.position AND o.kind = 'deliver'
              CROSS JOIN LATERAL (SELECT ",
        delivery_status!(),
        " AS status) st
         WHERE e.group_id = $1 AND e.kind = 'content'"
    ))
    .bind(group_id)
    .fetch_one(pool)
    .await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryStats {
    pub topic: Option<String>,
    pub subscription_id: Option<Uuid>,
    pub deliveries: i64,
    pub delivered: i64,
    pub dead: i64,
    pub pending: i64,
    pub attempts: i64,
    pub failed_attempts: i64,
    /// delivered ÷ (delivered + dead); null when nothing has finished.
    pub success_rate: Option<f64>,
    /// Publish → delivered, in milliseconds.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// Statistics of deliveries created in [since, until), per topic and per subscription.
pub async fn delivery_stats(
    pool: &PgPool,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    topic: Option<&str>,
    subscription_id: Option<Uuid>,
) -> Result<Vec<DeliveryStats>, sqlx::Error> {
    sqlx::query_as(
        "WITH jobs AS (
             SELECT o.id, o.subscription_id, e.topic, o.state, o.finished_at, e.published_at
             FROM outbox o JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at
             WHERE o.kind = 'deliver' AND o.created_at >= $1 AND o.created_at < $2
               AND ($3::text IS NULL OR e.topic = $3) AND ($4::uuid IS NULL OR o.subscription_id = $4)
         ), tries AS (
             SELECT a.outbox_id, count(*) AS n, count(*) FILTER (WHERE a.outcome <> 'delivered') AS failed
             FROM delivery_attempts a JOIN jobs ON jobs.id = a.outbox_id GROUP BY a.outbox_id
         )
         SELECT j.topic, j.subscription_id, count(*) AS deliveries,
                count(*) FILTER (WHERE j.state = 'delivered') AS delivered,
                count(*) FILTER (WHERE j.state = 'dead') AS dead,
                count(*) FILTER (WHERE j.state = 'pending') AS pending,
                coalesce(sum(t.n), 0)::bigint AS attempts,
                coalesce(sum(t.failed), 0)::bigint AS failed_attempts,
                (count(*) FILTER (WHERE j.state = 'delivered'))::float8
                    / nullif(count(*) FILTER (WHERE j.state IN ('delivered', 'dead')), 0) AS success_rate,
                percentile_cont(0.50) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.published_at) * 1000)
                    FILTER (WHERE j.state = 'delivered') AS latency_p50_ms,
                percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.published_at) * 1000)
                    FILTER (WHERE j.state = 'delivered') AS latency_p95_ms,
                percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM j.finished_at - j.published_at) * 1000)
                    FILTER (WHERE j.state = 'delivered') AS latency_p99_ms
         FROM jobs j LEFT JOIN tries t ON t.outbox_id = j.id
         GROUP BY GROUPING SETS ((j.topic), (j.subscription_id))
         ORDER BY j.topic NULLS LAST, j.subscription_id NULLS LAST",
    )
    .bind(since)
    .bind(until)
    .bind(topic)
    .bind(subscription_id)
    .fetch_all(pool)
    .await
}
