//! Query plans across time partitions: the statements that move every event (spreading, claiming, recording
//! outcomes, checking a publisher's ids) find rows through the index made for that lookup in every partition,
//! including the partitions of periods that have not begun and are still empty. A plan is cached once made; one
//! made while a partition was empty, reading it through another index (or none), went on doing so once that
//! partition became the busy one, and every statement then read the whole partition.

use std::time::Duration;

use tidings::{
    app::Roles,
    config::{PartitionConfig, Retention},
    events, outbox, partitions, spreader,
};

use sqlx::Row;

use crate::helpers::{spawn_app_with, test_config, TestApp};

/// A hub with one-minute periods from five minutes ago to two minutes ahead, all of them still empty, after the
/// outbox upkeep a delivering process runs every few seconds.
async fn hub_with_empty_periods() -> TestApp {
    let mut config = test_config();
    config.partitions = PartitionConfig { partition_interval: Duration::from_secs(60), retention: Retention(None) };
    let app = spawn_app_with(config.clone(), Roles::ALL).await;
    let now = chrono::Utc::now();
    partitions::ensure(&app.pool, &config.partitions, now - chrono::Duration::minutes(5), now).await.unwrap();
    partitions::vacuum_queue(&app.pool).await.unwrap();
    app
}

/// The cached (generic) plan of `sql` on one of the hub's own connections, executed with `arguments`.
async fn cached_plan(app: &TestApp, sql: &str, arguments: &str) -> String {
    generic_plan(app, sql, arguments, "").await
}

/// `EXPLAIN (options)` of `sql`'s generic plan, as a process without the API runs it, executed with `arguments` in
/// a transaction that is rolled back, so that `ANALYZE` (which runs the statement) changes nothing.
pub async fn generic_plan(app: &TestApp, sql: &str, arguments: &str, options: &str) -> String {
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL plan_cache_mode = force_generic_plan").execute(&mut *tx).await.unwrap();
    sqlx::query(&format!("PREPARE checked AS {sql}")).execute(&mut *tx).await.unwrap();
    let arguments = if arguments.is_empty() { String::new() } else { format!("({arguments})") };
    let explain = match options {
        "" => format!("EXPLAIN EXECUTE checked{arguments}"),
        options => format!("EXPLAIN ({options}) EXECUTE checked{arguments}"),
    };
    // Text plans come as lines, `FORMAT JSON` as one `json` value.
    let lines: Vec<String> = sqlx::query(&explain)
        .fetch_all(&mut *tx)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get(0).or_else(|_| row.try_get::<serde_json::Value, _>(0).map(|v| v.to_string())))
        .collect::<Result<_, _>>()
        .unwrap();
    // A prepared statement outlives the transaction: without this the connection keeps it.
    sqlx::query("DEALLOCATE checked").execute(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    lines.join("\n")
}

/// Asserts that every access to a partition of `table` in `plan` goes through one of the indexes named by
/// `indexes` (their names without the partition: `pkey`, `subscription_id_due_at_id_idx`), and that there are at least `at_least`.
fn assert_reads_through(plan: &str, table: &str, indexes: &[&str], at_least: usize) {
    let prefix = format!("{table}_p2");
    let mut accesses = 0;
    for line in plan.lines() {
        let Some(at) = line.find(&prefix) else { continue };
        let node = line.trim_start().trim_start_matches("->  ");
        // The rows a bitmap scan fetches; the index it reads is the `Bitmap Index Scan` below it.
        if node.starts_with("Update on") || node.starts_with("Insert on") || node.starts_with("Bitmap Heap Scan") {
            continue;
        }
        accesses += 1;
        let index = line[at..].split_whitespace().next().unwrap_or_default();
        let through = indexes.iter().any(|i| index.ends_with(&format!("_{i}")));
        assert!(
            through && (node.starts_with("Index") || node.starts_with("Bitmap Index")),
            "{table} is read other than through {indexes:?}: {node}\n{plan}"
        );
    }
    assert!(accesses >= at_least, "{table}: {accesses} partition reads, expected every period's:\n{plan}");
}

const PERIODS: usize = 8;

#[tokio::test]
async fn claiming_reads_every_partition_through_the_right_index_even_empty_ones() {
    let app = hub_with_empty_periods().await;
    let nil = "'00000000-0000-0000-0000-000000000000'";
    let plan = cached_plan(&app, outbox::CLAIM_SQL, &format!("100, 25, 32, '{{}}', '{{}}', '{{}}', {nil}, 64")).await;
    // The walk's two kinds of step (the next subscription, the first after wrapping), each visited subscription's
    // due jobs, and the locks.
    assert_reads_through(&plan, "outbox", &["subscription_id_due_at_id_idx", "pkey"], 4 * PERIODS);
    assert_reads_through(&plan, "events", &["pkey"], PERIODS);
}

#[tokio::test]
async fn finding_the_next_due_job_reads_every_partition_through_the_pending_jobs_index() {
    let app = hub_with_empty_periods().await;
    let plan = cached_plan(&app, outbox::NEXT_DUE_SQL, "").await;
    assert_reads_through(&plan, "outbox", &["subscription_id_due_at_id_idx"], 2 * PERIODS);
}

#[tokio::test]
async fn recording_outcomes_reads_every_partition_through_the_right_index_even_empty_ones() {
    let app = hub_with_empty_periods().await;
    let arrays = vec!["'{}'"; 17].join(", ") + ", 'tidings_events'";
    let plan = cached_plan(&app, outbox::RECORD_SQL, &arrays).await;
    assert_reads_through(&plan, "outbox", &["pkey"], 2 * PERIODS);
    assert_reads_through(&plan, "events", &["pkey"], PERIODS);
}

#[tokio::test]
async fn spreading_reads_every_partition_through_the_right_index_even_empty_ones() {
    let app = hub_with_empty_periods().await;
    let plan = cached_plan(&app, spreader::SPREAD_SQL, "1000, 'tidings_outbox', 10000").await;
    assert_reads_through(&plan, "events", &["txid_position_idx", "pkey"], 2 * PERIODS);
}

#[tokio::test]
async fn checking_a_publishers_event_ids_reads_every_partition_through_the_right_index() {
    let app = hub_with_empty_periods().await;
    let plan = cached_plan(&app, events::TAKEN_IDS_SQL, "'{}'").await;
    assert_reads_through(&plan, "events", &["id_idx"], PERIODS);
}

#[tokio::test]
async fn processes_without_the_api_always_run_the_generic_plans_checked_here_and_the_api_lets_postgres_choose() {
    let app = hub_with_empty_periods().await;
    let mode = |plans| {
        let database = app.config.database.clone();
        async move {
            let pool = tidings::db::connect(&database, 1, plans, "tidings").await.unwrap();
            let mode: String = sqlx::query_scalar("SHOW plan_cache_mode").fetch_one(&pool).await.unwrap();
            pool.close().await;
            mode
        }
    };
    assert_eq!(mode(tidings::db::Plans::Generic).await, "force_generic_plan");
    assert_eq!(mode(tidings::db::Plans::Chosen).await, "auto");
    app.stop().await;
}
