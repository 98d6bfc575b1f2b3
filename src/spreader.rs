//! The callbacks spreader: turns every event of the log into one outbox job per subscription that is active for
//! its topic (exact or pattern) when the event is spread.
//!
//! Never skipping an event. Positions come from a sequence when a row is inserted, but transactions commit in
//! any order, so "everything after the last position seen" can miss a row whose transaction commits late. The
//! spreader instead walks the log in (txid, position) order and reads only rows whose writing transaction is
//! older than the oldest transaction still running that could write to this database's log (the horizon, taken
//! from the same statement's snapshot as the read). Every such transaction below the horizon has finished, so no
//! row can ever appear behind the cursor: a late commit has a txid at or above the horizon and is read once the
//! horizon passes it. A transaction of the snapshot counts unless `pg_stat_activity` shows it running in another
//! database (a backend never changes database, so it can never write here); an unknown one (a prepared
//! transaction, a backend whose details are hidden) counts. So `CREATE DATABASE` or a long batch job in another
//! database of the same server does not stall spreading. The cost: a long-running writing transaction in this
//! database holds spreading back until it ends (visible as spreader lag). A work table filled in the publish
//! transaction would avoid that but doubles every write.
//!
//! Content filters: a subscription with a filter gets a job only for the events it passes. The event's document
//! (tags and JSON body, `tidings_event_document`) is built once per event of the batch, and only for an event
//! whose topic has a filtered subscription, so unfiltered spreading does no extra work but one index probe.
//!
//! Exactly once per (event, subscription): jobs are written by the outbox's `enqueue_deliveries!` SQL, which does
//! nothing on that unique key, and the cursor advances in the same transaction as the jobs it wrote; a crash anywhere repeats work but
//! neither duplicates nor loses it. Replicas take turns on the cursor row (`FOR UPDATE SKIP LOCKED`): one spreads,
//! the others find it locked and wait, so running several gives neither duplicates nor gaps.
//!
//! Bounded transactions: a batch writes at most `TIDINGS_SPREAD_BATCH_JOBS` jobs. An event whose fan-out is
//! larger (one event to 100,000 subscriptions) is spread over several batches: the cursor then also records the
//! last subscription (in id order) the event has a job for, and the next batch resumes after it. Memory and
//! transaction size stay bounded whatever the fan-out.
//!
//! Durability: the batch commits with `synchronous_commit = off`. Jobs and cursor are derived from the log, so a
//! lost tail after a crash is spread again, never lost.

use std::{sync::Arc, time::Duration};

use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    events::{NewEvent, EVENTS_CHANNEL},
    metrics::Metrics,
    outbox::{enqueue_deliveries, wake_if_any, OUTBOX_CHANNEL},
    topic::is_reserved,
    wakeup::Wakeup,
};

/// Which active subscriptions (id, filter path) match topic `$topic`, `$only` narrowing them further: the one
/// rule shared by spreading and dry runs (which then apply each one's content filter, if any, to the event). The
/// match-all pattern (prefix `''`) does not reach the hub's own topics ([`crate::topic::RESERVED_PREFIX`]); every
/// other pattern that matches a reserved topic is itself reserved.
macro_rules! matching_subscriptions {
    ($topic:literal, $only:literal) => {
        concat!(
            "SELECT s.id, s.filter_path FROM subscriptions s WHERE s.state = 'active' AND s.expires_at > now() AND s.pattern_prefix IS NULL AND s.topic = ",
            $topic,
            $only,
            " UNION ALL SELECT s.id, s.filter_path FROM subscriptions s WHERE s.state = 'active' AND s.expires_at > now() AND s.pattern_prefix IS NOT NULL",
            " AND s.pattern_prefix = ANY(tidings_pattern_prefixes(",
            $topic,
            ")) AND (s.pattern_prefix <> '' OR NOT ",
            is_reserved!($topic),
            ")",
            $only
        )
    };
}

/// One batch in one statement (one round trip, the shortest transaction): lock the cursor (or find another
/// spreader holding it), read the next events below the horizon, write at most `$3` of their jobs, move the
/// cursor, wake the deliverers, and tell whether committed events wait above the horizon (`held`). `set_config(.., true)` is `SET LOCAL synchronous_commit = off` for this
/// statement's transaction.
///
/// Bounded fan-out: pairs (event, subscription) are taken in (txid, position, subscription id) order up to `$3`.
/// When the limit is reached, the cursor stops inside the last pair's event, after its subscription; the next
/// batch resumes that event with the subscriptions after it. Otherwise the whole batch is done and the cursor
/// moves to its last event (events without any matching subscription included).
pub const SPREAD_SQL: &str = concat!(
    "WITH relaxed AS (SELECT set_config('synchronous_commit', 'off', true)),
     cursor AS (SELECT txid, position, subscription_id FROM spreader_cursor WHERE id FOR UPDATE SKIP LOCKED),
     horizon AS (
         SELECT coalesce(min(x.xid), pg_snapshot_xmax(pg_current_snapshot())) AS xmin
         FROM pg_snapshot_xip(pg_current_snapshot()) AS x(xid)
         WHERE NOT EXISTS (
             SELECT 1 FROM pg_stat_get_activity(NULL) a
             WHERE a.backend_xid = x.xid::xid
               AND a.datid <> (SELECT oid FROM pg_database WHERE datname = current_database()))
     ),
     batch AS (
         SELECT e.position, e.txid, e.topic, e.kind, e.published_at,
                CASE WHEN (e.txid, e.position) = (c.txid, c.position) THEN c.subscription_id END AS after_id
         FROM events e, cursor c
         -- The cursor as scalars, so each partition's (txid, position) index starts the scan there; compared
         -- with the joined row only, the scan read every event of a partition from its beginning.
         WHERE (e.txid, e.position) >= ((SELECT txid FROM cursor), (SELECT position FROM cursor))
           AND ((e.txid, e.position) > (c.txid, c.position) OR c.subscription_id IS NOT NULL)
           AND e.txid < (SELECT xmin FROM horizon)
         ORDER BY e.txid, e.position LIMIT $1
     ), held AS (
         SELECT 1 FROM events e
         WHERE e.txid >= (SELECT xmin FROM horizon)
           AND (e.txid, e.position) > ((SELECT txid FROM cursor), (SELECT position FROM cursor)) LIMIT 1
     ), docs AS MATERIALIZED (
         SELECT b.position, tidings_event_document(e.tags, e.content_type, e.body) AS doc
         FROM batch b JOIN events e ON e.position = b.position AND e.published_at = b.published_at
         WHERE b.kind = 'content' AND EXISTS (SELECT 1 FROM (",
    matching_subscriptions!("b.topic", " AND s.filter_path IS NOT NULL"),
    ") f)
     ), pairs AS MATERIALIZED (
         SELECT b.txid, b.position, b.published_at, m.id FROM batch b
         LEFT JOIN docs d ON d.position = b.position
         CROSS JOIN LATERAL (
             SELECT id FROM (",
    matching_subscriptions!("b.topic", ""),
    ") s WHERE (b.after_id IS NULL OR s.id > b.after_id) AND (s.filter_path IS NULL OR d.doc @@ s.filter_path)
             ORDER BY id LIMIT $3
         ) m
         WHERE b.kind = 'content'
         ORDER BY b.txid, b.position, m.id LIMIT $3
     ), jobs AS (",
    enqueue_deliveries!(
        "SELECT 'deliver', p.id, p.position, p.published_at FROM pairs p ORDER BY p.txid, p.position, p.id"
    ),
    "), partial AS (
         SELECT p.txid, p.position, p.id FROM pairs p WHERE (SELECT count(*) FROM pairs) >= $3
         ORDER BY p.txid DESC, p.position DESC, p.id DESC LIMIT 1
     ), last AS (
         SELECT txid, position, id FROM partial
         UNION ALL
         (SELECT txid, position, NULL::uuid FROM batch WHERE NOT EXISTS (SELECT 1 FROM partial)
          ORDER BY txid DESC, position DESC LIMIT 1)
     ), moved AS (
         UPDATE spreader_cursor c
         SET txid = last.txid, position = last.position, subscription_id = last.id, updated_at = now()
         FROM last WHERE c.id RETURNING c.position
     ), woken AS (",
    wake_if_any!("jobs", "$2"),
    ")
     SELECT (SELECT count(*) FROM cursor), (SELECT count(*) FROM batch), (SELECT count(*) FROM jobs),
            (SELECT count(*) FROM moved), (SELECT count(*) FROM woken), (SELECT count(*) FROM partial),
            (SELECT count(*) FROM held)
     FROM relaxed"
);

/// How soon to look again while committed events wait for the horizon (the transactions holding it are mostly
/// other publishes and claims of this database, a millisecond or two long).
const HELD_POLL: Duration = Duration::from_millis(1);

/// Jobs written per transaction unless configured (`TIDINGS_SPREAD_BATCH_JOBS`).
pub const DEFAULT_MAX_JOBS: i64 = 10_000;

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Another spreader holds the cursor.
    Busy,
    Spread {
        events: i64,
        jobs: i64,
        /// More events are ready at once: the batch was full, or an event's fan-out continues.
        full: bool,
        /// Committed events wait beyond the cursor for an older transaction to end (the horizon to pass).
        held: bool,
    },
}

pub struct Spreader {
    pub pool: PgPool,
    batch_size: i64,
    max_jobs: i64,
    metrics: Arc<Metrics>,
}

impl Spreader {
    pub fn new(pool: PgPool, batch_size: i64) -> Self {
        Self { pool, batch_size, max_jobs: DEFAULT_MAX_JOBS, metrics: Metrics::new() }
    }

    /// At most this many jobs per transaction (an event with a larger fan-out is spread over several).
    pub fn with_max_jobs(mut self, max_jobs: i64) -> Self {
        self.max_jobs = max_jobs.max(1);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// One batch: reads the next events below the horizon, writes their jobs, moves the cursor — one transaction.
    #[tracing::instrument(skip(self))]
    pub async fn try_spread_batch(&self) -> Result<Step, sqlx::Error> {
        let (locked, events, jobs, _, _, partial, held): (i64, i64, i64, i64, i64, i64, i64) =
            sqlx::query_as(SPREAD_SQL)
                .bind(self.batch_size)
                .bind(OUTBOX_CHANNEL)
                .bind(self.max_jobs)
                .fetch_one(&self.pool)
                .await?;
        if locked == 0 {
            return Ok(Step::Busy);
        }
        if events > 0 {
            tracing::debug!(events, jobs, "spread a batch");
        }
        self.metrics.spread_events.inc_by(events as u64);
        self.metrics.spread_jobs.inc_by(jobs as u64);
        Ok(Step::Spread { events, jobs, full: events == self.batch_size || partial > 0, held: held > 0 })
    }

    /// Spreads until cancelled: woken by `NOTIFY tidings_events` from publishes (every transaction appending
    /// content notifies on commit), polling as a fallback (every millisecond while committed events wait behind
    /// an older transaction, which notifies nobody when it ends), and expiring subscriptions whose lease ran out.
    pub async fn run_until_stopped(self, token: CancellationToken) {
        let mut wakeup = Wakeup::new(self.pool.clone(), EVENTS_CHANNEL);
        let mut last_expiry = tokio::time::Instant::now() - Duration::from_secs(60);
        tracing::info!("callbacks spreader started");
        while !token.is_cancelled() {
            if last_expiry.elapsed() > Duration::from_secs(1) {
                last_expiry = tokio::time::Instant::now();
                match crate::subscriptions::store::expire_due(&self.pool).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(expired = n, "subscriptions expired"),
                    Err(e) => tracing::error!(error = %e, "expiring subscriptions failed"),
                }
            }
            let nap = match self.try_spread_batch().await {
                Ok(Step::Spread { full: true, .. }) => continue,
                Ok(Step::Spread { held: true, .. }) => HELD_POLL,
                Ok(Step::Spread { .. }) => Duration::from_secs(1),
                Ok(Step::Busy) => Duration::from_millis(500),
                Err(e) => {
                    tracing::error!(error = %e, "spreading failed");
                    Duration::from_secs(2)
                }
            };
            tokio::select! {
                _ = wakeup.wait(nap) => {}
                _ = token.cancelled() => {}
            }
        }
        tracing::info!("callbacks spreader stopped");
    }
}

/// Spreader progress: the log's head, the cursor, and how far behind it is.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Lag {
    pub head_position: i64,
    pub cursor_position: i64,
    pub behind_events: i64,
    pub oldest_unspread_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn lag(pool: &PgPool) -> Result<Lag, sqlx::Error> {
    sqlx::query_as(
        "WITH c AS (SELECT txid, position FROM spreader_cursor WHERE id)
         SELECT coalesce((SELECT max(position) FROM events), 0) AS head_position, (SELECT position FROM c) AS cursor_position,
                (SELECT count(*) FROM events e WHERE (e.txid, e.position) > ((SELECT txid FROM c), (SELECT position FROM c)))
                    AS behind_events,
                (SELECT min(published_at) FROM events e WHERE (e.txid, e.position) > ((SELECT txid FROM c), (SELECT position FROM c)))
                    AS oldest_unspread_at",
    )
    .fetch_one(pool)
    .await
}

/// Dry run: the active subscriptions an event on `topic` would be spread to now; with a sample `event` (its tags,
/// content type and body), only those whose content filter it passes, as spreading would decide. Without one,
/// filters are not evaluated. Writes nothing.
pub async fn dry_run(pool: &PgPool, topic: &str, event: Option<&NewEvent>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(concat!(
        "SELECT m.id FROM (",
        matching_subscriptions!("$1::text", ""),
        ") m WHERE NOT $2 OR m.filter_path IS NULL
               OR tidings_event_document($3::text[], $4::text, $5::bytea) @@ m.filter_path
         ORDER BY m.id"
    ))
    .bind(topic)
    .bind(event.is_some())
    .bind(event.map(|e| e.tags.clone()))
    .bind(event.map(|e| e.content_type.clone()))
    .bind(event.map(|e| e.body.clone()))
    .fetch_all(pool)
    .await
}
