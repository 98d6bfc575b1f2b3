//! Claiming due jobs: one statement picks, locks and leases them, within each callback host's room.
//!
//! Claim: one statement finds due pending jobs subscription by subscription, picks for each callback host at most
//! the room the caller gives it (`per_host` for a host it has nothing of, none for a host it reports saturated),
//! and locks only the picked ones with `FOR UPDATE SKIP LOCKED` (rechecking that each is still unfinished and
//! due, so a job another deliverer claimed meanwhile drops out): a lock is written for each job taken, never for a
//! candidate left behind. It pushes their `due_at` forward by the lease. The claim commits before any network
//! call; a worker that dies simply lets the lease run out and the job comes due again. It commits with
//! `synchronous_commit = off`: a lost claim means the job is attempted again, never lost.
//!
//! Isolation: a saturated host's backlog is the oldest set of due jobs, so a claim that read due jobs in due order
//! would read past all of it to find anyone else's. Instead the claim walks the subscriptions that have pending
//! jobs through `outbox (subscription_id, due_at, id)`, the one index of pending jobs: each step is one descent to
//! the next `subscription_id`, whose first entry is that subscription's earliest pending job. The walk goes on
//! where the caller's last claim stopped and wraps round once, so every subscription gets its turn; it reads the
//! jobs only of subscriptions with a due job whose host has room, so a saturated host's subscription costs one
//! step, whatever its backlog. The claim reports whether its walk went round and the earliest pending job it saw:
//! the deliverer waits for that job only once its walks have visited every subscription with pending jobs.
//!
//! Rate limits: of a rate-limited subscription's locked deliveries, the statement leases only as many as its
//! limit lets start now (a generic cell rate algorithm over `delivery_throttles`, whose row it updates under the
//! row's lock, so claims on any number of deliverers take turns and the limit holds across all of them); the
//! others get the next slots of the limit, in order, and are pushed back to them unattempted and `reserved`: each
//! starts when its slot comes without asking the limit again. So slots are handed out once, a claim that comes a
//! little late costs no slot, and a limited subscription's backlog is not due until its slots come. Verifications
//! and denial notices are never limited.

use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, PgPool, Row};
use std::time::Duration;
use uuid::Uuid;

use super::JobKind;
use crate::lifecycle::State;

/// A claimed job with everything needed to carry it out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: i64,
    /// The job's time partition (its event's publish time, or when a verification was requested).
    pub logged_at: DateTime<Utc>,
    pub kind: JobKind,
    pub subscription_id: Uuid,
    /// Attempts including this one.
    pub attempts: i32,
    pub request_id: Option<Uuid>,
    pub callback: String,
    pub callback_host: String,
    pub subscription_state: State,
    pub expires_at: Option<DateTime<Utc>>,
    pub secret: Option<String>,
    /// The secret `secret` replaced, while its grace period lasts: deliveries are signed under both.
    pub previous_secret: Option<String>,
    /// The subscription's custom headers, as the subscriptions store validated them.
    pub headers: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    pub event_position: Option<i64>,
    pub event_id: Option<Uuid>,
    pub event_topic: Option<String>,
    pub content_type: Option<String>,
    pub body: Option<Vec<u8>>,
}

/// The claim: `$1` jobs at most, `$2` seconds of lease, none for the hosts in `$4`, `$6[i]` for the host `$5[i]`
/// and `$3` for any other callback host. The candidates are the first due jobs of the subscriptions a walk visits
/// (`$8` steps at most, each the next subscription with pending jobs after the last, from the one after `$7`,
/// wrapping round once), skipping saturated hosts' subscriptions and those with nothing due without reading their
/// jobs. A rate-limited subscription's deliveries beyond what its limit grants now are pushed back to when it
/// will, unattempted (`attempts` is unchanged), and returned with `throttled` set. Every row carries how the walk
/// ended: `walked_to`, the last subscription it visited (the next claim's `$7`); `wrapped`, whether it passed the
/// last subscription and went on from the first; `went_round`, whether it visited every subscription with pending
/// jobs; `earliest_due`, the earliest pending job of those it visited, as it was before this claim. With nothing
/// claimed, one row carries them alone.
/// One statement (one round trip, the shortest possible transaction); `set_config(.., true)` is
/// `SET LOCAL synchronous_commit = off` for this statement's implicit transaction.
pub const CLAIM_SQL: &str = "WITH RECURSIVE relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
    walk (subscription_id, first_due, step, wrapped) AS (
        SELECT $7::uuid, NULL::timestamptz, 0, false
        UNION ALL
        SELECT n.subscription_id, n.due_at, w.step + 1, w.wrapped OR n.wrapped
        -- One descent gives the next subscription with pending jobs and its earliest one; past the last
        -- subscription, the first (once). The second branch runs only when the first finds nothing.
        FROM walk w CROSS JOIN LATERAL ((SELECT o.subscription_id, o.due_at, false AS wrapped FROM outbox o
                 WHERE o.state = 'pending' AND o.subscription_id > w.subscription_id
                 ORDER BY o.subscription_id, o.due_at, o.id LIMIT 1)
             UNION ALL
             (SELECT o.subscription_id, o.due_at, true FROM outbox o WHERE o.state = 'pending' AND NOT w.wrapped
                 ORDER BY o.subscription_id, o.due_at, o.id LIMIT 1)
             LIMIT 1) n
        WHERE w.step < $8 AND NOT (w.wrapped AND w.subscription_id >= $7)
    ), walked AS MATERIALIZED (
        SELECT w.subscription_id, w.first_due, w.step FROM walk w
        WHERE w.step > 0 AND NOT (w.wrapped AND w.subscription_id > $7)
    ), ended AS (
        -- A walk that stopped before its last step ran out of subscriptions: it went round.
        SELECT w.wrapped, w.step < $8 AS went_round FROM walk w ORDER BY w.step DESC LIMIT 1
    ), rooms AS (
        SELECT host, room FROM unnest($5::text[], $6::bigint[]) AS h(host, room)
    ), visited AS (
        SELECT s.id, s.callback_host, s.rate_per_second, s.rate_burst, coalesce(r.room, $3) AS room
        FROM walked w JOIN subscriptions s ON s.id = w.subscription_id LEFT JOIN rooms r ON r.host = s.callback_host
        WHERE w.first_due <= now() AND s.callback_host <> ALL($4::text[])
    ), candidates AS (
        SELECT o.id, o.logged_at, o.due_at, o.kind, o.subscription_id, v.callback_host, v.rate_per_second,
               v.rate_burst, v.room
        FROM visited v CROSS JOIN LATERAL (SELECT o.id, o.logged_at, o.due_at, o.kind, o.subscription_id
            FROM outbox o WHERE o.subscription_id = v.id AND o.state = 'pending' AND o.due_at <= now()
            ORDER BY o.due_at, o.id LIMIT least(v.room, $1)) o
    ), picked AS (
        SELECT r.id, r.logged_at, r.kind, r.subscription_id, r.rate_per_second, r.rate_burst
        FROM (SELECT *, row_number() OVER (PARTITION BY callback_host ORDER BY due_at, id) AS n FROM candidates) r
        WHERE r.n <= r.room ORDER BY r.due_at, r.id LIMIT $1
    ), locked AS (
        SELECT o.id, o.logged_at, p.kind, p.subscription_id, p.rate_per_second, p.rate_burst,
               o.reserved AND o.due_at >= now() - make_interval(secs => 1 / p.rate_per_second) AS in_slot
        FROM outbox o JOIN picked p ON o.id = p.id AND o.logged_at = p.logged_at
        WHERE o.finished_at IS NULL AND o.due_at <= now()
        FOR UPDATE OF o SKIP LOCKED
    ), limited AS (
        SELECT id, logged_at, subscription_id, row_number() OVER (PARTITION BY subscription_id ORDER BY id) AS n
        FROM locked WHERE rate_per_second IS NOT NULL AND kind = 'deliver' AND NOT in_slot
    ), granted AS (
        INSERT INTO delivery_throttles AS t (subscription_id, tat, rate_per_second, rate_burst, wanted, granted)
        SELECT w.subscription_id, now() + make_interval(secs => w.n / w.rate), w.rate, w.burst, w.n,
               least(w.n, w.burst)
        FROM (SELECT l.subscription_id, count(*) AS n, min(l.rate_per_second) AS rate, min(l.rate_burst) AS burst
              FROM locked l WHERE l.rate_per_second IS NOT NULL AND l.kind = 'deliver' AND NOT l.in_slot
              GROUP BY l.subscription_id) w
        ORDER BY w.subscription_id
        ON CONFLICT (subscription_id) DO UPDATE SET
            granted = tidings_throttle_grant(t.tat, now(), excluded.rate_per_second, excluded.rate_burst, excluded.wanted),
            tat = greatest(t.tat, now()) + make_interval(secs => excluded.wanted / excluded.rate_per_second),
            wanted = excluded.wanted, rate_per_second = excluded.rate_per_second, rate_burst = excluded.rate_burst
        RETURNING subscription_id, tat, wanted, granted, rate_per_second, rate_burst
    ), over AS (
        SELECT l.id, l.logged_at,
               g.tat + make_interval(secs => (l.n - g.wanted - g.rate_burst) / g.rate_per_second) AS due_at
        FROM limited l JOIN granted g ON g.subscription_id = l.subscription_id WHERE l.n > g.granted
    ), throttled AS (
        UPDATE outbox o SET due_at = over.due_at, reserved = true
        FROM over WHERE o.id = over.id AND o.logged_at = over.logged_at
        RETURNING o.id, o.logged_at, o.kind, o.subscription_id, o.attempts, o.request_id, o.event_position
    ), claimed AS (
        UPDATE outbox o SET attempts = o.attempts + 1, reserved = false,
               due_at = now() + make_interval(secs => $2), leased_until = now() + make_interval(secs => $2)
        FROM locked WHERE o.id = locked.id AND o.logged_at = locked.logged_at
             AND NOT EXISTS (SELECT 1 FROM over WHERE over.id = locked.id AND over.logged_at = locked.logged_at)
        RETURNING o.id, o.logged_at, o.kind, o.subscription_id, o.attempts, o.request_id, o.event_position
    ), taken AS (
        SELECT *, false AS throttled FROM claimed UNION ALL SELECT *, true FROM throttled
    ), jobs AS (
        SELECT c.id, c.logged_at, c.kind, c.subscription_id, c.attempts, c.request_id, s.callback, s.callback_host,
               s.state AS subscription_state, s.expires_at, s.secret,
               CASE WHEN s.previous_secret_until > now() THEN s.previous_secret END AS previous_secret, s.headers,
               c.event_position,
               e.id AS event_id, e.topic AS event_topic, e.content_type, e.body, c.throttled
        FROM taken c JOIN subscriptions s ON s.id = c.subscription_id
             LEFT JOIN events e ON NOT c.throttled AND e.position = c.event_position AND e.published_at = c.logged_at
    )
    SELECT (SELECT w.subscription_id FROM walked w ORDER BY w.step DESC LIMIT 1) AS walked_to, e.wrapped,
           e.went_round, (SELECT min(w.first_due) FROM walked w) AS earliest_due, j.*
    FROM relaxed CROSS JOIN ended e LEFT JOIN jobs j ON true
    ORDER BY j.id";

/// How many subscriptions one claim's walk visits at most.
pub const WALK_STEPS: i64 = 64;

/// How many jobs one claim may take for each callback host.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    /// For a host not named below.
    pub per_host: i64,
    /// Hosts that may take nothing: the walk skips their subscriptions without reading their jobs.
    pub saturated: Vec<String>,
    /// Hosts with a room of their own, and that room.
    pub hosts: Vec<String>,
    pub rooms: Vec<i64>,
}

/// What one claim took (the jobs to carry out, how many deliveries a rate limit held back) and how its walk over
/// subscriptions went: from where to where (the next claim starts at `walked_to`; nil is before the first).
#[derive(Debug, Default)]
pub struct Claimed {
    pub jobs: Vec<Job>,
    pub throttled: usize,
    pub from: Uuid,
    pub walked_to: Uuid,
    /// The walk passed the last subscription and went on from the first.
    pub wrapped: bool,
    /// The walk visited every subscription with pending jobs.
    pub went_round: bool,
    /// The earliest pending job of the subscriptions the walk visited, as it was before this claim took any: a
    /// claim that took jobs, or left due ones behind, reports a time already past.
    pub earliest_due: Option<DateTime<Utc>>,
}

/// One row of the claim: a job (or none, when the claim took nothing) and how the walk ended.
struct Taken {
    walked_to: Option<Uuid>,
    wrapped: bool,
    went_round: bool,
    earliest_due: Option<DateTime<Utc>>,
    job: Option<(Job, bool)>,
}

impl<'r> sqlx::FromRow<'r, PgRow> for Taken {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let job = match row.try_get::<Option<i64>, _>("id")? {
            Some(_) => Some((Job::from_row(row)?, row.try_get("throttled")?)),
            None => None,
        };
        Ok(Self {
            walked_to: row.try_get("walked_to")?,
            wrapped: row.try_get("wrapped")?,
            went_round: row.try_get("went_round")?,
            earliest_due: row.try_get("earliest_due")?,
            job,
        })
    }
}

/// Claims up to `limit` due jobs, as many per callback host as `rooms` allows and per subscription as its rate
/// limit lets start now, walking the subscriptions from the one after `from` (the last claim's `walked_to`).
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: Duration,
    rooms: &Rooms,
    from: Uuid,
) -> Result<Claimed, sqlx::Error> {
    let taken: Vec<Taken> = sqlx::query_as(CLAIM_SQL)
        .bind(limit)
        .bind(lease.as_secs_f64())
        .bind(rooms.per_host)
        .bind(&rooms.saturated)
        .bind(&rooms.hosts)
        .bind(&rooms.rooms)
        .bind(from)
        .bind(WALK_STEPS)
        .fetch_all(pool)
        .await?;
    let mut claimed = Claimed { from, ..Default::default() };
    for t in taken {
        claimed.walked_to = t.walked_to.unwrap_or_default();
        (claimed.wrapped, claimed.went_round, claimed.earliest_due) = (t.wrapped, t.went_round, t.earliest_due);
        match t.job {
            Some((_, true)) => claimed.throttled += 1,
            Some((job, false)) => claimed.jobs.push(job),
            None => {}
        }
    }
    Ok(claimed)
}

/// When the next pending job comes due (NULL when there is none): the earliest of each subscription's earliest,
/// one descent per subscription with pending jobs (there is no index of pending jobs in due order; see the claim).
pub const NEXT_DUE_SQL: &str = "WITH RECURSIVE firsts (subscription_id, due_at) AS (
        (SELECT subscription_id, due_at FROM outbox WHERE state = 'pending' ORDER BY subscription_id, due_at, id LIMIT 1)
        UNION ALL
        SELECT n.subscription_id, n.due_at FROM firsts f CROSS JOIN LATERAL (SELECT o.subscription_id, o.due_at
            FROM outbox o WHERE o.state = 'pending' AND o.subscription_id > f.subscription_id
            ORDER BY o.subscription_id, o.due_at, o.id LIMIT 1) n
    )
    SELECT min(due_at) FROM firsts";

/// When the next pending job comes due (None when there is none); see [`NEXT_DUE_SQL`].
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(NEXT_DUE_SQL).fetch_one(pool).await
}
