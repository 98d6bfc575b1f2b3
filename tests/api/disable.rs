//! Auto-disable: a subscription whose deliveries all fail for the configured window, with enough of them dead in
//! a row, is disabled (in its history, announced on `tidings.subscription.disabled`); a verified subscribe or an
//! operator enables it, and its dead deliveries can then be redelivered.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tidings::{
    app::Roles,
    config::{Config, DisableAfter},
    deliverer::{transport::HttpTransport, Deliverer},
};

use crate::{
    helpers::{eventually, spawn_app_with, test_config, TestApp},
    receiver::Receiver,
    spreader::insert_subscription,
};

/// Retries sooner than the deliverer's poll are taken at its poll: a death takes a few seconds.
const WAIT: Duration = Duration::from_secs(40);

fn config(after: Duration, dead_in_a_row: u32) -> Config {
    let mut config = test_config();
    config.delivery.retry_schedule = "50ms".parse().unwrap();
    config.delivery.disable_after = DisableAfter(Some(after));
    config.delivery.disable_after_dead = dead_in_a_row;
    config
}

async fn history(app: &TestApp, id: &str) -> Vec<Value> {
    let detail = app.admin_get(&format!("/subscriptions/{id}")).await;
    detail["history"].as_array().unwrap().iter().map(|h| h["change"].clone()).collect()
}

async fn failure_count(app: &TestApp, id: &str) -> (bool, i32) {
    sqlx::query_as("SELECT failing_since IS NOT NULL, dead_in_a_row FROM subscriptions WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn dead_count(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subscription_id = $1::uuid AND state = 'dead'")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_subscription_whose_deliveries_all_fail_is_disabled_with_an_alert_and_a_verified_subscribe_enables_it() {
    let app = spawn_app_with(config(Duration::ZERO, 2), Roles::ALL).await;
    let operator = Receiver::start().await;
    assert_eq!(
        app.subscribe_as_operator("tidings.subscription.disabled", &operator.url("/alerts")).await.status(),
        202
    );
    app.wait_for_state("tidings.subscription.disabled", &operator.url("/alerts"), "active").await;
    let failing = Receiver::start().await;
    failing.set_status(500);
    let callback = failing.url("/hook");
    let id = app.subscribe_active("orders", &callback, &[]).await["id"].as_str().unwrap().to_owned();

    let batch: Vec<_> = (0..2).map(|n| json!({"topic": "orders", "body": n})).collect();
    app.publish(json!({ "events": batch })).await;
    eventually(WAIT, "the subscription to be disabled", || async {
        app.subscription("orders", &callback).await.filter(|s| s["state"] == "disabled")
    })
    .await;
    let disabled = history(&app, &id).await.into_iter().find(|c| c["transition"] == "disabled").expect("in history");
    assert_eq!((disabled["from"].as_str(), disabled["to"].as_str()), (Some("active"), Some("disabled")));
    assert!(disabled["reason"].as_str().unwrap().contains("2 died in a row"), "{disabled}");
    let alert = eventually(WAIT, "the operator's alert", || async {
        let alerts = operator.deliveries();
        alerts.iter().map(|d| serde_json::from_slice::<Value>(&d.body).unwrap()).find(|n| n["subscription_id"] == id)
    })
    .await;
    assert_eq!(alert["transition"], "disabled");

    app.publish(json!({"topic": "orders", "body": 2})).await;
    app.settle().await;
    let jobs = "SELECT count(*) FROM outbox o JOIN subscriptions s ON s.id = o.subscription_id
                WHERE s.topic = 'orders' AND o.kind = 'deliver'";
    assert_eq!(app.count(jobs).await, 2, "a disabled subscription gets no new jobs");

    failing.set_status(200);
    assert_eq!(app.subscribe("orders", &callback, &[]).await.status(), 202);
    app.wait_for_state("orders", &callback, "active").await;
    let enabled = history(&app, &id).await.into_iter().last().unwrap();
    assert_eq!((enabled["transition"].as_str(), enabled["from"].as_str()), (Some("verified"), Some("disabled")));
    assert_eq!(failure_count(&app, &id).await, (false, 0), "active again, the count starts afresh");

    let redelivered = app.admin_send(Method::POST, &format!("/subscriptions/{id}/redeliver-dead"), None).await;
    assert_eq!(redelivered.status(), 200);
    eventually(WAIT, "the two dead deliveries", || async {
        let delivered: Vec<_> = failing.deliveries().into_iter().filter(|d| d.status == 200).collect();
        (delivered.len() == 2).then_some(())
    })
    .await;
    let bodies: Vec<Vec<u8>> = failing.deliveries().into_iter().filter(|d| d.status == 200).map(|d| d.body).collect();
    assert!(bodies.contains(&b"0".to_vec()) && bodies.contains(&b"1".to_vec()), "{bodies:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_delivered_event_clears_the_count_and_nothing_is_disabled_before_the_window_has_passed() {
    let app = spawn_app_with(config(Duration::from_secs(3600), 1), Roles::ALL).await;
    let flaky = Receiver::start().await;
    flaky.set_status(500);
    let callback = flaky.url("/hook");
    let id = app.subscribe_active("orders", &callback, &[]).await["id"].as_str().unwrap().to_owned();

    app.publish(json!({"topic": "orders", "body": 1})).await;
    eventually(WAIT, "the first death", || async { (dead_count(&app, &id).await == 1).then_some(()) }).await;
    assert_eq!(failure_count(&app, &id).await, (true, 1));
    assert_eq!(app.subscription("orders", &callback).await.unwrap()["state"], "active", "the window has not passed");

    flaky.set_status(200);
    app.publish(json!({"topic": "orders", "body": 2})).await;
    app.settle().await;
    assert_eq!(failure_count(&app, &id).await, (false, 0), "one delivery clears the count");

    flaky.set_status(500);
    app.publish(json!({"topic": "orders", "body": 3})).await;
    eventually(WAIT, "the second death", || async { (dead_count(&app, &id).await == 2).then_some(()) }).await;
    assert_eq!(failure_count(&app, &id).await, (true, 1));
    assert_eq!(app.subscription("orders", &callback).await.unwrap()["state"], "active");

    // The hour passes: failing since two hours ago, one more death disables it.
    sqlx::query("UPDATE subscriptions SET failing_since = now() - interval '2 hours' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    app.publish(json!({"topic": "orders", "body": 4})).await;
    app.wait_for_state("orders", &callback, "disabled").await;
    app.stop().await;
}

#[tokio::test]
async fn a_disabled_subscriptions_waiting_deliveries_die_and_an_operator_enables_it_to_redeliver_them() {
    let app = spawn_app_with(config(Duration::ZERO, 3), Roles { deliverer: false, ..Roles::ALL }).await;
    let subscriber = Receiver::start().await;
    let id = insert_subscription(&app.pool, "orders", &subscriber.url("/hook"), "active").await.to_string();
    app.publish(json!({"topic": "orders", "body": 1})).await;
    app.wait_for_count(WAIT, "the job", "SELECT count(*) FROM outbox WHERE kind = 'deliver'", 1).await;
    sqlx::query("UPDATE subscriptions SET state = 'disabled' WHERE id = $1::uuid")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();

    let config = &app.config;
    let transport = HttpTransport::new(true, config.delivery.request_timeout);
    let deliverer = Deliverer::new(app.pool.clone(), transport, config.hub.hub_url.clone(), config.delivery.clone());
    assert_eq!(deliverer.try_deliver_batch().await.unwrap(), 1);
    assert!(subscriber.deliveries().is_empty(), "nothing is sent to a disabled subscription");
    let delivery = &app.admin_get(&format!("/deliveries?subscription_id={id}")).await["deliveries"][0];
    assert_eq!(delivery["state"], "dead", "dead, not cancelled, so it can be redelivered");
    assert!(delivery["last_error"].as_str().unwrap().contains("disabled"), "{delivery}");

    let refused = app.admin_send(Method::POST, &format!("/subscriptions/{id}/redeliver-dead"), None).await;
    assert_eq!(refused.status(), 409, "redelivering to a disabled subscription is refused");
    let enabled = app.admin_send(Method::POST, &format!("/subscriptions/{id}/enable"), None).await;
    assert_eq!(enabled.status(), 200);
    assert_eq!(enabled.json::<Value>().await.unwrap()["state"], "active");
    let change = history(&app, &id).await.into_iter().last().unwrap();
    assert_eq!(
        (change["transition"].as_str(), change["reason"].as_str()),
        (Some("enabled"), Some("enabled by an operator"))
    );
    let again = app.admin_send(Method::POST, &format!("/subscriptions/{id}/enable"), None).await;
    assert_eq!(again.status(), 409, "only a disabled subscription can be enabled");
    assert!(again.text().await.unwrap().contains("not disabled"));
    let missing =
        app.admin_send(Method::POST, "/subscriptions/01a20000-0000-7000-8000-000000000000/enable", None).await;
    assert_eq!(missing.status(), 404);

    let redelivered = app.admin_send(Method::POST, &format!("/subscriptions/{id}/redeliver-dead"), None).await;
    assert_eq!(redelivered.status(), 200);
    assert_eq!(deliverer.try_deliver_batch().await.unwrap(), 1);
    assert_eq!(subscriber.deliveries().len(), 1);
    app.stop().await;
}
