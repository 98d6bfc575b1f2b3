//! Secrets never reach the logs: a whole flow at the most verbose log level, with every kind of secret in play.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    harness::{free_port, fresh_database_url, TOPIC},
    receiver::Receiver,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_the_logs_of_a_whole_flow() {
    let admin_token = "admin-token-7f3a9c-never-logged";
    let publish_token = "publish-token-51be02-never-logged";
    let hmac_key = "hmac-key-c0ffee-never-logged";
    let subscription_secret = "subscription-secret-9d8e7f-never-logged";
    let database_password = "db-password-a1b2c3";
    let database_url = fresh_database_url();
    // A password in the URL (ignored by trust authentication) must not be logged either.
    let database_url = database_url.replacen("postgres@", &format!("postgres:{database_password}@"), 1);
    let log_path = std::env::temp_dir().join(format!("tidings-secrets-{}.log", uuid::Uuid::new_v4().simple()));
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let mut hub = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("all")
        .env("DATABASE_URL", &database_url)
        .env("TIDINGS_LISTEN", format!("127.0.0.1:{port}"))
        .env("TIDINGS_CALLBACK_ALLOW_PRIVATE", "true")
        .env("TIDINGS_ADMIN_TOKEN", admin_token)
        .env("TIDINGS_PUBLISH_TOKENS", publish_token)
        .env("TIDINGS_PUBLISH_HMAC_KEY", hmac_key)
        .env("TIDINGS_RETRY_SCHEDULE", "100ms")
        .env("RUST_LOG", "trace")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("tidings starts");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/readyz")).send().await.map(|r| !r.status().is_success()).unwrap_or(true) {
        assert!(started.elapsed() < Duration::from_secs(30), "the hub never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let form = [
        ("hub.mode", "subscribe"),
        ("hub.topic", TOPIC),
        ("hub.callback", &callback),
        ("hub.secret", subscription_secret),
    ];
    assert_eq!(client.post(format!("{base}/")).form(&form).send().await.unwrap().status(), 202);
    let started = Instant::now();
    while subscriber.verifications().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(20), "no verification");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    loop {
        let page =
            client.get(format!("{base}/subscriptions?state=active")).bearer_auth(admin_token).send().await.unwrap();
        if page.text().await.unwrap().contains(&callback) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the subscription never became active");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = serde_json::json!({ "topic": TOPIC, "body": { "n": 1 } });
    let accepted = client.post(format!("{base}/events")).bearer_auth(publish_token).json(&event).send().await.unwrap();
    assert!(accepted.status().is_success());
    // Wrong credentials are logged as refusals, never with what was presented.
    client
        .post(format!("{base}/events"))
        .bearer_auth(format!("{publish_token}-typo"))
        .json(&event)
        .send()
        .await
        .unwrap();
    client.get(format!("{base}/subscriptions")).bearer_auth(format!("{admin_token}-typo")).send().await.unwrap();
    let listed = client.get(format!("{base}/subscriptions")).bearer_auth(admin_token).send().await.unwrap();
    let listed = listed.text().await.unwrap();
    assert!(!listed.contains(subscription_secret), "the admin API never returns a subscription's secret");
    let started = Instant::now();
    while subscriber.deliveries().is_empty() {
        if started.elapsed() > Duration::from_secs(20) {
            let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            panic!("no delivery; the hub's last log lines:\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(subscriber.deliveries()[0].header("x-hub-signature").is_some(), "the delivery was signed with the secret");

    Command::new("kill").args(["-TERM", &hub.id().to_string()]).status().unwrap();
    let _ = hub.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.lines().count() > 10, "the hub logged the flow:\n{logs}");
    for secret in [admin_token, publish_token, hmac_key, subscription_secret, database_password] {
        assert!(!logs.contains(secret), "the logs contain the secret {secret}");
    }
}
