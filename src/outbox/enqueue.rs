//! Enqueueing jobs outside the spreader: the verification (or denial notice) of a subscription request, in the
//! caller's transaction, and replays of past events to one subscription. The caller wakes the deliverers with
//! [`super::wake`] once its commit returned.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::JobKind;

/// The most jobs one replay or bulk redelivery call creates or resets.
pub const MAX_BULK: i64 = 100_000;

/// Queues the job that carries out a subscription request (`Verify` or `Deny`), in the caller's transaction.
pub async fn enqueue_request(
    tx: &mut Transaction<'_, Postgres>,
    kind: JobKind,
    subscription_id: Uuid,
    request_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (kind, subscription_id, request_id) VALUES ($1, $2, $3)")
        .bind(kind)
        .bind(subscription_id)
        .bind(request_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
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
    let (created, last, scanned): (i64, Option<i64>, i64) = sqlx::query_as(concat!(
        "WITH matched AS (
             SELECT e.position, e.published_at FROM subscriptions s JOIN events e
                 ON tidings_topic_matches(s.topic, s.pattern_prefix, e.topic)
             WHERE s.id = $1 AND e.kind = 'content' AND e.position >= $2
               AND ($3::timestamptz IS NULL OR e.published_at >= $3)
             ORDER BY e.position LIMIT $4
         ), created AS (",
        enqueue_deliveries!("SELECT 'deliver', $1, position, published_at FROM matched ORDER BY position"),
        ")
         SELECT (SELECT count(*) FROM created), (SELECT max(position) FROM matched), (SELECT count(*) FROM matched)"
    ))
    .bind(subscription_id)
    .bind(from_position)
    .bind(from_time)
    .bind(limit)
    .fetch_one(pool)
    .await?;
    if created > 0 {
        super::wake(pool).await;
    }
    Ok(Replayed { created, next_position: last.filter(|_| scanned == limit).map(|p| p + 1) })
}
