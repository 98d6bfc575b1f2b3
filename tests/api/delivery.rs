//! The callback deliverer: spec-exact requests, retries, Retry-After, 410, dead letters, isolation, crashes.

use std::{process::Stdio, time::Duration};

use base64::Engine;
use serde_json::{json, Value};
use tidings::{
    app::Roles,
    deliverer::{transport::HttpTransport, Deliverer},
};
use tokio::io::AsyncWriteExt;

use crate::{
    helpers::{eventually, spawn_app, spawn_app_with, test_config, TestApp},
    receiver::{Received, Receiver},
    spreader::insert_subscription,
};

const WAIT: Duration = Duration::from_secs(15);

async fn wait_for_deliveries(subscriber: &Receiver, n: usize) -> Vec<Received> {
    eventually(WAIT, &format!("{n} deliveries"), || async {
        let d = subscriber.deliveries();
        (d.len() >= n).then_some(d)
    })
    .await
}

/// The first delivery job of a subscription, with its attempts, once it is no longer pending.
async fn settled_delivery(app: &TestApp, subscription_id: &str) -> Value {
    eventually(WAIT, "the delivery to settle", || async {
        let page = app.admin_get(&format!("/deliveries?subscription_id={subscription_id}&kind=deliver")).await;
        let delivery = page["deliveries"].get(0)?.clone();
        if delivery["state"] == "pending" {
            return None;
        }
        Some(app.admin_get(&format!("/deliveries/{}", delivery["id"])).await)
    })
    .await
}

/// Verifies a delivery's signatures under `secret` with the official Standard Webhooks library (and
/// `X-Hub-Signature` with Python's hmac, unless `standard_only`).
pub async fn verify_with_python(secret: &str, delivery: &Received, standard_only: bool) -> Result<(), String> {
    let python = std::env::var("TIDINGS_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let headers: serde_json::Map<String, Value> = delivery
        .headers
        .iter()
        .filter(|(k, _)| k.starts_with("webhook-") || k == "x-hub-signature")
        .map(|(k, v)| (k.clone(), Value::from(v.clone())))
        .collect();
    let case = json!({
        "secret": secret,
        "body_b64": base64::engine::general_purpose::STANDARD.encode(&delivery.body),
        "headers": headers,
        "standard_only": standard_only,
    });
    let mut child = tokio::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/verify_signatures.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("python3 is needed for this test: {e}"))?;
    child.stdin.take().unwrap().write_all(case.to_string().as_bytes()).await.unwrap();
    let out = child.wait_with_output().await.unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test]
async fn a_published_event_reaches_the_subscriber_exactly_as_published_and_signed() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b"0123456789abcdef0123456789"));
    let secrets = [whsec.as_str(), "plain-secret-123"];
    for (i, secret) in secrets.iter().enumerate() {
        app.subscribe_active(
            "https://example.com/feed",
            &subscriber.url(&format!("/hook{i}?k=v")),
            &[("hub.secret", secret)],
        )
        .await;
    }
    let body: Vec<u8> = b"<feed>\xe2\x9c\x93 \x00 binary-safe</feed>".to_vec();
    let response = app
        .client
        .post(app.url("/events/raw?topic=https%3A%2F%2Fexample.com%2Ffeed"))
        .header("content-type", "application/atom+xml; charset=utf-8")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let published: Value = response.json().await.unwrap();
    let deliveries = wait_for_deliveries(&subscriber, 2).await;
    for (i, secret) in secrets.iter().enumerate() {
        let d = deliveries.iter().find(|d| d.path == format!("/hook{i}")).expect("a delivery per subscription");
        assert_eq!(d.param("k"), Some("v"), "the callback's query string is kept");
        assert_eq!(d.body, body);
        assert_eq!(d.header("content-type"), Some("application/atom+xml; charset=utf-8"));
        assert_eq!(d.header("content-length"), Some(body.len().to_string().as_str()));
        assert_eq!(d.header("transfer-encoding"), None);
        assert_eq!(
            d.header("link"),
            Some(
                format!("<{}>; rel=\"hub\", <https://example.com/feed>; rel=\"self\"", app.config.hub.hub_url).as_str()
            )
        );
        assert_eq!(d.header("webhook-id"), published["id"].as_str());
        assert!(d.header("user-agent").is_some_and(|ua| ua.starts_with("Tidings/")));
        verify_with_python(secret, d, false).await.unwrap_or_else(|e| panic!("secret {secret}: {e}"));
        assert!(
            verify_with_python("whsec_d3Jvbmcgc2VjcmV0", d, false).await.is_err(),
            "a wrong secret must not verify"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn without_a_secret_no_signature_header_is_sent() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    app.subscribe_active("t", &subscriber.url("/hook"), &[]).await;
    app.publish(json!({"topic": "t", "body": {"a": 1}})).await;
    let d = &wait_for_deliveries(&subscriber, 1).await[0];
    assert_eq!(d.header("x-hub-signature"), None);
    assert_eq!(d.header("webhook-signature"), None);
    assert!(d.header("webhook-id").is_some());
    assert_eq!(d.body, br#"{"a":1}"#);
    app.stop().await;
}

#[tokio::test]
async fn failures_are_retried_and_every_attempt_is_recorded() {
    let mut config = test_config();
    config.delivery.retry_schedule = "50ms,50ms,50ms".parse().unwrap();
    let app = spawn_app_with(config, Roles::ALL).await;
    let subscriber = Receiver::start().await;
    let subscription = app.subscribe_active("t", &subscriber.url("/hook"), &[]).await;
    subscriber.queue_statuses(&[500, 500, 200]);
    app.publish(json!({"topic": "t", "body": 1})).await;
    let detail = settled_delivery(&app, subscription["id"].as_str().unwrap()).await;
    assert_eq!(detail["delivery"]["state"], "delivered");
    let attempts = detail["attempts"].as_array().unwrap();
    let outcomes: Vec<_> =
        attempts.iter().map(|a| (a["status_code"].as_i64(), a["outcome"].as_str().unwrap())).collect();
    assert_eq!(outcomes, [(Some(500), "retry"), (Some(500), "retry"), (Some(200), "delivered")]);
    assert_eq!(subscriber.deliveries().len(), 3);
    assert_eq!(attempts[0]["response_excerpt"], "thanks");
    app.stop().await;
}

#[tokio::test]
async fn a_410_gone_ends_the_subscription() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let subscription = app.subscribe_active("t", &callback, &[]).await;
    subscriber.set_status(410);
    app.publish(json!({"topic": "t", "body": 1})).await;
    app.wait_for_state("t", &callback, "unsubscribed").await;
    let detail = settled_delivery(&app, subscription["id"].as_str().unwrap()).await;
    assert_eq!(detail["attempts"][0]["outcome"], "gone");
    app.publish(json!({"topic": "t", "body": 2})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(subscriber.deliveries().len(), 1, "nothing more after 410");
    let history = app.admin_get(&format!("/subscriptions/{}", subscription["id"].as_str().unwrap())).await;
    assert_eq!(history["history"][1]["change"]["transition"], "gone");
    app.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    app.subscribe_active("t", &subscriber.url("/hook"), &[]).await;
    subscriber.queue_statuses(&[503]);
    subscriber.set_retry_after(Some("2"));
    app.publish(json!({"topic": "t", "body": 1})).await;
    let d = wait_for_deliveries(&subscriber, 2).await;
    let gap = d[1].at - d[0].at;
    assert!(gap >= Duration::from_millis(1900), "the retry came after {gap:?}, before Retry-After");
    app.stop().await;
}

#[tokio::test]
async fn an_exhausted_delivery_is_dead_and_can_be_redelivered_on_request() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let subscription = app.subscribe_active("t", &subscriber.url("/hook"), &[]).await;
    subscriber.set_status(500);
    app.publish(json!({"topic": "t", "body": 1})).await;
    let detail = settled_delivery(&app, subscription["id"].as_str().unwrap()).await;
    assert_eq!(detail["delivery"]["state"], "dead");
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 3, "the first attempt and two retries");
    subscriber.set_status(204);
    let id = detail["delivery"]["id"].as_i64().unwrap();
    let again = app
        .client
        .post(app.url(&format!("/deliveries/{id}/redeliver")))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 202);
    let done = eventually(WAIT, "the redelivery", || async {
        let d = app.admin_get(&format!("/deliveries/{id}")).await;
        (d["delivery"]["state"] == "delivered").then_some(d)
    })
    .await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 4, "the history is kept");
    app.stop().await;
}

#[tokio::test]
async fn a_slow_subscriber_does_not_delay_another() {
    let app = spawn_app().await;
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    app.subscribe_active("t", &slow.url("/slow"), &[]).await;
    app.subscribe_active("t", &fast.url("/fast"), &[]).await;
    slow.set_delay(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let batch: Vec<_> = (0..40).map(|i| json!({"topic": "t", "body": i})).collect();
    app.publish(json!({ "events": batch })).await;
    wait_for_deliveries(&fast, 40).await;
    assert!(started.elapsed() < Duration::from_secs(4), "the fast subscriber waited {:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_known_as_fast_that_turns_slow_does_not_hold_up_another() {
    let mut config = test_config();
    // Eight requests in flight in all, two per host: jobs claimed ahead for the slow host must not take the
    // requests the other one needs.
    config.delivery.concurrency = 8;
    config.delivery.host_concurrency = 2;
    let app = spawn_app_with(config, Roles::ALL).await;
    let slow = Receiver::start().await;
    let fast = Receiver::start().await;
    app.subscribe_active("t", &slow.url("/slow"), &[]).await;
    app.subscribe_active("t", &fast.url("/fast"), &[]).await;
    app.publish(json!({"topic": "t", "body": "warm-up"})).await;
    wait_for_deliveries(&slow, 1).await;
    wait_for_deliveries(&fast, 1).await;
    slow.set_delay(Duration::from_secs(5));
    let started = std::time::Instant::now();
    for i in 0..40 {
        app.publish(json!({"topic": "t", "body": i})).await;
    }
    wait_for_deliveries(&fast, 41).await;
    assert!(started.elapsed() < Duration::from_secs(4), "the fast subscriber waited {:?}", started.elapsed());
    app.stop().await;
}

#[tokio::test]
async fn a_deliverer_killed_mid_batch_and_restarted_delivers_everything() {
    let mut config = test_config();
    config.delivery.request_timeout = Duration::from_secs(1);
    let app = spawn_app_with(config.clone(), Roles { deliverer: false, ..Roles::ALL }).await;
    let subscriber = Receiver::start().await;
    insert_subscription(&app.pool, "t", &subscriber.url("/hook"), "active").await;
    subscriber.set_delay(Duration::from_millis(100));
    let batch: Vec<_> = (0..60).map(|i| json!({"topic": "t", "body": i})).collect();
    app.publish(json!({ "events": batch })).await;
    let deliverer = |config: tidings::config::Config, pool| {
        let transport = HttpTransport::new(true, config.delivery.request_timeout);
        Deliverer::new(pool, transport, config.hub.hub_url.clone(), config.delivery.clone())
    };
    let token = tokio_util::sync::CancellationToken::new();
    let first = tokio::spawn(deliverer(config.clone(), app.pool.clone()).run_until_stopped(token.clone()));
    wait_for_deliveries(&subscriber, 5).await;
    first.abort();
    let _ = first.await;
    let token = tokio_util::sync::CancellationToken::new();
    let second = tokio::spawn(deliverer(config.clone(), app.pool.clone()).run_until_stopped(token.clone()));
    let received = eventually(Duration::from_secs(30), "every event delivered", || async {
        let bodies: std::collections::BTreeSet<Vec<u8>> = subscriber.deliveries().into_iter().map(|d| d.body).collect();
        (bodies.len() == 60).then_some(bodies)
    })
    .await;
    assert_eq!(received.len(), 60);
    token.cancel();
    second.await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_callback_on_a_private_address_is_refused_when_private_callbacks_are_not_allowed() {
    let mut config = test_config();
    config.hub.callback_allow_private = false;
    let app = spawn_app_with(config.clone(), Roles { deliverer: false, ..Roles::ALL }).await;
    let subscriber = Receiver::start().await;
    let port = subscriber.base.rsplit(':').next().unwrap().to_owned();
    insert_subscription(&app.pool, "t", &subscriber.url("/literal"), "active").await;
    insert_subscription(&app.pool, "t", &format!("http://localhost:{port}/named"), "active").await;
    app.publish(json!({"topic": "t", "body": 1})).await;
    let deliverer = Deliverer::new(
        app.pool.clone(),
        HttpTransport::new(false, Duration::from_secs(2)),
        config.hub.hub_url.clone(),
        config.delivery.clone(),
    );
    let attempts = eventually(WAIT, "two refused attempts", || async {
        deliverer.try_deliver_batch().await.unwrap();
        let classes: Vec<Option<String>> = sqlx::query_scalar("SELECT error_class FROM delivery_attempts ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        (classes.len() >= 2).then_some(classes)
    })
    .await;
    assert!(attempts.iter().all(|c| c.as_deref() == Some("refused_address")), "{attempts:?}");
    assert!(subscriber.received().is_empty());
    app.stop().await;
}

#[tokio::test]
async fn three_deliverers_claiming_side_by_side_send_each_event_once() {
    let mut config = test_config();
    config.delivery.batch_size = 16;
    let app = spawn_app_with(config.clone(), Roles { deliverer: false, ..Roles::ALL }).await;
    let subscribers = [Receiver::start().await, Receiver::start().await];
    for s in &subscribers {
        insert_subscription(&app.pool, "t", &s.url("/hook"), "active").await;
    }
    let batch: Vec<_> = (0..300).map(|i| json!({"topic": "t", "body": i})).collect();
    assert_eq!(app.publish(json!({ "events": batch })).await.status(), 201);
    app.wait_for_count(WAIT, "600 jobs spread", "SELECT count(*) FROM outbox WHERE kind = 'deliver'", 600).await;
    let deliverers: Vec<_> = (0..3)
        .map(|_| {
            let transport = HttpTransport::new(true, config.delivery.request_timeout);
            Deliverer::new(app.pool.clone(), transport, config.hub.hub_url.clone(), config.delivery.clone())
        })
        .collect();
    // Small claims, many rounds, all three at once: every round races the others for the head of the queue.
    let rounds = deliverers.iter().map(|d| async move {
        let mut ran = 0;
        for _ in 0..100 {
            ran += d.try_deliver_batch().await.unwrap();
        }
        ran
    });
    let ran: usize = futures_util::future::join_all(rounds).await.into_iter().sum();
    assert_eq!(ran, 600, "each job ran in exactly one claim");
    for s in &subscribers {
        let mut bodies: Vec<Vec<u8>> = s.deliveries().into_iter().map(|d| d.body).collect();
        bodies.sort();
        let before = bodies.len();
        bodies.dedup();
        assert_eq!((before, bodies.len()), (300, 300), "every event once, none twice");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_turns_slow_still_gets_every_event_once_at_the_first_attempt() {
    let mut config = test_config();
    // A lease of 7 s: jobs still waiting for the host after 3.5 s are put back and claimed again later.
    config.delivery.request_timeout = Duration::from_secs(1);
    config.delivery.host_concurrency = 1;
    let app = spawn_app_with(config, Roles::ALL).await;
    let subscriber = Receiver::start().await;
    app.subscribe_active("t", &subscriber.url("/hook"), &[]).await;
    let fast: Vec<_> = (0..20).map(|i| json!({"topic": "t", "body": i})).collect();
    app.publish(json!({ "events": fast })).await;
    wait_for_deliveries(&subscriber, 20).await;
    // Known as fast, the host has eight jobs claimed at once; one at a time, each now takes 0.8 s.
    subscriber.set_delay(Duration::from_millis(800));
    let slow: Vec<_> = (20..30).map(|i| json!({"topic": "t", "body": i})).collect();
    app.publish(json!({ "events": slow })).await;
    app.wait_for_count(
        Duration::from_secs(30),
        "30 deliveries recorded",
        "SELECT count(*) FROM outbox WHERE kind = 'deliver' AND state = 'delivered'",
        30,
    )
    .await;
    let mut bodies: Vec<Vec<u8>> = subscriber.deliveries().into_iter().map(|d| d.body).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!((subscriber.deliveries().len(), bodies.len()), (30, 30), "every event once");
    let attempts: Vec<(i32, String)> = sqlx::query_as(
        "SELECT a.attempt, a.outcome FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id
         WHERE o.kind = 'deliver' ORDER BY a.id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(attempts.len(), 30, "one attempt per event: {attempts:?}");
    assert!(attempts.iter().all(|(n, outcome)| *n == 1 && outcome == "delivered"), "{attempts:?}");
    app.stop().await;
}
