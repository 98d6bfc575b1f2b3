//! Secrets never reach the logs, the API's answers or its error messages: a full flow through the real binaries
//! with every kind of secret in play, then a search of everything they printed.

use std::{sync::Arc, time::Duration};

use tidings::api::auth::publish_signature;

use crate::{
    harness::{eventually, shared_server, Hub, Role, ADMIN_TOKEN},
    receiver::Receiver,
};

const HUB_SECRET: &str = "subscriber-secret-5f1c2a9e";
const PUBLISH_TOKEN: &str = "publish-token-8d3e7b41";
const HMAC_KEY: &str = "publish-hmac-key-c0ffee42";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_log_line_or_api_answer_of_a_full_flow() {
    let hub = Arc::new(
        Hub::new(
            &shared_server(),
            &[("TIDINGS_PUBLISH_TOKENS", PUBLISH_TOKEN), ("TIDINGS_PUBLISH_HMAC_KEY", HMAC_KEY), ("RUST_LOG", "debug")],
        )
        .await,
    );
    let _api = hub.spawn_api().await;
    let _spreader = hub.spawn(Role::Spreader);
    let _deliverer = hub.spawn(Role::Deliverer);
    let receiver = Receiver::start().await;
    let callback = receiver.url("/secret");
    let form = [
        ("hub.mode", "subscribe"),
        ("hub.topic", "secret.topic"),
        ("hub.callback", callback.as_str()),
        ("hub.secret", HUB_SECRET),
    ];
    let mut answers = Vec::new();
    let response = hub.client.post(hub.url("/")).form(&form).send().await.unwrap();
    answers.push(response.text().await.unwrap());
    let id: uuid::Uuid = eventually(Duration::from_secs(30), "the subscription to be active", || async {
        sqlx::query_scalar("SELECT id FROM subscriptions WHERE state = 'active'")
            .fetch_optional(&hub.pool)
            .await
            .ok()?
    })
    .await;
    // Refused requests that carry the secrets: the reasons must not repeat them.
    let bad_form = [
        ("hub.mode", "subscribe"),
        ("hub.topic", "bad topic"),
        ("hub.callback", callback.as_str()),
        ("hub.secret", HUB_SECRET),
    ];
    answers.push(hub.client.post(hub.url("/")).form(&bad_form).send().await.unwrap().text().await.unwrap());
    let long_secret = format!("{HUB_SECRET}{}", "x".repeat(300));
    let long_form = [
        ("hub.mode", "subscribe"),
        ("hub.topic", "secret.topic"),
        ("hub.callback", callback.as_str()),
        ("hub.secret", long_secret.as_str()),
    ];
    answers.push(hub.client.post(hub.url("/")).form(&long_form).send().await.unwrap().text().await.unwrap());
    for token in [format!("{PUBLISH_TOKEN}x"), format!("{ADMIN_TOKEN}x")] {
        let response = hub.client.get(hub.url("/subscriptions")).bearer_auth(&token).send().await.unwrap();
        answers.push(response.text().await.unwrap());
        let response = hub
            .client
            .post(hub.url("/events"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"topic": "secret.topic", "body": 1}))
            .send()
            .await
            .unwrap();
        answers.push(response.text().await.unwrap());
    }
    // Publishing with a token and with a signature; both delivered, signed with the subscriber's secret.
    let body = serde_json::json!({"topic": "secret.topic", "body": {"n": 1}});
    let response = hub.client.post(hub.url("/events")).bearer_auth(PUBLISH_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    answers.push(response.text().await.unwrap());
    let raw = serde_json::json!({"topic": "secret.topic", "body": {"n": 2}}).to_string();
    let ts = chrono::Utc::now().timestamp();
    let response = hub
        .client
        .post(hub.url("/events"))
        .header("content-type", "application/json")
        .header("x-tidings-timestamp", ts.to_string())
        .header("x-tidings-signature", publish_signature(HMAC_KEY, ts, raw.as_bytes()))
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    answers.push(response.text().await.unwrap());
    eventually(Duration::from_secs(30), "both deliveries", || async {
        (receiver.deliveries().len() >= 2).then_some(())
    })
    .await;
    // Everything the admin API shows about it.
    for path in [
        format!("/subscriptions/{id}"),
        "/subscriptions".into(),
        "/deliveries".into(),
        "/events".into(),
        "/stats".into(),
    ] {
        let response = hub.client.get(hub.url(&path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert!(response.status().is_success(), "{path}");
        answers.push(response.text().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let logs = hub.all_logs();
    assert!(logs.lines().count() > 10, "the processes should have logged the flow:\n{logs}");
    for secret in [HUB_SECRET, PUBLISH_TOKEN, HMAC_KEY, ADMIN_TOKEN] {
        assert!(
            !logs.contains(secret),
            "a log line contains {secret}:\n{}",
            logs.lines().filter(|l| l.contains(secret)).collect::<Vec<_>>().join("\n")
        );
        for answer in &answers {
            assert!(!answer.contains(secret), "an API answer contains {secret}: {answer}");
        }
    }
}
