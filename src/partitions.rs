//! Time partitions of the event log, the outbox and the attempt history, and retention.
//!
//! Owns `log_partitions` and the partitions themselves (the SQL functions `tidings_ensure_partitions`,
//! `tidings_partition_blockers`, `tidings_period_tables`, `tidings_reattach_period` and
//! `tidings_drop_detached_period` of the migrations that partition the tables and detach expired periods). Every
//! process keeps partitions created ahead of need — at start, before it serves anything, and then a few times per
//! period — so an insert always finds its partition; the work is serialised in the database, so any number of
//! processes may do it.
//!
//! Retention is the one way history leaves the log: a period whose end lies longer ago than `TIDINGS_RETENTION`
//! is dropped whole (its events, jobs and attempts together), and never while one of its jobs is still pending
//! (a delivery inside its retry window, a verification not yet settled) or one of its events is not yet spread.
//! Such a period is kept, and dropped on a later pass once those jobs are delivered or dead. Each drop is logged
//! with the period and the bytes it freed. A period is detached concurrently before it is dropped, so retention
//! never holds a lock that publishing or delivery wait for.
//!
//! Queue hygiene: every delivery leaves dead index entries behind in the outbox (the claim and the outcome each
//! write a new row version), and a claim reads through them until a VACUUM removes them — in every partition,
//! quiet ones included. Where autovacuum is off or lags, claims slowed down minute by minute. So a process that
//! delivers also vacuums the outbox itself every [`VACUUM_EVERY`]: the partitions with dead rows only (quiet ones
//! are skipped), bounded for the current one by the length of a period.
//!
//! Failure policy: a pass that fails (database down, a detach outwaited by a long transaction) is logged and tried
//! again at the next pass, which goes on from the state the database shows: a detach left unfinished is finalized,
//! and a period left detached is dropped when expired and attached again when not.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{PartitionConfig, Retention};

/// How often a delivering process vacuums the outbox.
pub const VACUUM_EVERY: Duration = Duration::from_secs(10);

/// A period retention has dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expired {
    /// Dropped, freeing this many bytes.
    Dropped { suffix: String, bytes: i64 },
    /// Kept because jobs of it are still pending or events of it are not yet spread.
    Kept { suffix: String, pending: i64, unspread: i64 },
    /// Transactions using its tables outlasted the lock timeout; the next pass goes on from where this one stopped.
    Busy { suffix: String },
}

/// Partitions must reach this far ahead of `now`.
pub fn horizon(config: &PartitionConfig, now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(config.partition_interval * 2).unwrap_or(chrono::Duration::days(2))
}

/// Creates the partitions missing between `from` and the horizon ahead of `now`; returns how many.
#[tracing::instrument(skip(pool, config))]
pub async fn ensure(
    pool: &PgPool,
    config: &PartitionConfig,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<i32, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '5s'").execute(&mut *tx).await?;
    let created: i32 = sqlx::query_scalar("SELECT tidings_ensure_partitions($1, $2, make_interval(secs => $3))")
        .bind(from)
        .bind(horizon(config, now))
        .bind(config.partition_interval.as_secs_f64())
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    if created > 0 {
        tracing::info!(created, "created time partitions ahead of need");
    }
    Ok(created)
}

/// Drops every live period that ended before `now - retention` and nothing still needs, and puts back a period a
/// pass left detached that is not expired (after a change of `TIDINGS_RETENTION`). One process at a time does it
/// (a session advisory lock on a connection of its own); the others find the lock taken and skip the pass.
#[tracing::instrument(skip(pool, config))]
pub async fn expire(pool: &PgPool, config: &PartitionConfig, now: DateTime<Utc>) -> Result<Vec<Expired>, sqlx::Error> {
    let Retention(Some(keep)) = config.retention else { return Ok(Vec::new()) };
    let before = now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let mut conn = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended('tidings_retention', 0))")
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(Vec::new());
    }
    let outcomes = expire_locked(&mut conn, before).await;
    let reset = sqlx::query("RESET lock_timeout").execute(&mut *conn).await;
    let unlocked =
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended('tidings_retention', 0))").execute(&mut *conn).await;
    if reset.is_err() || unlocked.is_err() {
        // Never hand a connection that may still hold the lock back to the pool.
        let _ = conn.detach();
    }
    outcomes
}

const DETACH_LOCK_TIMEOUT: &str = "SET lock_timeout = '30s'";

async fn expire_locked(conn: &mut sqlx::PgConnection, before: DateTime<Utc>) -> Result<Vec<Expired>, sqlx::Error> {
    // How long a detach may wait for the transactions that still use a table (it blocks none of them).
    sqlx::query(DETACH_LOCK_TIMEOUT).execute(&mut *conn).await?;
    finalize_detaches(conn).await?;
    let periods: Vec<(String, bool)> = sqlx::query_as(
        "SELECT suffix, ends_at <= $1 FROM log_partitions p
         WHERE dropped_at IS NULL
           AND (ends_at <= $1 OR EXISTS (SELECT 1 FROM tidings_period_tables(p.suffix) WHERE state <> 'attached'))
         ORDER BY starts_at",
    )
    .bind(before)
    .fetch_all(&mut *conn)
    .await?;
    let mut outcomes = Vec::new();
    for (suffix, expired) in periods {
        if !expired {
            let attached = reattach(conn, &suffix).await?;
            tracing::warn!(partition = %suffix, attached, "put back a period that is not expired but was left detached");
            continue;
        }
        match retire(conn, &suffix).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(sqlx::Error::Database(e)) if is_lock_conflict(e.code().as_deref()) => {
                tracing::warn!(partition = %suffix, error = %e, "retention waited too long for the transactions using a period; going on at the next pass");
                outcomes.push(Expired::Busy { suffix });
                // A detach it left pending admits no other on the same table until the next pass finalizes it.
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(outcomes)
}

/// One table of a period and how it stands (see `tidings_period_tables`); names are quoted.
#[derive(sqlx::FromRow)]
struct PeriodTable {
    parent: String,
    child: String,
    state: TableState,
}

/// How a table of a period stands, as `tidings_period_tables` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
enum TableState {
    Attached,
    /// A concurrent detach was interrupted; `DETACH PARTITION ... FINALIZE` completes it.
    Detaching,
    Detached,
    Missing,
}

async fn period_tables(conn: &mut sqlx::PgConnection, suffix: &str) -> Result<Vec<PeriodTable>, sqlx::Error> {
    sqlx::query_as("SELECT parent, child, state FROM tidings_period_tables($1)").bind(suffix).fetch_all(conn).await
}

async fn blockers(conn: &mut sqlx::PgConnection, suffix: &str) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as("SELECT pending, unspread FROM tidings_partition_blockers($1)").bind(suffix).fetch_one(conn).await
}

/// Runs a statement built from quoted catalog names, outside any transaction, without keeping it prepared.
async fn ddl<'c>(db: impl sqlx::PgExecutor<'c>, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).persistent(false).execute(db).await.map(drop)
}

/// Completes the concurrent detaches a pass began and did not finish (cancelled, timed out, or its process gone).
/// A table with a detach pending admits no other concurrent detach, so this comes first in every pass.
async fn finalize_detaches(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let pending: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.parent, t.child FROM log_partitions p, tidings_period_tables(p.suffix) t
         WHERE p.dropped_at IS NULL AND t.state = 'detaching'",
    )
    .fetch_all(&mut *conn)
    .await?;
    for (parent, child) in pending {
        tracing::info!(table = %child, "finishing a detach a retention pass left unfinished");
        ddl(&mut *conn, &format!("ALTER TABLE {parent} DETACH PARTITION {child} FINALIZE")).await?;
    }
    Ok(())
}

/// Attaches a period's detached tables again; returns how many.
async fn reattach(conn: &mut sqlx::PgConnection, suffix: &str) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT tidings_reattach_period($1)").bind(suffix).fetch_one(conn).await
}

/// Drops one expired period, unless a job of it is pending or an event of it unspread.
///
/// The three partitions are detached concurrently (outbox, attempts, events), which waits for the transactions
/// using each parent but blocks none, and then dropped as tables of their own. Detaching outbox first closes it to
/// the queue, so a job made pending between the first check and the detach (a redelivery) is seen by the second
/// check, on the detached tables, which then go back; an event committed late is seen the same way.
async fn retire(conn: &mut sqlx::PgConnection, suffix: &str) -> Result<Expired, sqlx::Error> {
    let tables = period_tables(conn, suffix).await?;
    if tables.iter().all(|t| t.state == TableState::Attached) {
        let (pending, unspread) = blockers(conn, suffix).await?;
        if pending > 0 || unspread > 0 {
            tracing::info!(partition = %suffix, pending, unspread, "retention keeps an expired period until its jobs finish");
            return Ok(Expired::Kept { suffix: suffix.to_owned(), pending, unspread });
        }
    }
    for table in tables.iter().filter(|t| t.state == TableState::Attached) {
        ddl(&mut *conn, &format!("ALTER TABLE {} DETACH PARTITION {} CONCURRENTLY", table.parent, table.child)).await?;
    }
    let (pending, unspread) = blockers(conn, suffix).await?;
    if pending > 0 || unspread > 0 {
        reattach(conn, suffix).await?;
        tracing::warn!(partition = %suffix, pending, unspread, "a job or event of an expired period came in while it was detached; put it back");
        return Ok(Expired::Kept { suffix: suffix.to_owned(), pending, unspread });
    }
    let bytes: i64 = sqlx::query_scalar("SELECT tidings_drop_detached_period($1)").bind(suffix).fetch_one(conn).await?;
    tracing::info!(partition = %suffix, bytes, "retention dropped an expired period of the log");
    Ok(Expired::Dropped { suffix: suffix.to_owned(), bytes })
}

/// lock_not_available (lock_timeout) or deadlock_detected: someone else held a table; try again at the next pass.
fn is_lock_conflict(code: Option<&str>) -> bool {
    matches!(code, Some("55P03" | "40P01"))
}

/// One maintenance pass: partitions ahead of `now`, then retention.
pub async fn maintain(
    pool: &PgPool,
    config: &PartitionConfig,
    now: DateTime<Utc>,
) -> Result<Vec<Expired>, sqlx::Error> {
    ensure(pool, config, now, now).await?;
    expire(pool, config, now).await
}

/// How often a process looks after its partitions: four times per period, at least once a minute.
pub fn check_every(config: &PartitionConfig) -> Duration {
    (config.partition_interval / 4).clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// Removes the outbox's dead row versions and index entries, in the partitions that have any. Partitions another
/// process is vacuuming at the moment are skipped, so any number of deliverers may call it.
///
/// A partition nothing has written to yet is left alone: vacuumed while empty, it would tell the planner it holds no
/// rows, every index would look equally cheap, and a plan cached then went on reading it through the wrong index
/// (`(state, id)` for a lookup by id, the whole index per job) as the period began and filled. Never vacuumed, it
/// is estimated at a few pages, and each lookup keeps its own index.
#[tracing::instrument(skip(pool))]
pub async fn vacuum_queue(pool: &PgPool) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    let churned: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', s.schemaname, s.relname) FROM pg_stat_user_tables s
         JOIN pg_inherits i ON i.inhrelid = s.relid
         WHERE i.inhparent = 'outbox'::regclass AND s.n_dead_tup > 0
         ORDER BY s.relname",
    )
    .fetch_all(pool)
    .await?;
    // Names from the catalog, quoted by `format('%I')`.
    for quoted in &churned {
        ddl(pool, &format!("VACUUM (SKIP_LOCKED, PARALLEL 0) {quoted}")).await?;
    }
    let took = started.elapsed();
    if took > VACUUM_EVERY / 2 {
        tracing::warn!(?took, "vacuuming the outbox took half its interval; shorten TIDINGS_PARTITION_INTERVAL");
    } else {
        tracing::debug!(?took, partitions = churned.len(), "vacuumed the outbox");
    }
    Ok(())
}

/// Keeps partitions ahead of need and applies retention until cancelled; with `vacuum`, also keeps the outbox
/// free of dead entries.
pub async fn run_until_stopped(pool: PgPool, config: PartitionConfig, vacuum: bool, token: CancellationToken) {
    let mut maintenance = tokio::time::interval(check_every(&config));
    let mut hygiene = tokio::time::interval(VACUUM_EVERY);
    maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    hygiene.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Both fire at once at first; the start already created partitions. Retention first runs one interval after
    // the start (which never waits for it: a detach may wait for long transactions).
    maintenance.tick().await;
    hygiene.tick().await;
    loop {
        tokio::select! {
            _ = maintenance.tick() => {
                if let Err(e) = maintain(&pool, &config, Utc::now()).await {
                    tracing::error!(error = %e, "partition maintenance failed; trying again at the next pass");
                }
            }
            _ = hygiene.tick(), if vacuum => {
                if let Err(e) = vacuum_queue(&pool).await {
                    tracing::warn!(error = %e, "vacuuming the outbox failed; trying again shortly");
                }
            }
            _ = token.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(interval_secs: u64) -> PartitionConfig {
        PartitionConfig {
            partition_interval: Duration::from_secs(interval_secs),
            retention: Retention(Some(Duration::from_secs(7 * 86_400))),
        }
    }

    #[test]
    fn partitions_reach_two_periods_ahead() {
        let now = Utc::now();
        assert_eq!(horizon(&config(60), now) - now, chrono::Duration::seconds(120));
        assert_eq!(horizon(&config(86_400), now) - now, chrono::Duration::days(2));
    }

    #[test]
    fn maintenance_runs_several_times_per_period_but_at_most_once_a_minute() {
        assert_eq!(check_every(&config(60)), Duration::from_secs(15));
        assert_eq!(check_every(&config(86_400)), Duration::from_secs(60));
    }
}
