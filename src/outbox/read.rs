//! Reading jobs and attempts for the admin API and the console.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{JobKind, JobState};

/// A delivery (or verification) job as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub kind: String,
    pub subscription_id: Uuid,
    pub event_position: Option<i64>,
    pub event_id: Option<Uuid>,
    pub request_id: Option<Uuid>,
    pub state: String,
    pub attempts: i32,
    pub due_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The state, with a pending job that has failed before as `retrying` ([`delivery_status!`]).
    #[serde(skip_serializing)]
    pub status: String,
}

/// The columns of a [`Delivery`], from `outbox o LEFT JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at`.
pub const DELIVERY_COLUMNS: &str = concat!(
    "o.id, o.kind, o.subscription_id, o.event_position, e.id AS event_id, o.request_id, o.state,
     o.attempts, o.due_at, o.last_status, o.last_error, o.created_at, o.finished_at, ",
    delivery_status!(),
    " AS status"
);

/// Filters for listing deliveries; every field is optional.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFilter {
    pub subscription_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    pub state: Option<JobState>,
    pub kind: Option<JobKind>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Cursor: only jobs with a larger id.
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

pub async fn list(pool: &PgPool, f: &DeliveryFilter, limit: i64) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM outbox o LEFT JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at
         WHERE ($1::uuid IS NULL OR o.subscription_id = $1) AND ($2::uuid IS NULL OR e.id = $2)
           AND ($3::text IS NULL OR o.state = $3) AND ($4::text IS NULL OR o.kind = $4)
           AND ($5::timestamptz IS NULL OR o.created_at >= $5) AND ($6::timestamptz IS NULL OR o.created_at < $6)
           AND o.id > $7
         ORDER BY o.id LIMIT $8"
    ))
    .bind(f.subscription_id)
    .bind(f.event_id)
    .bind(f.state.map(JobState::as_str))
    .bind(f.kind.map(JobKind::as_str))
    .bind(f.since)
    .bind(f.until)
    .bind(f.after.unwrap_or(0))
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM outbox o LEFT JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at WHERE o.id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct AttemptView {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error_class: Option<String>,
    pub response_excerpt: Option<String>,
    pub outcome: String,
}

pub async fn attempts(pool: &PgPool, job_id: i64) -> Result<Vec<AttemptView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT attempt, started_at, duration_ms, status_code, error_class, response_excerpt, outcome
         FROM delivery_attempts WHERE outbox_id = $1 ORDER BY id",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await
}

/// One subscription's jobs, newest first, with ids below `before`.
pub async fn recent(
    pool: &PgPool,
    subscription_id: Uuid,
    before: i64,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM outbox o LEFT JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at
         WHERE o.subscription_id = $1 AND o.id < $2 ORDER BY o.id DESC LIMIT $3"
    ))
    .bind(subscription_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The attempts of several jobs, each job's in order, with the job's id.
pub async fn attempts_of(pool: &PgPool, job_ids: &[i64]) -> Result<Vec<(i64, AttemptView)>, sqlx::Error> {
    let rows: Vec<JobAttempt> = sqlx::query_as(
        "SELECT outbox_id, attempt, started_at, duration_ms, status_code, error_class, response_excerpt, outcome
         FROM delivery_attempts WHERE outbox_id = ANY($1) ORDER BY outbox_id, id",
    )
    .bind(job_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| (r.outbox_id, r.attempt)).collect())
}

#[derive(sqlx::FromRow)]
struct JobAttempt {
    outbox_id: i64,
    #[sqlx(flatten)]
    attempt: AttemptView,
}
