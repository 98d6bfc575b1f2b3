//! Read models over the outbox and the log: progress of a group of events, delivery statistics per topic and
//! per subscription, and the operator actions that create or reset jobs (replay, bulk redelivery).
//! Failure policy: plain queries; every action is bounded and idempotent when repeated.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::subscriptions::store::OUTBOX_CHANNEL;

/// The most jobs one replay or bulk redelivery call creates or resets.
pub const MAX_BULK: i64 = 100_000;

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
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE group_id = $1 AND kind = 'content') AS events,
                count(o.id) FILTER (WHERE o.state = 'pending' AND o.last_error IS NULL) AS pending,
                count(o.id) FILTER (WHERE o.state = 'pending' AND o.last_error IS NOT NULL) AS retrying,
                count(o.id) FILTER (WHERE o.state = 'delivered') AS delivered,
                count(o.id) FILTER (WHERE o.state = 'dead') AS dead,
                count(o.id) FILTER (WHERE o.state = 'cancelled') AS cancelled
         FROM events e JOIN outbox o ON o.event_position = e.position AND o.kind = 'deliver'
         WHERE e.group_id = $1 AND e.kind = 'content'",
    )
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

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Replayed {
    /// New delivery jobs created.
    pub created: i64,
    /// Where to continue when the bound was reached (None: the replay reached the head of the log).
    pub next_position: Option<i64>,
}

/// Creates delivery jobs for the events at or after `from_position` (and `from_time`) that the subscription
/// matches and that have no job for it yet, up to `limit` events. Repeating the call creates nothing new.
pub async fn replay(
    pool: &PgPool,
    subscription_id: Uuid,
    from_position: i64,
    from_time: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Replayed, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let (created, last, scanned): (i64, Option<i64>, i64) = sqlx::query_as(
        "WITH matched AS (
             SELECT e.position, e.published_at FROM subscriptions s JOIN events e
                 ON tidings_topic_matches(s.topic, s.pattern_prefix, e.topic)
             WHERE s.id = $1 AND e.kind = 'content' AND e.position >= $2
               AND ($3::timestamptz IS NULL OR e.published_at >= $3)
             ORDER BY e.position LIMIT $4
         ), created AS (
             INSERT INTO outbox (kind, subscription_id, event_position, logged_at)
             SELECT 'deliver', $1, position, published_at FROM matched ORDER BY position
             ON CONFLICT (event_position, subscription_id, logged_at) DO NOTHING
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM created), (SELECT max(position) FROM matched), (SELECT count(*) FROM matched)",
    )
    .bind(subscription_id)
    .bind(from_position)
    .bind(from_time)
    .bind(limit)
    .fetch_one(&mut *tx)
    .await?;
    if created > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(OUTBOX_CHANNEL).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Replayed { created, next_position: last.filter(|_| scanned == limit).map(|p| p + 1) })
}

/// Puts the dead deliveries of a subscription created in [since, until) back in the queue. Returns how many.
pub async fn redeliver_dead(
    pool: &PgPool,
    subscription_id: Uuid,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let reset = sqlx::query(
        "UPDATE outbox SET state = 'pending', attempts = 0, due_at = now(), finished_at = NULL, leased_until = NULL
         WHERE id IN (SELECT id FROM outbox WHERE subscription_id = $1 AND kind = 'deliver' AND state = 'dead'
                        AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3)
                      ORDER BY id LIMIT $4)",
    )
    .bind(subscription_id)
    .bind(since)
    .bind(until)
    .bind(MAX_BULK)
    .execute(&mut *tx)
    .await?
    .rows_affected() as i64;
    if reset > 0 {
        sqlx::query("SELECT pg_notify($1, '')").bind(OUTBOX_CHANNEL).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(reset)
}
