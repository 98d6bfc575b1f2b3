//! The `outbox`, `delivery_attempts` and `delivery_throttles` tables, owned here alone: the kinds and states of a job, its NOTIFY
//! channel and the one wake-up, enqueueing (verification and denial jobs, replays, and the SQL the spreader's
//! statement uses to write delivery jobs), claiming, recording outcomes, resetting ended jobs, and reading.
//!
//! Wake-ups: [`wake`] sends the NOTIFY after the caller's durable commit returned, never inside it, because a
//! NOTIFY holds a server-wide lock through its transaction's commit (see [`crate::wakeup::notify`]). The
//! exceptions are the spreader's statement and the record statement (which wakes the spreaders for dead-delivery
//! notices): both commit with `synchronous_commit = off` and so hold that lock only for microseconds
//! ([`wake_if_any!`]).

use sqlx::PgPool;

/// The channel that wakes the deliverer when new jobs are due.
pub const OUTBOX_CHANNEL: &str = "tidings_outbox";

/// The SQL that writes delivery jobs: `$select` yields (`'deliver'`, subscription id, event position, publish
/// time). Exactly once per (event, subscription): the unique key (with the event's publish time, so a job lives in
/// its event's time partition) turns a repeat into nothing. Returns one row per job created.
macro_rules! enqueue_deliveries {
    ($select:literal) => {
        concat!(
            "INSERT INTO outbox (kind, subscription_id, event_position, logged_at) ",
            $select,
            " ON CONFLICT (event_position, subscription_id, logged_at) DO NOTHING RETURNING 1"
        )
    };
}
pub(crate) use enqueue_deliveries;

/// A wake-up inside a statement: notifies `$channel` (a bind parameter holding the channel, [`OUTBOX_CHANNEL`] or the spreaders') when the CTE
/// `$jobs` returned any row. Only for statements committed with `synchronous_commit = off`.
macro_rules! wake_if_any {
    ($jobs:literal, $channel:literal) => {
        concat!("SELECT pg_notify(", $channel, ", '') FROM (SELECT 1 FROM ", $jobs, " LIMIT 1) j")
    };
}
pub(crate) use wake_if_any;

/// Puts a job back in the queue with a fresh retry schedule (its attempt history stays): the one reset.
macro_rules! reset_to_pending {
    () => {
        "UPDATE outbox SET state = 'pending', attempts = 0, due_at = now(), finished_at = NULL, leased_until = NULL"
    };
}

/// A job's status as operators see it: its state, with a pending job that has failed before shown as
/// `retrying`. Over `outbox o`.
macro_rules! delivery_status {
    () => {
        "CASE WHEN o.state = 'pending' AND o.last_error IS NOT NULL THEN 'retrying' ELSE o.state END"
    };
}
pub(crate) use delivery_status;

mod claim;
mod enqueue;
mod read;
mod record;
mod reset;

pub use claim::{claim, next_due, Claimed, Job, Rooms, CLAIM_SQL, NEXT_DUE_SQL, WALK_STEPS};
pub use enqueue::{enqueue_request, replay, Replayed, MAX_BULK};
pub use read::{attempts, attempts_of, get, list, recent, AttemptView, Delivery, DeliveryFilter, DELIVERY_COLUMNS};
pub use record::{record, Attempt, Next, Outcome, RECORD_SQL};
pub use reset::{redeliver, redeliver_dead, release_held};

/// Wakes the deliverers. Call it after the commit that wrote due jobs returned.
pub async fn wake(pool: &PgPool) {
    crate::wakeup::notify(pool, OUTBOX_CHANNEL).await;
}

/// The states of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Delivered,
    Dead,
    Cancelled,
}

/// The kinds of job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
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

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
