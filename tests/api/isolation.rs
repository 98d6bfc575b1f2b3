//! Delivery isolation: a claim reaches every host with room without reading a saturated host's backlog, and every
//! subscription with a due job gets its turn however many others have pending jobs.

use std::time::Duration;

use serde_json::json;
use tidings::{
    app::Roles,
    deliverer::{transport::HttpTransport, Deliverer},
    outbox::{self, Rooms, CLAIM_SQL, WALK_STEPS},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    helpers::{eventually, spawn_app_with, test_config, TestApp},
    plans::generic_plan,
    receiver::Receiver,
    spreader::insert_subscription,
};

const WAIT: Duration = Duration::from_secs(20);
const LEASE: Duration = Duration::from_secs(35);

/// Publishes `count` events to `topic`, 500 to a request.
async fn publish_many(app: &TestApp, topic: &str, count: usize) {
    for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<_> = chunk.iter().map(|i| json!({"topic": topic, "body": i})).collect();
        assert!(app.publish(json!({ "events": batch })).await.status().is_success());
    }
}

async fn host_of(app: &TestApp, subscription: Uuid) -> String {
    sqlx::query_scalar("SELECT callback_host FROM subscriptions WHERE id = $1")
        .bind(subscription)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// How many rows the claim reads from the outbox's partitions (rows each scan returned, over all its loops), under
/// EXPLAIN ANALYZE of the plan a deliverer runs, with nothing changed.
async fn outbox_rows_a_claim_reads(app: &TestApp, saturated: &str) -> f64 {
    let arguments =
        format!("16, {}, 32, '{{{saturated}}}', '{{}}', '{{}}', '{}', {WALK_STEPS}", LEASE.as_secs(), Uuid::nil());
    let plan = generic_plan(app, CLAIM_SQL, &arguments, "ANALYZE, FORMAT JSON").await;
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    fn rows(node: &serde_json::Value) -> f64 {
        let own = match node["Relation Name"].as_str() {
            Some(name) if name.starts_with("outbox_p") && node["Node Type"] != "ModifyTable" => {
                node["Actual Rows"].as_f64().unwrap_or(0.0) * node["Actual Loops"].as_f64().unwrap_or(1.0)
            }
            _ => 0.0,
        };
        own + node["Plans"].as_array().map_or(0.0, |plans| plans.iter().map(rows).sum())
    }
    rows(&plan[0]["Plan"])
}

#[tokio::test]
async fn a_slow_hosts_backlog_does_not_delay_another_hosts_job() {
    let app = spawn_app_with(test_config(), Roles { deliverer: false, ..Roles::ALL }).await;
    let (slow, fast) = (Receiver::start().await, Receiver::start().await);
    let slow_id = insert_subscription(&app.pool, "backlog", &slow.url("/slow"), "active").await;
    let fast_id = insert_subscription(&app.pool, "other", &fast.url("/fast"), "active").await;
    let backlog = 2_000;
    publish_many(&app, "backlog", backlog).await;
    publish_many(&app, "other", 1).await;
    let jobs = "SELECT count(*) FROM outbox WHERE kind = 'deliver'";
    app.wait_for_count(WAIT, "every job spread", jobs, backlog as i64 + 1).await;
    let slow_host = host_of(&app, slow_id).await;

    // The slow host is saturated: its whole backlog is due, older than the other host's one job. What a claim
    // reads is bounded by its walk (a few rows a step), not by the backlog.
    let read = outbox_rows_a_claim_reads(&app, &slow_host).await;
    assert!(read < 400.0, "a claim read {read} outbox rows beside a backlog of {backlog}");
    let rooms = Rooms { per_host: 32, saturated: vec![slow_host], ..Default::default() };
    let claimed = outbox::claim(&app.pool, 16, LEASE, &rooms, Uuid::nil()).await.unwrap();
    let subscriptions: Vec<_> = claimed.jobs.iter().map(|j| j.subscription_id).collect();
    assert_eq!(subscriptions, vec![fast_id], "the first claim takes the other host's job, and nothing of the slow one");
    assert!(claimed.went_round, "two subscriptions: one walk visits both");
    assert!(claimed.earliest_due.unwrap() <= chrono::Utc::now(), "the slow host's backlog is due");
    app.stop().await;
}

/// Subscribes `count` callbacks of one host that each wait for a retry an hour away, then `last`, whose id sorts
/// after theirs (ids are time-ordered), so a walk from the first subscription reaches it last; publishes one event
/// to `last`'s topic and waits until every job is spread. Returns `last`'s id.
async fn behind_subscriptions_waiting_for_retries(app: &TestApp, count: usize, last: &Receiver) -> Uuid {
    let waiting = Receiver::start().await;
    for i in 0..count {
        insert_subscription(&app.pool, "later", &waiting.url(&format!("/later/{i}")), "active").await;
    }
    let last_id = insert_subscription(&app.pool, "other", &last.url("/last"), "active").await;
    publish_many(app, "later", 1).await;
    publish_many(app, "other", 1).await;
    let jobs = "SELECT count(*) FROM outbox o JOIN subscriptions s ON s.id = o.subscription_id
                WHERE s.topic IN ('later', 'other')";
    app.wait_for_count(WAIT, "every job spread", jobs, count as i64 + 1).await;
    sqlx::query(
        "UPDATE outbox o SET due_at = now() + interval '1 hour' FROM subscriptions s
         WHERE s.id = o.subscription_id AND s.topic = 'later'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    last_id
}

#[tokio::test]
async fn a_due_job_is_delivered_at_once_however_many_subscriptions_wait_for_retries() {
    let config = test_config();
    let app = spawn_app_with(config.clone(), Roles { deliverer: false, ..Roles::ALL }).await;
    let last = Receiver::start().await;
    // More subscriptions wait than one claim's walk visits, and the due job's comes after them all.
    behind_subscriptions_waiting_for_retries(&app, WALK_STEPS as usize + 20, &last).await;
    let token = CancellationToken::new();
    let transport = HttpTransport::new(true, config.delivery.request_timeout);
    let deliverer = Deliverer::new(app.pool.clone(), transport, config.hub.hub_url.clone(), config.delivery.clone());
    let deliverer = tokio::spawn(deliverer.run_until_stopped(token.clone()));
    // A deliverer that waited after its first claim came back empty would look again only after its 5 s poll.
    eventually(Duration::from_secs(3), "the due job delivered", || async {
        (!last.deliveries().is_empty()).then_some(())
    })
    .await;
    token.cancel();
    deliverer.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn every_subscription_with_a_due_job_gets_its_turn_however_many_others_wait_for_retries() {
    let app = spawn_app_with(test_config(), Roles { deliverer: false, ..Roles::ALL }).await;
    let (slow, last) = (Receiver::start().await, Receiver::start().await);
    let slow_id = insert_subscription(&app.pool, "backlog", &slow.url("/slow"), "active").await;
    // The slow host's backlog: older than every other job, and its host saturated.
    publish_many(&app, "backlog", 200).await;
    let last_id = behind_subscriptions_waiting_for_retries(&app, WALK_STEPS as usize + 20, &last).await;
    let rooms = Rooms { per_host: 32, saturated: vec![host_of(&app, slow_id).await], ..Default::default() };

    let mut from = Uuid::nil();
    let mut claims = Vec::new();
    let mut rounds = Vec::new();
    while claims.len() < 3 {
        let claimed = outbox::claim(&app.pool, 16, LEASE, &rooms, from).await.unwrap();
        from = claimed.walked_to;
        claims.push(claimed.jobs.iter().map(|j| j.subscription_id).collect::<Vec<_>>());
        rounds.push(claimed.went_round);
    }
    assert_eq!(claims[0], Vec::<Uuid>::new(), "the first walk ends before the last subscription");
    assert!(!rounds[0], "and says it did not go round");
    assert_eq!(claims[1], vec![last_id], "the next goes on from there and reaches it");
    assert_eq!(claims[2], Vec::<Uuid>::new(), "nothing else was due");
    app.stop().await;
}
