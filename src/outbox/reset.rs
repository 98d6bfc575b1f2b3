//! Resetting ended deliveries (dead, cancelled or delivered) to pending with a fresh retry schedule, one job or a
//! subscription's dead ones in bulk, through the one reset statement. The wake-up follows the commit.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::MAX_BULK;

/// Puts a dead (or cancelled) delivery back in the queue with a fresh retry schedule. Its attempt history stays.
/// Returns false when the job is not a delivery that has ended.
pub async fn redeliver(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        reset_to_pending!(),
        " WHERE id = $1 AND kind = 'deliver' AND state IN ('dead', 'cancelled', 'delivered')"
    ))
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if done {
        super::wake(pool).await;
    }
    Ok(done)
}

/// Puts the dead deliveries of a subscription created in [since, until) back in the queue. Returns how many.
pub async fn redeliver_dead(
    pool: &PgPool,
    subscription_id: Uuid,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<i64, sqlx::Error> {
    let reset = sqlx::query(concat!(
        reset_to_pending!(),
        " WHERE id IN (SELECT id FROM outbox WHERE subscription_id = $1 AND kind = 'deliver' AND state = 'dead'
                        AND ($2::timestamptz IS NULL OR created_at >= $2) AND ($3::timestamptz IS NULL OR created_at < $3)
                      ORDER BY id LIMIT $4)"
    ))
    .bind(subscription_id)
    .bind(since)
    .bind(until)
    .bind(MAX_BULK)
    .execute(pool)
    .await?
    .rows_affected() as i64;
    if reset > 0 {
        super::wake(pool).await;
    }
    Ok(reset)
}

/// Forgets a subscription's rate-limit state and makes its deliveries that a limit held back (never attempted, due
/// later) due now, so a new or removed limit applies to them from the next claim rather than after the old
/// limit's schedule. In the caller's transaction, which changes the limit; wake the deliverers after its commit.
pub async fn release_held(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    subscription_id: Uuid,
) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM delivery_throttles WHERE subscription_id = $1")
        .bind(subscription_id)
        .execute(&mut **tx)
        .await?;
    let released = sqlx::query(
        "UPDATE outbox SET due_at = now(), reserved = false
         WHERE subscription_id = $1 AND state = 'pending' AND kind = 'deliver' AND attempts = 0 AND due_at > now()",
    )
    .bind(subscription_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(released)
}
