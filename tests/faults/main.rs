//! Faults survived with nothing lost. Each test runs the hub as three real processes against real PostgreSQL,
//! subscribes real receivers on 127.0.0.1 through WebSub, publishes steadily, injects one fault, and ends with an
//! accounting: every acknowledged event × active subscription is delivered (duplicates allowed and counted) or
//! dead with its attempts recorded. Zero lost. And secrets never reach the logs (`secrets`).

mod cluster;
mod harness;
#[allow(dead_code)]
#[path = "../api/receiver.rs"]
mod receiver;
mod secrets;

use std::time::Duration;

use harness::{account, account_matching, connect, fresh_database_url, Hub, Publisher, Role, Wants};
use receiver::Receiver;
use serde_json::{json, Value};

const PUBLISH_EVERY: Duration = Duration::from_millis(5);

async fn subscribed_hub(database_url: &str, receivers: &[&Receiver]) -> (Hub, sqlx::PgPool) {
    let hub = Hub::start(database_url, &[]).await;
    let pool = connect(database_url).await;
    hub.subscribe(&pool, receivers).await;
    (hub, pool)
}

fn report(what: &str, a: &harness::Accounting) {
    println!(
        "{what}: {} events acknowledged, {} deliveries owed, {} delivered, {} dead with attempts, {} lost, {} duplicates, {} unwanted",
        a.events, a.pairs, a.delivered, a.dead_with_attempts, a.lost, a.duplicates, a.unwanted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliverer_killed_mid_batch_and_restarted_loses_no_delivery() {
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    // Slow answers keep requests in flight, so the kill lands mid-batch.
    a.set_delay(Duration::from_millis(200));
    let database_url = fresh_database_url();
    let (mut hub, pool) = subscribed_hub(&database_url, &[&a, &b]).await;
    let publisher = Publisher::start(hub.url("/events"), PUBLISH_EVERY);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let in_flight: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE state = 'pending' AND leased_until > now()")
            .fetch_one(&pool)
            .await
            .unwrap();
    hub.kill9(Role::Deliverer);
    tokio::time::sleep(Duration::from_millis(500)).await;
    hub.restart(Role::Deliverer);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let acknowledged = publisher.stop().await;
    let result = account(&pool, &[&a, &b], &acknowledged, Duration::from_secs(60)).await;
    report("deliverer killed", &result);
    println!("jobs leased when the deliverer was killed: {in_flight}");
    assert!(in_flight > 0, "the kill landed while jobs were claimed");
    assert!(result.events > 100, "the load ran");
    assert_eq!(result.lost, 0, "{result:?}");
}

/// While the publisher runs: SIGKILL the spreader and restart it, three times, half a second apart.
async fn kill_the_spreader_three_times(hub: &mut Hub) {
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hub.kill9(Role::Spreader);
        tokio::time::sleep(Duration::from_millis(200)).await;
        hub.restart(Role::Spreader);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spreader_killed_mid_batch_and_restarted_leaves_no_gap_and_no_duplicate_job() {
    let receivers: Vec<Receiver> = futures_util::future::join_all((0..3).map(|_| Receiver::start())).await;
    let refs: Vec<&Receiver> = receivers.iter().collect();
    let database_url = fresh_database_url();
    let (mut hub, pool) = subscribed_hub(&database_url, &refs).await;
    let publisher = Publisher::start(hub.url("/events"), PUBLISH_EVERY);
    kill_the_spreader_three_times(&mut hub).await;
    let acknowledged = publisher.stop().await;
    let result = account(&pool, &refs, &acknowledged, Duration::from_secs(60)).await;
    report("spreader killed three times", &result);
    assert!(result.events > 100, "the load ran");
    assert_eq!(result.lost, 0, "{result:?}");
    let (jobs, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (event_position, subscription_id)) FROM outbox WHERE kind = 'deliver'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'content' AND topic NOT ILIKE 'tidings.%'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(jobs, distinct, "no duplicate job");
    assert_eq!(jobs, events * 3, "one job per event and subscription: no gap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_filters_a_killed_spreader_still_delivers_every_event_to_every_matching_subscription_only() {
    let receivers: Vec<Receiver> = futures_util::future::join_all((0..3).map(|_| Receiver::start())).await;
    let database_url = fresh_database_url();
    let mut hub = Hub::start(&database_url, &[]).await;
    let pool = connect(&database_url).await;
    let even = json!({"field": "parity", "eq": "even"});
    let odd_after_100 = json!({"and": [{"field": "order", "gt": 100}, {"not": {"field": "parity", "eq": "even"}}]});
    let filters = [None, Some(even), Some(odd_after_100)];
    let subscribed: Vec<(&Receiver, Option<Value>)> = receivers.iter().zip(filters).collect();
    hub.subscribe_filtered(&pool, &subscribed).await;
    let publisher = Publisher::start(hub.url("/events"), PUBLISH_EVERY);
    kill_the_spreader_three_times(&mut hub).await;
    let acknowledged = publisher.stop().await;
    let every: Wants = &|_| true;
    let even: Wants = &|b| b["parity"] == "even";
    let odd_after_100: Wants = &|b| b["parity"] == "odd" && b["order"].as_u64().is_some_and(|n| n > 100);
    let owed = [(&receivers[0], every), (&receivers[1], even), (&receivers[2], odd_after_100)];
    let result = account_matching(&pool, &owed, &acknowledged, Duration::from_secs(60)).await;
    report("spreader killed three times, two of three subscriptions filtered", &result);
    assert!(result.events > 100, "the load ran");
    assert!(result.pairs < result.events * 3, "the filters left events out");
    assert_eq!(result.lost, 0, "{result:?}");
    assert_eq!(result.unwanted, 0, "no subscription got an event its filter leaves out: {result:?}");
    let (jobs, distinct): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (event_position, subscription_id)) FROM outbox WHERE kind = 'deliver'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(jobs, distinct, "no duplicate job");
    assert_eq!(jobs as usize, result.pairs, "one job per event and matching subscription: no gap, none filtered out");
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_acknowledged_before_the_api_was_killed_is_in_the_log_and_delivered() {
    let a = Receiver::start().await;
    let database_url = fresh_database_url();
    let (mut hub, pool) = subscribed_hub(&database_url, &[&a]).await;
    // Several publishers, so that requests are in flight at the moment of the kill.
    let publishers: Vec<Publisher> = (0..4).map(|_| Publisher::start(hub.url("/events"), PUBLISH_EVERY)).collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hub.kill9(Role::Api);
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.restart(Role::Api);
    hub.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for p in publishers {
        failed += *p.failed.lock().unwrap();
        acknowledged.extend(p.stop().await);
    }
    let result = account(&pool, &[&a], &acknowledged, Duration::from_secs(60)).await;
    report("API killed", &result);
    println!("publishes refused or cut off while the API was down: {failed}");
    assert!(failed > 0, "the kill interrupted publishing");
    assert_eq!(result.lost, 0, "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_load_is_survived_without_restarting_any_process() {
    let cluster = cluster::Cluster::start();
    let database_url = cluster.database_url("tidings");
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let (mut hub, pool) = subscribed_hub(&database_url, &[&a, &b]).await;
    let publisher = Publisher::start(hub.url("/events"), PUBLISH_EVERY);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = publisher.acknowledged_count();
    cluster.restart();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let acknowledged = publisher.stop().await;
    assert!(acknowledged.len() > before + 50, "publishing resumed after the restart");
    assert!(hub.all_running(), "no process exited: each reconnected by itself");
    let pool = {
        pool.close().await;
        connect(&database_url).await
    };
    let result = account(&pool, &[&a, &b], &acknowledged, Duration::from_secs(60)).await;
    report("PostgreSQL restarted", &result);
    assert_eq!(result.lost, 0, "{result:?}");
    assert!(hub.all_running(), "no process exited");
    pool.close().await;
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_down_for_a_while_gets_its_backlog_by_the_retry_schedule() {
    let (down, up) = (Receiver::start().await, Receiver::start().await);
    let database_url = fresh_database_url();
    let (hub, pool) = subscribed_hub(&database_url, &[&down, &up]).await;
    down.set_status(503);
    let publisher = Publisher::start(hub.url("/events"), Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let acknowledged = publisher.stop().await;
    let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts WHERE outcome = 'retry'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(retried > 0, "the failing subscriber's deliveries were retried");
    down.set_status(204);
    let result = account(&pool, &[&down, &up], &acknowledged, Duration::from_secs(60)).await;
    report("subscriber down, then back", &result);
    assert_eq!(result.lost, 0, "{result:?}");
    assert_eq!(result.dead_with_attempts, 0, "the backlog arrived within the retry schedule");
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_answers_does_not_starve_the_others() {
    // Accepts connections and never answers; the hub's request timeout (1 s here) ends each attempt.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}/silent", silent.local_addr().unwrap());
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let healthy = Receiver::start().await;
    let database_url = fresh_database_url();
    let (hub, pool) = subscribed_hub(&database_url, &[&healthy]).await;
    // The silent subscriber is written as active directly: it could never answer a verification.
    sqlx::query(
        "INSERT INTO subscriptions (id, topic, callback, callback_host, state, lease_seconds, expires_at)
         VALUES ($1, $2, $3, $4, 'active', 3600, now() + interval '1 hour')",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(harness::TOPIC)
    .bind(&silent_url)
    .bind(tidings::callback::host_key(&url::Url::parse(&silent_url).unwrap()))
    .execute(&pool)
    .await
    .unwrap();
    let publisher = Publisher::start(hub.url("/events"), PUBLISH_EVERY);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let acknowledged = publisher.stop().await;
    let result = account(&pool, &[&healthy], &acknowledged, Duration::from_secs(20)).await;
    report("one subscriber never answers", &result);
    assert_eq!(result.lost, 0, "the healthy subscriber got everything: {result:?}");
    // Published → delivered latency for the healthy subscriber stays low although the silent one holds requests.
    let slowest: f64 = sqlx::query_scalar(
        "SELECT coalesce(max(extract(epoch FROM a.started_at - e.published_at)), 0)::float8
         FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at
         JOIN subscriptions s ON s.id = o.subscription_id
         WHERE s.callback NOT LIKE '%/silent' AND a.outcome = 'delivered'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    println!("slowest start of a delivery to the healthy subscriber: {slowest:.3} s after publishing");
    assert!(slowest < 2.0, "the healthy subscriber waited {slowest:.3} s behind the silent one");
    let timeouts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id
         JOIN subscriptions s ON s.id = o.subscription_id WHERE s.callback LIKE '%/silent'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(timeouts > 0, "attempts to the silent subscriber ended by timeout and were recorded");
    drop(hub);
}
