//! Read queries only the console needs: newest-first pages (keyset on an indexed key, never OFFSET), the
//! overview's per-minute series, and bounded per-subscription health. Everything else comes from the existing
//! read models (`outbox`, `events`, `subscriptions::store`, `spreader`, `stats`). No query here counts a whole
//! large table: counts are either over a time window or capped.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::outbox::{Delivery, DELIVERY_COLUMNS};

/// Deliveries counted at most up to this many; beyond it the console shows "N+".
pub const COUNT_CAP: i64 = 100_000;

/// One minute of the overview's series.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Minute {
    pub minute: DateTime<Utc>,
    pub events: i64,
    pub delivered: i64,
    pub failed: i64,
}

/// Events published and delivery attempts per minute (delivered, anything else) over the last `minutes`.
pub async fn per_minute(pool: &PgPool, minutes: i32) -> Result<Vec<Minute>, sqlx::Error> {
    sqlx::query_as(
        "WITH span AS (
             SELECT generate_series(date_trunc('minute', now()) - make_interval(mins => $1 - 1),
                                    date_trunc('minute', now()), interval '1 minute') AS minute
         ), e AS (
             SELECT date_trunc('minute', published_at) AS minute, count(*) AS n FROM events
             WHERE published_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1) AND kind = 'content'
             GROUP BY 1
         ), a AS (
             SELECT date_trunc('minute', started_at) AS minute,
                    count(*) FILTER (WHERE outcome = 'delivered') AS delivered,
                    count(*) FILTER (WHERE outcome IN ('retry', 'dead', 'gone')) AS failed
             FROM delivery_attempts
             WHERE started_at >= date_trunc('minute', now()) - make_interval(mins => $1 - 1)
             GROUP BY 1
         )
         SELECT span.minute, coalesce(e.n, 0) AS events, coalesce(a.delivered, 0) AS delivered,
                coalesce(a.failed, 0) AS failed
         FROM span LEFT JOIN e USING (minute) LEFT JOIN a USING (minute) ORDER BY span.minute",
    )
    .bind(minutes)
    .fetch_all(pool)
    .await
}

/// Delivery attempts by outcome over the last hour.
pub async fn outcomes_last_hour(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT outcome, count(*) FROM delivery_attempts WHERE started_at >= now() - interval '1 hour'
         GROUP BY outcome ORDER BY count(*) DESC, outcome",
    )
    .fetch_all(pool)
    .await
}

/// Pending jobs (capped at [`COUNT_CAP`]) and how many of them are due now.
pub async fn outbox_depth(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE state = 'pending' LIMIT $1) p),
                (SELECT count(*) FROM (SELECT 1 FROM outbox WHERE state = 'pending' AND due_at <= now() LIMIT $1) d)",
    )
    .bind(COUNT_CAP)
    .fetch_one(pool)
    .await
}

/// A topic that has events.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopicRow {
    pub topic: String,
    pub last_position: i64,
    pub last_published_at: DateTime<Utc>,
    /// Active subscriptions to exactly this topic, counted up to 1001.
    pub subscribers: i64,
}

/// Topics in name order after `after`, found by skipping through the (topic, position) index.
pub async fn topics(pool: &PgPool, after: &str, limit: i64) -> Result<Vec<TopicRow>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE t(topic, n) AS (
             SELECT (SELECT min(topic) FROM events WHERE topic > $1), 1
             UNION ALL
             SELECT (SELECT min(topic) FROM events WHERE topic > t.topic), t.n + 1 FROM t
             WHERE t.topic IS NOT NULL AND t.n < $2
         )
         SELECT t.topic, last.position AS last_position, last.published_at AS last_published_at,
                (SELECT count(*) FROM (SELECT 1 FROM subscriptions s
                                       WHERE s.topic = t.topic AND s.state = 'active' LIMIT 1001) c) AS subscribers
         FROM t CROSS JOIN LATERAL (SELECT position, published_at FROM events e WHERE e.topic = t.topic
                                    ORDER BY position DESC LIMIT 1) last
         WHERE t.topic IS NOT NULL ORDER BY t.topic",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// How a subscription's recent deliveries went.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Health {
    pub subscription_id: Uuid,
    /// Delivered ÷ finished among its last 1000 deliveries.
    pub success_rate: Option<f64>,
    pub dead: i64,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_status: Option<i32>,
}

/// Health of each of these subscriptions, from their last 1000 deliveries (bounded work per subscription).
pub async fn health(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Health>, sqlx::Error> {
    sqlx::query_as(
        "SELECT sid AS subscription_id,
                (r.delivered::float8 / nullif(r.delivered + r.dead, 0)) AS success_rate, r.dead,
                l.started_at AS last_attempt_at, l.outcome AS last_outcome, l.status_code AS last_status
         FROM unnest($1::uuid[]) AS sid
         CROSS JOIN LATERAL (
             SELECT count(*) FILTER (WHERE state = 'delivered') AS delivered,
                    count(*) FILTER (WHERE state = 'dead') AS dead
             FROM (SELECT state FROM outbox WHERE subscription_id = sid ORDER BY id DESC LIMIT 1000) recent
         ) r
         LEFT JOIN LATERAL (
             SELECT a.started_at, a.outcome, a.status_code
             FROM (SELECT id FROM outbox WHERE subscription_id = sid ORDER BY id DESC LIMIT 20) o
             JOIN delivery_attempts a ON a.outbox_id = o.id
             ORDER BY a.started_at DESC LIMIT 1
         ) l ON true",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// A page of deliveries newest first, before id `before`, by state and/or subscription.
pub async fn deliveries(
    pool: &PgPool,
    state: Option<&str>,
    subscription_id: Option<Uuid>,
    before: i64,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM outbox o LEFT JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at
         WHERE o.id < $1 AND ($2::text IS NULL OR o.state = $2) AND ($3::uuid IS NULL OR o.subscription_id = $3)
         ORDER BY o.id DESC LIMIT $4"
    ))
    .bind(before)
    .bind(state)
    .bind(subscription_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// A page of one event's deliveries, in subscription order after `after`.
pub async fn event_deliveries(
    pool: &PgPool,
    position: i64,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM outbox o LEFT JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at
         WHERE o.event_position = $1 AND ($2::uuid IS NULL OR o.subscription_id > $2)
         ORDER BY o.subscription_id LIMIT $3"
    ))
    .bind(position)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}
