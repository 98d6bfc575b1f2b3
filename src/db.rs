//! Connecting to PostgreSQL: creating the configured database when it does not exist, the connection pool, and
//! the embedded migrations.

use anyhow::Context;
use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions, Connection, PgConnection, PgPool,
};
use std::{str::FromStr, time::Duration};

use crate::config::DatabaseConfig;
use url::Url;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Sequential scans are off: every statement of Tidings reads through an index, and its plan must keep doing so
/// while a period's partitions fill. A cached (generic) plan is made once, and one made while a new period's
/// partitions are still empty would otherwise scan them row by row inside a join and go on doing so as they fill.
/// A table no index serves is still read in full, but its penalty cost would make such a plan look expensive
/// enough to compile: JIT is off too (it never pays for statements this short). The measurements behind this are
/// in docs/decisions/generic-plans-for-processors.md.
pub fn connect_options(url: &str) -> anyhow::Result<PgConnectOptions> {
    Ok(PgConnectOptions::from_str(url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .application_name("tidings")
        .options([("enable_seqscan", "off"), ("jit", "off")])
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
}

/// Creates the database named in `url` unless it exists, connecting to the `postgres` maintenance database.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let options = connect_options(url)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let mut conn = PgConnection::connect_with(&options.clone().database("postgres"))
        .await
        .context("could not connect to PostgreSQL (is it running? see DATABASE_URL)")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await
        .context("could not list databases")?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut conn).await {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it at the same moment.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).with_context(|| format!("could not create database {name}")),
        }
    }
    Ok(())
}

/// Opens the pool, creating the database first when needed, and applies migrations when asked. `name` is the
/// connections' `application_name`.
pub async fn connect(config: &DatabaseConfig, pool_size: u32, plans: Plans, name: &str) -> anyhow::Result<PgPool> {
    let url = config.database_url.expose().as_str();
    create_database_if_missing(url).await?;
    let mut options = connect_options(url)?.application_name(name);
    if plans == Plans::Generic {
        options = options.options([("plan_cache_mode", "force_generic_plan")]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("could not connect to the Tidings database")?;
    if config.migrate_on_start {
        migrate(&pool).await?;
    }
    Ok(pool)
}

/// How the connections of a process choose between a statement's custom plans and its cached generic plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plans {
    /// PostgreSQL's own choice, for processes serving the API: its searches need a plan made for the filters given.
    Chosen,
    /// Always the generic plan, for processes running only the hub's fixed statements (spreading, claiming,
    /// recording, upkeep), each with an index made for it; `tests/api/plans.rs` checks their generic plans. Left to
    /// choose, PostgreSQL planned the outcome statement anew for every batch: costed with the real lengths of its
    /// arrays, a custom plan always looked cheaper than the generic one (costed for ten rows per array), and planning
    /// two UPDATEs and an INSERT over every live partition cost more than running them.
    Generic,
}

/// Opens the pool of the read replica named by `DATABASE_READ_URL` (never created nor migrated: it follows the
/// primary).
pub async fn connect_read(url: &Url, pool_size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect_options(url.as_str())?)
        .await
        .context("could not connect to the read replica (DATABASE_READ_URL)")
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("could not apply database migrations")
}

/// Why a process is not ready to serve.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the database is not reachable or not migrated")]
    Unreachable(#[source] sqlx::Error),
    #[error("{0} migration(s) not applied")]
    Migrations(usize),
}

/// Whether the database answers and every embedded migration is applied (for `/readyz`).
pub async fn is_ready(pool: &PgPool) -> Result<(), NotReady> {
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .map_err(NotReady::Unreachable)?;
    let missing = MIGRATOR.iter().filter(|m| !applied.contains(&m.version)).count();
    if missing > 0 {
        return Err(NotReady::Migrations(missing));
    }
    Ok(())
}
