//! Time partitions and retention: periods are created ahead of need, an expired period is dropped whole, and a
//! period whose delivery is still pending is kept until that delivery has finished.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use tidings::{
    app::Roles,
    config::{PartitionConfig, Retention},
    partitions::{self, Expired},
};
use uuid::Uuid;

use crate::{
    helpers::{eventually, spawn_app_with, test_config, TestApp},
    receiver::Receiver,
};

const WAIT: Duration = Duration::from_secs(15);
const DAY: Duration = Duration::from_secs(86_400);

fn daily_keeping_one_day() -> PartitionConfig {
    PartitionConfig { partition_interval: DAY, retention: Retention(Some(DAY)) }
}

/// A hub started with `config`, with periods created back to `days_back` days ago, and the time it was done.
async fn hub_with_past_days(days_back: i64, roles: Roles, config: tidings::config::Config) -> (TestApp, DateTime<Utc>) {
    let app = spawn_app_with(config.clone(), roles).await;
    let now = Utc::now();
    partitions::ensure(&app.pool, &config.partitions, now - chrono::Duration::days(days_back), now).await.unwrap();
    (app, now)
}

fn daily_config() -> tidings::config::Config {
    let mut config = test_config();
    config.partitions = daily_keeping_one_day();
    config
}

/// Live periods, oldest first: (suffix, start).
async fn live_periods(app: &TestApp) -> Vec<(String, DateTime<Utc>)> {
    sqlx::query_as("SELECT suffix, starts_at FROM log_partitions WHERE dropped_at IS NULL ORDER BY starts_at")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn table_exists(app: &TestApp, name: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(name).fetch_one(&app.pool).await.unwrap()
}

/// Appends a content event as if it had been published at `at` (the spreader then fans it out as usual).
async fn insert_event_at(app: &TestApp, topic: &str, at: DateTime<Utc>) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (id, topic, content_type, body, published_at) VALUES ($1, $2, 'text/plain', 'old', $3)",
    )
    .bind(id)
    .bind(topic)
    .bind(at)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('tidings_events', '')").execute(&app.pool).await.unwrap();
    id
}

async fn events_with_id(app: &TestApp, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE id = $1").bind(id).fetch_one(&app.pool).await.unwrap()
}

#[tokio::test]
async fn a_new_hub_has_partitions_from_now_to_two_periods_ahead() {
    let app = spawn_app_with(daily_config(), Roles::ALL).await;
    let (first, last): (DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as("SELECT min(starts_at), max(ends_at) FROM log_partitions").fetch_one(&app.pool).await.unwrap();
    let now = Utc::now();
    assert!(first <= now && now - first < chrono::Duration::days(1), "the first period holds now: {first}");
    assert!(last >= now + chrono::Duration::days(2), "periods reach two days ahead: {last}");
    assert_eq!(app.publish(json!({"topic": "t", "body": 1})).await.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn processes_creating_partitions_at_the_same_moment_create_each_period_once() {
    let config = daily_config();
    let app = spawn_app_with(config.clone(), Roles::API).await;
    let now = Utc::now();
    let ahead = now + chrono::Duration::days(10);
    let runs = (0..4).map(|_| partitions::ensure(&app.pool, &config.partitions, now, ahead));
    let created: Vec<i32> = futures_util::future::try_join_all(runs).await.expect("concurrent creation succeeds");
    assert_eq!(created.iter().sum::<i32>(), 10, "ten more days, each created by exactly one caller: {created:?}");
    let overlapping: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM log_partitions a JOIN log_partitions b
           ON a.suffix < b.suffix AND a.starts_at < b.ends_at AND b.starts_at < a.ends_at",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(overlapping, 0);
    app.stop().await;
}

#[tokio::test]
async fn retention_drops_an_expired_period_whole_and_keeps_one_whose_delivery_is_still_pending() {
    let mut config = daily_config();
    // A failed delivery waits an hour before its next attempt: it stays pending through the test.
    config.delivery.retry_schedule = "1h".parse().unwrap();
    let (app, now) = hub_with_past_days(3, Roles::ALL, config.clone()).await;
    let periods = live_periods(&app).await;
    let (kept_suffix, kept_start) = periods[0].clone();
    let (dropped_suffix, dropped_start) = periods[1].clone();

    let failing = Receiver::start().await;
    let healthy = Receiver::start().await;
    app.subscribe_active("old.failing", &failing.url("/hook"), &[]).await;
    app.subscribe_active("old.healthy", &healthy.url("/hook"), &[]).await;
    failing.set_status(500);
    let pending_event = insert_event_at(&app, "old.failing", kept_start + chrono::Duration::minutes(1)).await;
    let delivered_event = insert_event_at(&app, "old.healthy", dropped_start + chrono::Duration::minutes(1)).await;
    let current: serde_json::Value =
        app.publish(json!({"topic": "old.healthy", "body": "today"})).await.json().await.unwrap();
    eventually(WAIT, "both healthy deliveries", || async { (healthy.deliveries().len() == 2).then_some(()) }).await;
    // A delivery is recorded after its answer arrives: wait for the record, not only for the receiver.
    let delivered = "SELECT count(*) FROM outbox WHERE state = 'delivered' AND kind = 'deliver'";
    app.wait_for_count(WAIT, "both healthy deliveries recorded", delivered, 2).await;
    let retried = "SELECT count(*) FROM delivery_attempts WHERE outcome = 'retry'";
    app.wait_for_count(WAIT, "the failed first attempt", retried, 1).await;

    let outcomes = partitions::expire(&app.pool, &config.partitions, now).await.unwrap();
    assert!(
        outcomes.iter().any(|o| matches!(o, Expired::Kept { suffix, pending: 1, .. } if *suffix == kept_suffix)),
        "the period with a pending delivery is kept: {outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Expired::Dropped { suffix, bytes } if *suffix == dropped_suffix && *bytes > 0)),
        "the delivered period is dropped: {outcomes:?}"
    );
    assert_eq!(events_with_id(&app, delivered_event).await, 0, "the expired event left the log");
    assert!(!table_exists(&app, &format!("outbox_p{dropped_suffix}")).await, "its jobs went with it");
    assert!(!table_exists(&app, &format!("delivery_attempts_p{dropped_suffix}")).await, "and its attempts");
    assert_eq!(events_with_id(&app, pending_event).await, 1, "the event with a pending job is still there");
    let id: Uuid = current["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(events_with_id(&app, id).await, 1, "today's event is untouched");
    let page = app.admin_get("/deliveries?state=pending&kind=deliver").await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1, "the pending delivery is still queued: {page}");

    // Once that delivery has finished, the next pass drops its period too.
    failing.set_status(204);
    sqlx::query("UPDATE outbox SET due_at = now() WHERE state = 'pending' AND kind = 'deliver'")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('tidings_outbox', '')").execute(&app.pool).await.unwrap();
    eventually(WAIT, "the retried delivery", || async { (!failing.deliveries().is_empty()).then_some(()) }).await;
    let outcomes = eventually(WAIT, "the kept period to be dropped", || async {
        let outcomes = partitions::expire(&app.pool, &config.partitions, now).await.unwrap();
        outcomes
            .iter()
            .any(|o| matches!(o, Expired::Dropped { suffix, .. } if *suffix == kept_suffix))
            .then_some(outcomes)
    })
    .await;
    assert_eq!(outcomes.len(), 1, "{outcomes:?}");
    assert_eq!(events_with_id(&app, pending_event).await, 0);
    let dropped = app.count("SELECT count(*) FROM log_partitions WHERE dropped_at IS NOT NULL").await;
    assert_eq!(dropped, 2, "both drops are recorded");
    app.stop().await;
}

#[tokio::test]
async fn retention_keeps_a_period_whose_events_are_not_yet_spread_and_forever_keeps_everything() {
    let config = daily_config();
    // No spreader runs: the old event stays unspread.
    let (app, now) = hub_with_past_days(2, Roles::API, config.clone()).await;
    let (suffix, start) = live_periods(&app).await[0].clone();
    let event = insert_event_at(&app, "t", start + chrono::Duration::minutes(1)).await;
    let outcomes = partitions::expire(&app.pool, &config.partitions, now).await.unwrap();
    assert_eq!(outcomes, vec![Expired::Kept { suffix, pending: 0, unspread: 1 }]);
    assert_eq!(events_with_id(&app, event).await, 1);

    let forever = PartitionConfig { retention: Retention(None), ..daily_keeping_one_day() };
    assert_eq!(partitions::expire(&app.pool, &forever, now + chrono::Duration::days(365)).await.unwrap(), vec![]);
    app.stop().await;
}

#[tokio::test]
async fn processes_applying_retention_at_the_same_moment_drop_each_period_once_without_errors() {
    let config = daily_config();
    let (app, now) = hub_with_past_days(4, Roles::API, config.clone()).await;
    let runs = (0..4).map(|_| partitions::expire(&app.pool, &config.partitions, now));
    let outcomes: Vec<Vec<Expired>> = futures_util::future::try_join_all(runs).await.expect("no pass fails");
    let dropped: Vec<&Expired> = outcomes.iter().flatten().filter(|o| matches!(o, Expired::Dropped { .. })).collect();
    assert_eq!(dropped.len(), 3, "the three expired empty days, each dropped once: {outcomes:?}");
    assert_eq!(live_periods(&app).await.len(), 4, "yesterday, today and two days ahead remain");
    app.stop().await;
}

/// How each table of a period stands: (table, state), in retention's order.
async fn period_tables(app: &TestApp, suffix: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT child, state FROM tidings_period_tables($1)")
        .bind(suffix)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

async fn all_attached(app: &TestApp, suffix: &str) -> bool {
    period_tables(app, suffix).await.iter().all(|(_, state)| state == "attached")
}

/// Leaves `child` half-detached, as a process that dies during `DETACH PARTITION ... CONCURRENTLY` does: a reader
/// of `parent` makes the detach wait, and the detach is cancelled while it waits.
async fn interrupt_detach(app: &TestApp, parent: &str, child: &str) {
    let mut reader = app.pool.begin().await.unwrap();
    sqlx::query(&format!("SELECT count(*) FROM {parent}")).execute(&mut *reader).await.unwrap();
    let pool = app.pool.clone();
    let sql = format!("ALTER TABLE {parent} DETACH PARTITION {child} CONCURRENTLY");
    let detach = tokio::spawn(async move { sqlx::query(&sql).persistent(false).execute(&pool).await });
    let waiting = "SELECT pid FROM pg_stat_activity
                   WHERE query LIKE 'ALTER TABLE % DETACH PARTITION % CONCURRENTLY' AND wait_event_type = 'Lock'";
    let pid: i32 = eventually(WAIT, "the detach to wait for the reader", || async {
        sqlx::query_scalar(waiting).fetch_optional(&app.pool).await.unwrap()
    })
    .await;
    sqlx::query("SELECT pg_cancel_backend($1)").bind(pid).execute(&app.pool).await.unwrap();
    assert!(detach.await.unwrap().is_err(), "the detach was cancelled");
    reader.commit().await.unwrap();
}

#[tokio::test]
async fn an_interrupted_detach_is_finished_when_its_period_has_expired_and_undone_when_it_has_not() {
    let config = daily_config();
    let (app, now) = hub_with_past_days(3, Roles::API, config.clone()).await;
    let periods = live_periods(&app).await;
    let (expired, _) = periods[0].clone();
    let (today, _) = periods.iter().rev().find(|(_, start)| *start <= now).unwrap().clone();
    interrupt_detach(&app, "events", &format!("events_p{expired}")).await;
    interrupt_detach(&app, "outbox", &format!("outbox_p{today}")).await;
    let tables = period_tables(&app, &today).await;
    assert_eq!(tables[0], (format!("outbox_p{today}"), "detaching".to_owned()), "{tables:?}");

    let outcomes = partitions::expire(&app.pool, &config.partitions, now).await.unwrap();
    assert!(
        outcomes.iter().any(|o| matches!(o, Expired::Dropped { suffix, .. } if *suffix == expired)),
        "the expired period is dropped: {outcomes:?}"
    );
    assert!(!table_exists(&app, &format!("events_p{expired}")).await);
    assert!(all_attached(&app, &today).await, "today's period is whole again: {:?}", period_tables(&app, &today).await);
    assert_eq!(app.publish(json!({"topic": "t", "body": 1})).await.status(), 201, "and takes events");
    app.stop().await;
}

#[tokio::test]
async fn a_job_made_pending_while_its_expired_period_was_being_detached_puts_the_period_back_and_is_delivered() {
    let config = daily_config();
    let (app, now) = hub_with_past_days(3, Roles::ALL, config.clone()).await;
    let (suffix, start) = live_periods(&app).await[1].clone();
    let receiver = Receiver::start().await;
    app.subscribe_active("old", &receiver.url("/hook"), &[]).await;
    insert_event_at(&app, "old", start + chrono::Duration::minutes(1)).await;
    let delivered = "SELECT count(*) FROM outbox WHERE state = 'delivered' AND kind = 'deliver'";
    app.wait_for_count(WAIT, "the delivery recorded", delivered, 1).await;

    // Retention had detached the period's jobs when a redelivery, a moment earlier, made one pending again.
    let outbox = format!("outbox_p{suffix}");
    sqlx::query(&format!("ALTER TABLE outbox DETACH PARTITION {outbox}")).execute(&app.pool).await.unwrap();
    sqlx::query(&format!(
        "UPDATE {outbox} SET state = 'pending', attempts = 0, due_at = now(), finished_at = NULL, leased_until = NULL"
    ))
    .execute(&app.pool)
    .await
    .unwrap();

    let outcomes = partitions::expire(&app.pool, &config.partitions, now).await.unwrap();
    assert!(
        outcomes.contains(&Expired::Kept { suffix: suffix.clone(), pending: 1, unspread: 0 }),
        "the period with the pending job is kept: {outcomes:?}"
    );
    assert!(all_attached(&app, &suffix).await, "and attached again: {:?}", period_tables(&app, &suffix).await);
    sqlx::query("SELECT pg_notify('tidings_outbox', '')").execute(&app.pool).await.unwrap();
    eventually(WAIT, "the job delivered again", || async { (receiver.deliveries().len() == 2).then_some(()) }).await;
    app.wait_for_count(WAIT, "the redelivery recorded", delivered, 1).await;
    let outcomes = partitions::expire(&app.pool, &config.partitions, now).await.unwrap();
    assert!(
        outcomes.iter().any(|o| matches!(o, Expired::Dropped { suffix: s, .. } if *s == suffix)),
        "once delivered, the period is dropped: {outcomes:?}"
    );
    app.stop().await;
}
