//! Time partitions of the event log, the outbox and the attempt history, and retention.
//!
//! Owns `log_partitions` and the partitions themselves (the SQL functions `tidings_ensure_partitions`,
//! `tidings_partition_blockers` and `tidings_drop_partition` of the migration that partitions the tables). Every
//! process keeps partitions created ahead of need — at start, before it serves anything, and then a few times per
//! period — so an insert always finds its partition; the work is serialised in the database, so any number of
//! processes may do it.
//!
//! Retention is the one way history leaves the log: a period whose end lies longer ago than `TIDINGS_RETENTION`
//! is dropped whole (its events, jobs and attempts together), and never while one of its jobs is still pending
//! (a delivery inside its retry window, a verification not yet settled) or one of its events is not yet spread.
//! Such a period is kept, and dropped on a later pass once those jobs are delivered or dead. Each drop is logged
//! with the period and the bytes it freed.
//!
//! Queue hygiene: every delivery leaves dead index entries behind in the outbox (the claim and the outcome each
//! write a new row version), and a claim reads through them until a VACUUM removes them — in every partition,
//! quiet ones included. Where autovacuum is off or lags, claims slowed down minute by minute. So a process that
//! delivers also vacuums the outbox itself every [`VACUUM_EVERY`]: the partitions with dead rows only (quiet ones
//! are skipped), bounded for the current one by the length of a period.
//!
//! Failure policy: a pass that fails (database down, lock not granted in time) is logged and tried again at the
//! next pass; dropping waits at most a short lock timeout, so it never stalls publishing or delivery for longer.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{PartitionConfig, Retention};

/// How often a delivering process vacuums the outbox.
pub const VACUUM_EVERY: Duration = Duration::from_secs(10);

/// Tries per pass of a drop whose locks were not granted in time.
const DROP_TRIES: u32 = 5;

/// A period retention has dealt with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expired {
    /// Dropped, freeing this many bytes.
    Dropped { suffix: String, bytes: i64 },
    /// Kept because jobs of it are still pending or events of it are not yet spread.
    Kept { suffix: String, pending: i64, unspread: i64 },
    /// Its tables stayed busy past the lock timeout on every try of this pass; the next pass tries again.
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

/// Drops every live period that ended before `now - retention` and nothing still needs. One process at a time
/// does it (a session advisory lock on a connection of its own); the others find the lock taken and skip the pass.
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
    let unlocked =
        sqlx::query("SELECT pg_advisory_unlock(hashtextextended('tidings_retention', 0))").execute(&mut *conn).await;
    if unlocked.is_err() {
        // Never hand a connection that may still hold the lock back to the pool.
        let _ = conn.detach();
    }
    outcomes
}

async fn expire_locked(conn: &mut sqlx::PgConnection, before: DateTime<Utc>) -> Result<Vec<Expired>, sqlx::Error> {
    let suffixes: Vec<String> = sqlx::query_scalar(
        "SELECT suffix FROM log_partitions WHERE dropped_at IS NULL AND ends_at <= $1 ORDER BY starts_at",
    )
    .bind(before)
    .fetch_all(&mut *conn)
    .await?;
    let mut outcomes = Vec::new();
    for suffix in suffixes {
        let (pending, unspread): (i64, i64) =
            sqlx::query_as("SELECT pending, unspread FROM tidings_partition_blockers($1)")
                .bind(&suffix)
                .fetch_one(&mut *conn)
                .await?;
        if pending > 0 || unspread > 0 {
            tracing::info!(partition = %suffix, pending, unspread, "retention keeps an expired period until its jobs finish");
            outcomes.push(Expired::Kept { suffix, pending, unspread });
            continue;
        }
        match drop_period(conn, &suffix).await? {
            Dropped::Bytes(bytes) => {
                tracing::info!(partition = %suffix, bytes, "retention dropped an expired period of the log");
                outcomes.push(Expired::Dropped { suffix, bytes });
            }
            // Something was added between the check and the locks: the next pass looks again.
            Dropped::Kept => outcomes.push(Expired::Kept { suffix, pending: 0, unspread: 0 }),
            Dropped::Busy => {
                tracing::warn!(partition = %suffix, "retention could not lock the tables in time; trying at the next pass");
                outcomes.push(Expired::Busy { suffix });
            }
        }
    }
    Ok(outcomes)
}

enum Dropped {
    Bytes(i64),
    Kept,
    Busy,
}

/// One drop in its own short transaction, tried again a few times when its locks are not granted in time.
async fn drop_period(conn: &mut sqlx::PgConnection, suffix: &str) -> Result<Dropped, sqlx::Error> {
    use sqlx::Connection;
    for tries in 1..=DROP_TRIES {
        let attempt = async {
            let mut tx = conn.begin().await?;
            // How long a drop may wait for its table locks before trying again.
            sqlx::query("SET LOCAL lock_timeout = '300ms'").execute(&mut *tx).await?;
            let bytes: Option<i64> =
                sqlx::query_scalar("SELECT tidings_drop_partition($1)").bind(suffix).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(bytes)
        };
        match attempt.await {
            Ok(Some(bytes)) => return Ok(Dropped::Bytes(bytes)),
            Ok(None) => return Ok(Dropped::Kept),
            Err(sqlx::Error::Database(e)) if is_lock_conflict(e.code().as_deref()) => {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(tries))).await;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Dropped::Busy)
}

/// lock_not_available (lock_timeout) or deadlock_detected: someone else held a table; try again shortly.
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
        sqlx::query(&format!("VACUUM (SKIP_LOCKED, PARALLEL 0) {quoted}")).execute(pool).await?;
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
    // Both fire at once at first; the start already did a pass.
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
