//! Metrics after real traffic, and graceful shutdown of the real binaries on SIGTERM.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::json;

use tidings::app::Roles;

use crate::{
    helpers::{database_name, eventually, spawn_app, spawn_app_with, test_config},
    receiver::Receiver,
    spreader::insert_subscription,
};

/// The value of one sample line (`name{labels} value`) in a Prometheus text page.
fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{page}"))
}

#[tokio::test]
async fn metrics_count_what_an_end_to_end_run_did() {
    let app = spawn_app().await;
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    app.subscribe_active("t", &a.url("/a"), &[]).await;
    app.subscribe_active("t", &b.url("/b"), &[]).await;
    app.publish(json!((0..5).map(|i| json!({"topic": "t", "body": i})).collect::<Vec<_>>())).await;
    app.settle().await;
    let page = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&page, r#"tidings_events_appended_total{source="json"}"#), 5.0);
    assert_eq!(sample(&page, "tidings_spread_jobs_total"), 10.0);
    assert_eq!(sample(&page, r#"tidings_deliveries_total{outcome="delivered"}"#), 10.0);
    assert_eq!(sample(&page, r#"tidings_verifications_total{outcome="verified"}"#), 2.0);
    assert_eq!(sample(&page, r#"tidings_attempt_seconds_count{kind="deliver"}"#), 10.0);
    assert_eq!(sample(&page, r#"tidings_subscriptions{state="active"}"#), 2.0);
    assert_eq!(sample(&page, r#"tidings_outbox_jobs{state="due"}"#), 0.0);
    assert_eq!(sample(&page, "tidings_spreader_lag_positions"), 0.0);
    assert_eq!(sample(&page, "tidings_publish_seconds_count"), 1.0);
    assert!(sample(&page, r#"tidings_db_pool_connections{state="max"}"#) >= 1.0);
    assert_eq!(sample(&page, "tidings_log_partitions"), 3.0, "today and two days ahead");
    assert_eq!(sample(&page, "tidings_log_oldest_period_seconds"), 0.0, "the oldest period has not ended yet");
    app.stop().await;
}

#[tokio::test]
async fn the_outbox_gauges_count_due_and_scheduled_jobs_and_how_long_the_oldest_due_one_has_waited() {
    let app = spawn_app_with(test_config(), Roles { deliverer: false, ..Roles::ALL }).await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let first = insert_subscription(&app.pool, "t", &a.url("/a"), "active").await;
    let second = insert_subscription(&app.pool, "t", &b.url("/b"), "active").await;
    app.publish(json!((0..3).map(|i| json!({"topic": "t", "body": i})).collect::<Vec<_>>())).await;
    app.wait_for_count(Duration::from_secs(20), "every job spread", "SELECT count(*) FROM outbox", 6).await;
    // The first subscription's jobs wait for a retry; the second's oldest has been due for a minute.
    let retry_later = "UPDATE outbox SET due_at = now() + interval '1 hour' WHERE subscription_id = $1";
    let due_a_minute_ago = "UPDATE outbox SET due_at = now() - interval '1 minute'
                            WHERE id = (SELECT max(id) FROM outbox WHERE subscription_id = $1)";
    for (sql, subscription) in [(retry_later, first), (due_a_minute_ago, second)] {
        sqlx::query(sql).bind(subscription).execute(&app.pool).await.unwrap();
    }
    let page = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sample(&page, r#"tidings_outbox_jobs{state="due"}"#), 3.0);
    assert_eq!(sample(&page, r#"tidings_outbox_jobs{state="scheduled"}"#), 3.0);
    let waited = sample(&page, "tidings_outbox_oldest_due_seconds");
    assert!((59.0..120.0).contains(&waited), "the oldest due job has waited {waited} s");
    app.stop().await;
}

fn spawn_binary(name: &str, args: &[&str], database_url: &str, extra: &[(&str, &str)]) -> Child {
    let path = match name {
        "tidings" => env!("CARGO_BIN_EXE_tidings"),
        "callbacks-spreader" => env!("CARGO_BIN_EXE_callbacks-spreader"),
        _ => env!("CARGO_BIN_EXE_callback-deliver"),
    };
    let mut command = Command::new(path);
    command
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("TIDINGS_CALLBACK_ALLOW_PRIVATE", "true")
        .env("TIDINGS_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
        .env("TIDINGS_METRICS_LISTEN", "127.0.0.1:0")
        .env("TIDINGS_SHUTDOWN_GRACE_SECONDS", "5")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        command.env(k, v);
    }
    command.spawn().expect("the binary starts")
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Waits for the process to exit, up to `limit`, and returns its exit code.
async fn exit_code(child: &mut Child, limit: Duration) -> Option<i32> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_binary_exits_0_on_sigterm_and_in_flight_deliveries_finish() {
    let config = test_config();
    let database_url = config.database.database_url.expose().to_string();
    // The schema comes from `tidings migrate`, run as a process too.
    let mut migrate = spawn_binary("tidings", &["migrate"], &database_url, &[]);
    assert_eq!(exit_code(&mut migrate, Duration::from_secs(30)).await, Some(0));

    let subscriber = Receiver::start().await;
    subscriber.set_delay(Duration::from_millis(1500));
    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    crate::spreader::insert_subscription(&pool, "t", &subscriber.url("/slow"), "active").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut hub = spawn_binary("tidings", &["all"], &database_url, &[("TIDINGS_LISTEN", listen.as_str())]);
    let client = reqwest::Client::new();
    let published = eventually(Duration::from_secs(20), "the API to accept a publish", || async {
        let batch: Vec<_> = (0..5).map(|i| json!({"topic": "t", "body": i})).collect();
        let r = client.post(format!("http://{listen}/events")).json(&json!({ "events": batch })).send().await.ok()?;
        r.status().is_success().then_some(())
    });
    published.await;
    eventually(Duration::from_secs(10), "deliveries to be in flight", || async {
        (!subscriber.deliveries().is_empty()).then_some(())
    })
    .await;
    terminate(&hub);
    assert_eq!(exit_code(&mut hub, Duration::from_secs(8)).await, Some(0));
    let in_flight = subscriber.deliveries().len() as i64;
    let delivered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'").fetch_one(&pool).await.unwrap();
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE state = 'pending'").fetch_one(&pool).await.unwrap();
    assert_eq!(delivered, in_flight, "every request that reached the subscriber finished and was recorded");
    assert_eq!(delivered + pending, 5, "the rest waits in the outbox for the next deliverer");

    for name in ["callbacks-spreader", "callback-deliver"] {
        let mut processor = spawn_binary(name, &[], &database_url, &[]);
        tokio::time::sleep(Duration::from_millis(800)).await;
        terminate(&processor);
        assert_eq!(exit_code(&mut processor, Duration::from_secs(8)).await, Some(0), "{name}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn each_process_names_itself_to_postgresql() {
    let mut config = test_config();
    config.http.metrics_listen = "127.0.0.1:0".parse().unwrap();
    let database = database_name(&config);
    let api = spawn_app_with(config.clone(), Roles::API).await;
    let deliverer = spawn_app_with(config.clone(), Roles::DELIVERER).await;
    let spreader = spawn_app_with(config, Roles::SPREADER).await;
    let names: Vec<String> = eventually(Duration::from_secs(10), "a connection of each process", || async {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = $1 ORDER BY 1")
                .bind(&database)
                .fetch_all(&api.pool)
                .await
                .unwrap();
        (names.len() == 3).then_some(names)
    })
    .await;
    assert_eq!(names, ["callback-deliver", "callbacks-spreader", "tidings serve"]);
    for app in [spreader, deliverer, api] {
        app.stop().await;
    }
}
