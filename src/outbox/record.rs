//! Recording what happened to claimed jobs: their next state and one `delivery_attempts` row per HTTP attempt,
//! in one statement committed with `synchronous_commit = off` (a lost record means the job is attempted again,
//! at-least-once, never lost). A delivery that goes dead while its subscription is active is also published on
//! `tidings.delivery.dead` in the same statement, so the notice exists exactly when the dead state does; a
//! delivery of an event on a reserved topic never is, so an operator's failing alert callback cannot feed itself.
//! The same statement keeps each subscription's failure count for auto-disable (the lifecycle's
//! `track_delivery_health!`).

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

use super::{Job, JobState};
use crate::{
    events::{append_generated, EVENTS_CHANNEL},
    lifecycle::track_delivery_health,
    topic::is_reserved,
};

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

/// Outcomes: new job states (`$1`–`$5`, `$15`), released jobs (`$6`, `$16`) and attempt rows (`$7`–`$14`, `$17`);
/// `$18` is the spreaders' channel, notified when a dead delivery was published.
///
/// Each job is found by its key, and only while unfinished (`finished_at IS NULL`, which is what `state =
/// 'pending'` means: every write sets the two together). Written as the state, the check matched the partial index
/// of pending jobs, and the planner could take that index to find a job by id (its second column: the whole index
/// read per job) — cheap while few jobs wait, ruinous under a backlog.
pub const RECORD_SQL: &str = concat!(
    "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
    finished AS (
        UPDATE outbox o SET state = t.state, leased_until = NULL, last_status = t.status, last_error = t.error,
               due_at = CASE WHEN t.delay IS NULL THEN o.due_at ELSE now() + make_interval(secs => t.delay) END,
               finished_at = CASE WHEN t.state = 'pending' THEN NULL ELSE now() END
        FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::int[], $5::text[], $15::timestamptz[])
             AS t(id, state, delay, status, error, logged_at)
        WHERE o.id = t.id AND o.logged_at = t.logged_at AND o.finished_at IS NULL
        RETURNING o.id, o.kind, o.state, o.subscription_id, o.event_position, o.logged_at, o.attempts,
                  o.last_status, o.last_error
    ), ",
    track_delivery_health!(),
    ", dead_notices AS (",
    append_generated!(
        "SELECT 'tidings.delivery.dead', 'application/json',
                convert_to(jsonb_build_object(
                    'delivery_id', f.id, 'subscription_id', s.id, 'topic', s.topic, 'callback', s.callback,
                    'event_id', e.id, 'event_topic', e.topic, 'event_position', e.position,
                    'attempts', f.attempts, 'last_status', f.last_status, 'last_error', f.last_error)::text, 'UTF8'),
                ARRAY['delivery.dead'], s.id::text
         FROM finished f
         JOIN subscriptions s ON s.id = f.subscription_id
         JOIN events e ON e.position = f.event_position AND e.published_at = f.logged_at
         WHERE f.state = 'dead' AND f.kind = 'deliver' AND s.state = 'active' AND NOT ",
        is_reserved!("e.topic")
    ),
    "), woken AS (",
    wake_if_any!("dead_notices", "$18"),
    "), released AS (
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
    SELECT (SELECT count(*) FROM finished), (SELECT count(*) FROM released), (SELECT count(*) FROM recorded),
           (SELECT count(*) FROM dead_notices), (SELECT count(*) FROM woken),
           ARRAY(SELECT id FROM health WHERE died) AS died
    FROM relaxed"
);

/// Records a batch of outcomes in one transaction: job states and attempt rows. Returns the active subscriptions
/// whose count of deliveries dead in a row grew (candidates for
/// [`disable_if_failing`](crate::subscriptions::store::disable_if_failing)).
pub async fn record(pool: &PgPool, outcomes: &[Outcome]) -> Result<Vec<Uuid>, sqlx::Error> {
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
            Next::Delivered => (JobState::Delivered, None),
            Next::Retry(d) => (JobState::Pending, Some(d.as_secs_f64())),
            Next::Dead => (JobState::Dead, None),
            Next::Cancelled | Next::Released => (JobState::Cancelled, None),
        };
        states.push(state.as_str());
        delays.push(delay);
        statuses.push(o.attempt.as_ref().and_then(|a| a.status_code).map(i32::from));
        errors.push(o.error.clone());
    }
    let attempts: Vec<(&Outcome, &Attempt)> =
        outcomes.iter().filter_map(|o| o.attempt.as_ref().map(|a| (o, a))).collect();
    // One statement, so one short transaction, committed without waiting for the disk (see the module doc).
    let row = sqlx::query(RECORD_SQL)
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
        .bind(EVENTS_CHANNEL)
        .fetch_one(pool)
        .await?;
    Ok(row.get("died"))
}
