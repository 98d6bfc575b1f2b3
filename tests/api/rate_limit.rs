//! Per-subscription rate limits: asked for with `hub.x-rate`, enforced by the claim for every deliverer at once,
//! counted at a real receiver.

use std::time::{Duration, Instant};

use serde_json::json;
use tidings::{
    app::Roles,
    deliverer::{transport::HttpTransport, Deliverer},
    metrics::Metrics,
};
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{eventually, spawn_app_with, test_config, ADMIN_TOKEN},
    receiver::Receiver,
    spreader::insert_subscription,
};

/// The most deliveries that `at` (times of arrival, sorted) holds in any window of `window`.
fn busiest(at: &[Instant], window: Duration) -> usize {
    let mut most = 0;
    for (i, start) in at.iter().enumerate() {
        most = most.max(at[i..].iter().take_while(|t| t.duration_since(*start) < window).count());
    }
    most
}

#[tokio::test]
async fn a_rate_limited_subscription_is_never_sent_faster_than_its_limit_by_two_deliverers_while_another_runs_free() {
    let config = test_config();
    let app = spawn_app_with(config.clone(), Roles::ALL).await;
    let token = CancellationToken::new();
    let transport = HttpTransport::new(true, config.delivery.request_timeout);
    let second = Deliverer::new(app.pool.clone(), transport, config.hub.hub_url.clone(), config.delivery.clone());
    let second = tokio::spawn(second.run_until_stopped(token.clone()));
    let (limited, free) = (Receiver::start().await, Receiver::start().await);
    let rate = [("hub.x-rate", "20"), ("hub.x-rate-burst", "2")];
    let subscription = app.subscribe_active("t", &limited.url("/limited"), &rate).await;
    assert_eq!((subscription["rate_per_second"].as_f64(), subscription["rate_burst"].as_i64()), (Some(20.0), Some(2)));
    app.subscribe_active("t", &free.url("/free"), &[]).await;

    let published = Instant::now();
    let batch: Vec<_> = (0..300).map(|i| json!({"topic": "t", "body": i})).collect();
    assert_eq!(app.publish(json!({ "events": batch })).await.status(), 201);
    eventually(Duration::from_secs(10), "the unlimited subscriber's 300", || async {
        (free.deliveries().len() == 300).then_some(())
    })
    .await;
    let free_took = published.elapsed();
    let limited_by_then = limited.deliveries().len();
    assert!(limited_by_then <= 2 + (free_took.as_secs_f64() * 20.0).ceil() as usize, "{limited_by_then}");

    let first = eventually(Duration::from_secs(10), "a first limited delivery", || async {
        limited.deliveries().first().map(|d| d.at)
    })
    .await;
    tokio::time::sleep_until((first + Duration::from_secs(10)).into()).await;
    let at: Vec<Instant> = limited.deliveries().iter().map(|d| d.at).collect();
    let in_ten = at.iter().filter(|t| t.duration_since(first) < Duration::from_secs(10)).count();
    // 20 a second after a burst of 2: at most 202 sent in any ten seconds, and not much fewer. Counted on
    // arrival, the window starts when the first delivery arrived: one that arrived late (a loaded machine) lets
    // the window take in deliveries sent on time after it, so 200 ms of lag (4 deliveries) is allowed for.
    assert!((185..=206).contains(&in_ten), "{in_ten} deliveries in 10 s at 20/s");
    assert!(busiest(&at, Duration::from_secs(1)) <= 22 + 2, "a second held {}", busiest(&at, Duration::from_secs(1)));

    eventually(Duration::from_secs(15), "every limited delivery", || async {
        (limited.deliveries().len() == 300).then_some(())
    })
    .await;
    let bodies: std::collections::BTreeSet<_> = limited.deliveries().into_iter().map(|d| d.body).collect();
    assert_eq!(bodies.len(), 300, "each event once, none lost");
    // A subscriber sees a request before the deliverer records it; a job leaves `pending` in the statement that
    // records its attempt, so once none is pending every attempt is counted.
    let pending = "SELECT count(*) FROM outbox WHERE kind = 'deliver' AND state = 'pending'";
    app.wait_for_count(Duration::from_secs(10), "every attempt recorded", pending, 0).await;
    let attempts = app
        .count("SELECT count(*) FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id WHERE o.kind = 'deliver'")
        .await;
    assert_eq!(attempts, 600, "one attempt per delivery: being held back is not an attempt");
    token.cancel();
    let _ = second.await;
    app.stop().await;
}

#[tokio::test]
async fn a_claim_takes_only_what_the_limit_grants_and_pushes_the_rest_back_unattempted_one_interval_apart() {
    let app = spawn_app_with(test_config(), Roles { deliverer: false, ..Roles::ALL }).await;
    let subscriber = Receiver::start().await;
    let id = insert_subscription(&app.pool, "t", &subscriber.url("/cb"), "active").await;
    sqlx::query("UPDATE subscriptions SET rate_per_second = 2, rate_burst = 1 WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let batch: Vec<_> = (0..5).map(|i| json!({"topic": "t", "body": i})).collect();
    app.publish(json!({ "events": batch })).await;
    app.wait_for_count(Duration::from_secs(10), "5 jobs", "SELECT count(*) FROM outbox WHERE kind = 'deliver'", 5)
        .await;

    let metrics = Metrics::new();
    let config = &app.config;
    let transport = HttpTransport::new(true, config.delivery.request_timeout);
    let deliverer = Deliverer::new(app.pool.clone(), transport, config.hub.hub_url.clone(), config.delivery.clone())
        .with_metrics(metrics.clone());
    assert_eq!(deliverer.try_deliver_batch().await.unwrap(), 1, "a burst of one");
    assert_eq!(subscriber.deliveries().len(), 1);
    assert_eq!(metrics.delivery_throttled.get(), 4);
    let waits: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM due_at - now())::float8 FROM outbox
         WHERE state = 'pending' AND attempts = 0 AND leased_until IS NULL ORDER BY due_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(waits.len(), 4, "the other four wait, unattempted: {waits:?}");
    for (n, wait) in waits.iter().enumerate() {
        let slot = 0.5 * (n + 1) as f64;
        assert!((slot - 0.2..=slot + 0.01).contains(wait), "job {n} waits {wait} s, its slot is {slot} s away");
    }
    assert_eq!(deliverer.try_deliver_batch().await.unwrap(), 0, "nothing may start before its slot");
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_rate_limit_gets_a_400_naming_the_parameter_and_stores_nothing() {
    let app = spawn_app_with(test_config(), Roles::ALL).await;
    let subscriber = Receiver::start().await;
    for extra in [
        vec![("hub.x-rate", "0")],
        vec![("hub.x-rate", "fast")],
        vec![("hub.x-rate", "5"), ("hub.x-rate-burst", "0")],
        vec![("hub.x-rate-burst", "5")],
    ] {
        let response = app.subscribe("t", &subscriber.url("/cb"), &extra).await;
        assert_eq!(response.status(), 400, "{extra:?}");
        let body = response.text().await.unwrap();
        assert!(body.contains("hub.x-rate"), "{extra:?}: {body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM subscription_requests").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn an_operator_sets_and_removes_a_limit_and_deliveries_it_held_back_go_out_at_once() {
    let app = spawn_app_with(test_config(), Roles { deliverer: false, ..Roles::ALL }).await;
    let subscriber = Receiver::start().await;
    let id = insert_subscription(&app.pool, "t", &subscriber.url("/cb"), "active").await;
    let rate = |body: serde_json::Value| {
        app.client.put(app.url(&format!("/subscriptions/{id}/rate"))).bearer_auth(ADMIN_TOKEN).json(&body).send()
    };
    let set = rate(json!({"per_second": 0.01})).await.unwrap();
    assert_eq!(set.status(), 200);
    let set: serde_json::Value = set.json().await.unwrap();
    assert_eq!((set["rate_per_second"].as_f64(), set["rate_burst"].as_i64()), (Some(0.01), Some(1)));

    for bad in [json!({"per_second": 0}), json!({"per_second": 5, "burst": 0}), json!({"burst": 5}), json!([])] {
        let response = rate(bad.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    let stranger = app.client.put(app.url(&format!("/subscriptions/{id}/rate"))).json(&json!({"per_second": 5}));
    assert_eq!(stranger.send().await.unwrap().status(), 401);
    let unknown = app.client.delete(app.url(&format!("/subscriptions/{}/rate", uuid::Uuid::now_v7())));
    assert_eq!(unknown.bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), 404);
    let detail = app.admin_get(&format!("/subscriptions/{id}")).await;
    assert_eq!(detail["subscription"]["rate_per_second"].as_f64(), Some(0.01), "a refused change changes nothing");

    // One delivery a hundred seconds: the first goes out, the other two wait their turn.
    app.publish(json!({"events": [{"topic": "t", "body": 1}, {"topic": "t", "body": 2}, {"topic": "t", "body": 3}]}))
        .await;
    app.wait_for_count(Duration::from_secs(10), "3 jobs", "SELECT count(*) FROM outbox WHERE kind = 'deliver'", 3)
        .await;
    let config = &app.config;
    let transport = HttpTransport::new(true, config.delivery.request_timeout);
    let deliverer = Deliverer::new(app.pool.clone(), transport, config.hub.hub_url.clone(), config.delivery.clone());
    assert_eq!(deliverer.try_deliver_batch().await.unwrap(), 1);
    assert_eq!(deliverer.try_deliver_batch().await.unwrap(), 0, "the others wait for their slots");

    let removed = app.client.delete(app.url(&format!("/subscriptions/{id}/rate"))).bearer_auth(ADMIN_TOKEN);
    let removed: serde_json::Value = removed.send().await.unwrap().json().await.unwrap();
    assert!(removed["rate_per_second"].is_null() && removed["rate_burst"].is_null(), "{removed}");
    assert_eq!(deliverer.try_deliver_batch().await.unwrap(), 2, "held-back deliveries are due at once");
    assert_eq!(subscriber.deliveries().len(), 3);
    app.stop().await;
}
