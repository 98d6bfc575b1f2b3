//! SQL for the `outbox` and `delivery_attempts` tables: claiming due jobs and recording what happened.
//!
//! Claim: one statement reads due pending jobs (four times the limit, without locking them), picks for each
//! callback host at most the room the caller gives it (`per_host` for a host it has nothing of, none for a
//! host it reports saturated), locks only the picked ones with
//! `FOR UPDATE SKIP LOCKED` (rechecking that each is still unfinished and due, so a job another deliverer claimed
//! meanwhile drops out), and pushes their `due_at` forward by the lease. Locking every candidate instead wrote a
//! lock for up to 800 rows to take 32 at fan-out 1. The claim
//! commits before any network call; a worker that dies simply lets the lease run out and the job comes due again.
//!
//! Pacing: a saturated host's due jobs would sit at the head of the due-job index and every claim would read past
//! them. The same statement pushes the due jobs of a paced host back to the times its pace lets it reach them,
//! so the head of the index holds only jobs some host can take. A push is not an attempt; it is bounded by the
//! caller's horizon, so a host that recovers has its whole backlog due again within that horizon.
//!
//! Durability: claims and outcome records are derived state — losing the tail of them after a crash means a job
//! is attempted again (at-least-once), never lost — so both commit with `synchronous_commit = off`. Subscription
//! transitions (verified, gone) go through the subscriptions store and commit durably.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;
use uuid::Uuid;

/// A claimed job with everything needed to carry it out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    /// The job's time partition (its event's publish time, or when a verification was requested).
    pub logged_at: DateTime<Utc>,
    pub kind: String,
    pub subscription_id: Uuid,
    /// Attempts including this one.
    pub attempts: i32,
    pub request_id: Option<Uuid>,
    pub callback: String,
    pub callback_host: String,
    pub subscription_state: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub secret: Option<String>,
    pub event_position: Option<i64>,
    pub event_id: Option<Uuid>,
    pub event_topic: Option<String>,
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// The claim: `$1` jobs at most, `$2` seconds of lease, none for the hosts in `$4`, `$6[i]` for the host `$5[i]`
/// and `$3` for any other callback host. Among the first due jobs (as many as the candidates), those of each paced
/// host `$7[i]` (a saturated host whose claimed jobs alone keep it busy for a while) are pushed back to its pace:
/// its `n`-th to `$8[i] + (n - 1) * $9[i]` seconds from now, at most `$10` seconds; pushing back is not an attempt
/// (`attempts` is unchanged).
/// One statement (one round trip, the shortest possible transaction); `set_config(.., true)` is
/// `SET LOCAL synchronous_commit = off` for this statement's implicit transaction.
pub const CLAIM_SQL: &str = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
    candidates AS (
        SELECT o.id, o.logged_at, s.callback_host FROM outbox o JOIN subscriptions s ON s.id = o.subscription_id
        WHERE o.state = 'pending' AND o.due_at <= now() AND s.callback_host <> ALL($4::text[])
        ORDER BY o.due_at, o.id LIMIT $1 * 4
    ), picked AS (
        SELECT r.id, r.logged_at
        FROM (SELECT id, logged_at, callback_host, row_number() OVER (PARTITION BY callback_host ORDER BY id) AS n
              FROM candidates) r
             LEFT JOIN unnest($5::text[], $6::bigint[]) AS h(host, room) ON h.host = r.callback_host
        WHERE r.n <= coalesce(h.room, $3) ORDER BY r.id LIMIT $1
    ), locked AS (
        SELECT o.id, o.logged_at FROM outbox o JOIN picked p ON o.id = p.id AND o.logged_at = p.logged_at
        WHERE o.finished_at IS NULL AND o.due_at <= now()
        FOR UPDATE OF o SKIP LOCKED
    ), head AS MATERIALIZED (
        SELECT o.id, o.logged_at, o.due_at, o.subscription_id FROM outbox o
        WHERE cardinality($7::text[]) > 0 AND o.state = 'pending' AND o.due_at <= now()
        ORDER BY o.due_at, o.id LIMIT $1 * 4
    ), behind AS (
        SELECT hd.id, hd.logged_at, h.first, h.every,
               row_number() OVER (PARTITION BY s.callback_host ORDER BY hd.due_at, hd.id) AS n
        FROM head hd JOIN subscriptions s ON s.id = hd.subscription_id
             JOIN unnest($7::text[], $8::float8[], $9::float8[]) AS h(host, first, every) ON h.host = s.callback_host
    ), paced AS (
        SELECT o.id, o.logged_at, d.first + (d.n - 1) * d.every AS delay
        FROM outbox o JOIN behind d ON o.id = d.id AND o.logged_at = d.logged_at
        WHERE o.finished_at IS NULL AND o.due_at <= now()
        FOR UPDATE OF o SKIP LOCKED
    ), pushed AS (
        UPDATE outbox o SET due_at = now() + make_interval(secs => least(paced.delay, $10))
        FROM paced WHERE o.id = paced.id AND o.logged_at = paced.logged_at
    ), claimed AS (
        UPDATE outbox o SET attempts = o.attempts + 1,
               due_at = now() + make_interval(secs => $2), leased_until = now() + make_interval(secs => $2)
        FROM locked WHERE o.id = locked.id AND o.logged_at = locked.logged_at
        RETURNING o.id, o.logged_at, o.kind, o.subscription_id, o.attempts, o.request_id, o.event_position
    )
    SELECT c.id, c.logged_at, c.kind, c.subscription_id, c.attempts, c.request_id, s.callback, s.callback_host,
           s.state AS subscription_state, s.expires_at, s.secret, c.event_position,
           e.id AS event_id, e.topic AS event_topic, e.content_type, e.body
    FROM claimed c JOIN subscriptions s ON s.id = c.subscription_id
         LEFT JOIN events e ON e.position = c.event_position AND e.published_at = c.logged_at
         CROSS JOIN relaxed
    ORDER BY c.id";

/// How many jobs one claim may take for each callback host.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    /// For a host not named below.
    pub per_host: i64,
    /// Hosts that may take nothing (left out of the candidates).
    pub saturated: Vec<String>,
    /// Hosts with a room of their own, and that room.
    pub hosts: Vec<String>,
    pub rooms: Vec<i64>,
    /// Saturated hosts whose due jobs are pushed back to their pace, so that claims do not read past them.
    pub paced: Vec<Pace>,
    /// The furthest a job is pushed back.
    pub pace_horizon: Duration,
}

/// Where a paced host's due jobs go: the first `first` from now, each next one `every` later.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    pub host: String,
    pub first: Duration,
    pub every: Duration,
}

/// Claims up to `limit` due jobs, as many per callback host as `rooms` allows.
pub async fn claim(pool: &PgPool, limit: i64, lease: Duration, rooms: &Rooms) -> Result<Vec<Job>, sqlx::Error> {
    sqlx::query_as(CLAIM_SQL)
        .bind(limit)
        .bind(lease.as_secs_f64())
        .bind(rooms.per_host)
        .bind(&rooms.saturated)
        .bind(&rooms.hosts)
        .bind(&rooms.rooms)
        .bind(rooms.paced.iter().map(|p| p.host.as_str()).collect::<Vec<_>>())
        .bind(rooms.paced.iter().map(|p| p.first.as_secs_f64()).collect::<Vec<_>>())
        .bind(rooms.paced.iter().map(|p| p.every.as_secs_f64()).collect::<Vec<_>>())
        .bind(rooms.pace_horizon.as_secs_f64())
        .fetch_all(pool)
        .await
}

/// When the next pending job comes due (None when there is none).
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(due_at) FROM outbox WHERE state = 'pending'").fetch_one(pool).await
}

/// The new state of a job after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivered,
    /// Try again after this delay.
    Retry(Duration),
    Dead,
    /// No further attempts: the subscription is no longer active (or the request was settled elsewhere).
    Cancelled,
    /// Put back untouched: claimed but not started before shutdown.
    Released,
}

/// One HTTP attempt, for `delivery_attempts`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
    pub status_code: Option<u16>,
    pub error_class: Option<String>,
    pub excerpt: Option<String>,
    /// delivered, retry, dead, gone, verified, refused or notified.
    pub outcome: &'static str,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub job_id: i64,
    pub logged_at: DateTime<Utc>,
    pub attempt_number: i32,
    pub next: Next,
    pub attempt: Option<Attempt>,
    pub error: Option<String>,
}

impl Job {
    /// What happened to this job: its next state, the attempt made (if any) and the error to keep.
    pub fn outcome(&self, next: Next, attempt: Option<Attempt>, error: Option<String>) -> Outcome {
        Outcome { job_id: self.id, logged_at: self.logged_at, attempt_number: self.attempts, next, attempt, error }
    }
}

/// Outcomes: new job states (`$1`–`$5`, `$15`), released jobs (`$6`, `$16`) and attempt rows (`$7`–`$14`, `$17`).
///
/// Each job is found by its key, and only while unfinished (`finished_at IS NULL`, which is what `state =
/// 'pending'` means: every write sets the two together). Written as the state, the check matched the partial index
/// of pending jobs, and the planner could take that index to find a job by id (its second column: the whole index
/// read per job) — cheap while few jobs wait, ruinous under a backlog.
pub const RECORD_SQL: &str = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
    finished AS (
        UPDATE outbox o SET state = t.state, leased_until = NULL, last_status = t.status, last_error = t.error,
               due_at = CASE WHEN t.delay IS NULL THEN o.due_at ELSE now() + make_interval(secs => t.delay) END,
               finished_at = CASE WHEN t.state = 'pending' THEN NULL ELSE now() END
        FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::int[], $5::text[], $15::timestamptz[])
             AS t(id, state, delay, status, error, logged_at)
        WHERE o.id = t.id AND o.logged_at = t.logged_at AND o.finished_at IS NULL
        RETURNING 1
    ), released AS (
        UPDATE outbox o SET due_at = now(), leased_until = NULL, attempts = o.attempts - 1
        FROM unnest($6::bigint[], $16::timestamptz[]) AS t(id, logged_at)
        WHERE o.id = t.id AND o.logged_at = t.logged_at AND o.finished_at IS NULL
        RETURNING 1
    ), recorded AS (
        INSERT INTO delivery_attempts
            (outbox_id, attempt, started_at, duration_ms, status_code, error_class, response_excerpt, outcome,
             logged_at)
        SELECT * FROM unnest($7::bigint[], $8::int[], $9::timestamptz[], $10::int[], $11::int[], $12::text[],
                             $13::text[], $14::text[], $17::timestamptz[])
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM finished), (SELECT count(*) FROM released), (SELECT count(*) FROM recorded)
    FROM relaxed";

/// Records a batch of outcomes in one transaction: job states and attempt rows.
pub async fn record(pool: &PgPool, outcomes: &[Outcome]) -> Result<(), sqlx::Error> {
    let mut ids = Vec::new();
    let mut logged = Vec::new();
    let mut states = Vec::new();
    let mut delays: Vec<Option<f64>> = Vec::new();
    let mut statuses: Vec<Option<i32>> = Vec::new();
    let mut errors: Vec<Option<String>> = Vec::new();
    let (mut released, mut released_logged) = (Vec::new(), Vec::new());
    for o in outcomes {
        if o.next == Next::Released {
            released.push(o.job_id);
            released_logged.push(o.logged_at);
            continue;
        }
        ids.push(o.job_id);
        logged.push(o.logged_at);
        let (state, delay) = match &o.next {
            Next::Delivered => ("delivered", None),
            Next::Retry(d) => ("pending", Some(d.as_secs_f64())),
            Next::Dead => ("dead", None),
            Next::Cancelled | Next::Released => ("cancelled", None),
        };
        states.push(state);
        delays.push(delay);
        statuses.push(o.attempt.as_ref().and_then(|a| a.status_code).map(i32::from));
        errors.push(o.error.clone());
    }
    let attempts: Vec<(&Outcome, &Attempt)> =
        outcomes.iter().filter_map(|o| o.attempt.as_ref().map(|a| (o, a))).collect();
    // One statement, so one short transaction, committed without waiting for the disk (see the module doc).
    sqlx::query(RECORD_SQL)
        .bind(&ids)
        .bind(&states)
        .bind(&delays)
        .bind(&statuses)
        .bind(&errors)
        .bind(&released)
        .bind(attempts.iter().map(|(o, _)| o.job_id).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(o, _)| o.attempt_number).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.started_at).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.duration.as_millis().min(i32::MAX as u128) as i32).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.status_code.map(i32::from)).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.error_class.clone()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.excerpt.clone()).collect::<Vec<_>>())
        .bind(attempts.iter().map(|(_, a)| a.outcome).collect::<Vec<_>>())
        .bind(&logged)
        .bind(&released_logged)
        .bind(attempts.iter().map(|(o, _)| o.logged_at).collect::<Vec<_>>())
        .execute(pool)
        .await?;
    Ok(())
}

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
}

/// The columns of a [`Delivery`], from `outbox o LEFT JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at`.
pub const DELIVERY_COLUMNS: &str =
    "o.id, o.kind, o.subscription_id, o.event_position, e.id AS event_id, o.request_id, o.state,
     o.attempts, o.due_at, o.last_status, o.last_error, o.created_at, o.finished_at";

/// The states of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Delivered,
    Dead,
    Cancelled,
}

/// The kinds of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Deliver,
    Verify,
    Deny,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Delivered => "delivered",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Deliver => "deliver",
            JobKind::Verify => "verify",
            JobKind::Deny => "deny",
        }
    }
}

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

/// Puts a dead (or cancelled) delivery back in the queue with a fresh retry schedule. Its attempt history stays.
/// Returns false when the job is not a delivery that has ended.
pub async fn redeliver(pool: &PgPool, id: i64) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE outbox SET state = 'pending', attempts = 0, due_at = now(), finished_at = NULL, leased_until = NULL
         WHERE id = $1 AND kind = 'deliver' AND state IN ('dead', 'cancelled', 'delivered')",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if done {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(crate::subscriptions::store::OUTBOX_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(done)
}
