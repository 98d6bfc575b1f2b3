//! Claiming due jobs: one statement picks, locks and leases them, within each callback host's room.
//!
//! Claim: one statement reads due pending jobs (four times the limit, without locking them), picks for each
//! callback host at most the room the caller gives it (`per_host` for a host it has nothing of, none for a
//! host it reports saturated), and locks only the picked ones with `FOR UPDATE SKIP LOCKED` (rechecking that each
//! is still unfinished and due, so a job another deliverer claimed meanwhile drops out): a lock is written for
//! each job taken, never for a candidate left behind. It pushes their `due_at` forward by the lease. The claim
//! commits before any network call; a worker that dies simply lets the lease run out and the job comes due again.
//! It commits with `synchronous_commit = off`: a lost claim means the job is attempted again, never lost.
//!
//! Pacing: a saturated host's due jobs would sit at the head of the due-job index and every claim would read past
//! them. The same statement pushes the due jobs of a paced host back to the times its pace lets it reach them,
//! so the head of the index holds only jobs some host can take. A push is not an attempt; it is bounded by the
//! caller's horizon, so a host that recovers has its whole backlog due again within that horizon.
//!
//! Rate limits: of a rate-limited subscription's locked deliveries, the statement leases only as many as its
//! limit lets start now (a generic cell rate algorithm over `delivery_throttles`, whose row it updates under the
//! row's lock, so claims on any number of deliverers take turns and the limit holds across all of them); the
//! others get the next slots of the limit, in order, and are pushed back to them unattempted and `reserved`: each
//! starts when its slot comes without asking the limit again. So slots are handed out once, a claim that comes a
//! little late costs no slot, and the head of the due-job index never fills with a limited subscription's
//! backlog. Verifications and denial notices are never limited.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
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
/// and `$3` for any other callback host. Among the first due jobs (as many as the candidates), those of each paced
/// host `$7[i]` (a saturated host whose claimed jobs alone keep it busy for a while) are pushed back to its pace:
/// its `n`-th to `$8[i] + (n - 1) * $9[i]` seconds from now, at most `$10` seconds; pushing back is not an attempt
/// (`attempts` is unchanged). A rate-limited subscription's deliveries beyond what its limit grants now are pushed
/// back the same way, to when it will, and returned with `throttled` set.
/// One statement (one round trip, the shortest possible transaction); `set_config(.., true)` is
/// `SET LOCAL synchronous_commit = off` for this statement's implicit transaction.
pub const CLAIM_SQL: &str = "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
    candidates AS (
        SELECT o.id, o.logged_at, o.kind, o.subscription_id, s.callback_host, s.rate_per_second, s.rate_burst
        FROM outbox o JOIN subscriptions s ON s.id = o.subscription_id
        WHERE o.state = 'pending' AND o.due_at <= now() AND s.callback_host <> ALL($4::text[])
        ORDER BY o.due_at, o.id LIMIT $1 * 4
    ), picked AS (
        SELECT r.id, r.logged_at, r.kind, r.subscription_id, r.rate_per_second, r.rate_burst
        FROM (SELECT *, row_number() OVER (PARTITION BY callback_host ORDER BY id) AS n FROM candidates) r
             LEFT JOIN unnest($5::text[], $6::bigint[]) AS h(host, room) ON h.host = r.callback_host
        WHERE r.n <= coalesce(h.room, $3) ORDER BY r.id LIMIT $1
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
        UPDATE outbox o SET attempts = o.attempts + 1, reserved = false,
               due_at = now() + make_interval(secs => $2), leased_until = now() + make_interval(secs => $2)
        FROM locked WHERE o.id = locked.id AND o.logged_at = locked.logged_at
             AND NOT EXISTS (SELECT 1 FROM over WHERE over.id = locked.id AND over.logged_at = locked.logged_at)
        RETURNING o.id, o.logged_at, o.kind, o.subscription_id, o.attempts, o.request_id, o.event_position
    ), taken AS (
        SELECT *, false AS throttled FROM claimed UNION ALL SELECT *, true FROM throttled
    )
    SELECT c.id, c.logged_at, c.kind, c.subscription_id, c.attempts, c.request_id, s.callback, s.callback_host,
           s.state AS subscription_state, s.expires_at, s.secret,
           CASE WHEN s.previous_secret_until > now() THEN s.previous_secret END AS previous_secret, s.headers,
           c.event_position,
           e.id AS event_id, e.topic AS event_topic, e.content_type, e.body, c.throttled
    FROM taken c JOIN subscriptions s ON s.id = c.subscription_id
         LEFT JOIN events e ON NOT c.throttled AND e.position = c.event_position AND e.published_at = c.logged_at
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

/// What one claim took: the jobs to carry out, and how many deliveries a rate limit held back.
#[derive(Debug, Default)]
pub struct Claimed {
    pub jobs: Vec<Job>,
    pub throttled: usize,
}

#[derive(sqlx::FromRow)]
struct Taken {
    #[sqlx(flatten)]
    job: Job,
    throttled: bool,
}

/// Claims up to `limit` due jobs, as many per callback host as `rooms` allows and per subscription as its rate
/// limit lets start now.
pub async fn claim(pool: &PgPool, limit: i64, lease: Duration, rooms: &Rooms) -> Result<Claimed, sqlx::Error> {
    let taken: Vec<Taken> = sqlx::query_as(CLAIM_SQL)
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
        .await?;
    let mut claimed = Claimed::default();
    for t in taken {
        match t.throttled {
            true => claimed.throttled += 1,
            false => claimed.jobs.push(t.job),
        }
    }
    Ok(claimed)
}

/// When the next pending job comes due (None when there is none).
pub async fn next_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(due_at) FROM outbox WHERE state = 'pending'").fetch_one(pool).await
}
