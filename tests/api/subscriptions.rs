//! WebSub subscriptions (W3C WebSub 5.1–5.3) against a real subscriber on 127.0.0.1.

use std::time::Duration;

use serde_json::Value;
use tidings::app::Roles;

use crate::{
    helpers::{eventually, spawn_app, spawn_app_with, test_config, TestApp},
    receiver::{Receiver, VerifyReply},
};

const WAIT: Duration = Duration::from_secs(10);

impl TestApp {
    pub async fn subscribe(&self, topic: &str, callback: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let mut pairs = vec![("hub.mode", "subscribe"), ("hub.topic", topic), ("hub.callback", callback)];
        pairs.extend_from_slice(extra);
        self.post_form(&pairs).await
    }

    /// The subscription for a (topic, callback) pair, as the admin API shows it.
    pub async fn subscription(&self, topic: &str, callback: &str) -> Option<Value> {
        let page = self.admin_get(&format!("/subscriptions?topic={}&limit=1000", enc(topic))).await;
        page["subscriptions"].as_array().unwrap().iter().find(|s| s["callback"] == callback).cloned()
    }

    pub async fn wait_for_state(&self, topic: &str, callback: &str, state: &str) -> Value {
        eventually(WAIT, &format!("subscription to become {state}"), || async {
            self.subscription(topic, callback).await.filter(|s| s["state"] == state)
        })
        .await
    }

    /// Subscribes and waits until the subscription is active.
    pub async fn subscribe_active(&self, topic: &str, callback: &str, extra: &[(&str, &str)]) -> Value {
        assert_eq!(self.subscribe(topic, callback, extra).await.status(), 202);
        self.wait_for_state(topic, callback, "active").await
    }

    /// The requests of a subscription once none is pending.
    pub async fn settled_requests(&self, id: &str) -> Vec<Value> {
        eventually(WAIT, "requests to settle", || async {
            let detail = self.admin_get(&format!("/subscriptions/{id}")).await;
            let requests = detail["requests"].as_array().unwrap().clone();
            requests.iter().all(|r| r["state"] != "pending").then_some(requests)
        })
        .await
    }
}

pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn a_subscribe_request_gets_202_and_then_a_verification_get_with_the_right_parameters() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let response = app.subscribe("orders", &callback, &[("hub.lease_seconds", "7200")]).await;
    assert_eq!(response.status(), 202);
    let subscription = app.wait_for_state("orders", &callback, "active").await;
    let checks = subscriber.verifications();
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    assert_eq!(check.path, "/hook");
    assert_eq!(check.param("hub.mode"), Some("subscribe"));
    assert_eq!(check.param("hub.topic"), Some("orders"));
    assert_eq!(check.param("hub.lease_seconds"), Some("7200"));
    assert!(check.param("hub.challenge").is_some_and(|c| c.len() >= 32));
    assert_eq!(subscription["lease_seconds"], 7200);
    app.stop().await;
}

#[tokio::test]
async fn the_callbacks_own_query_string_is_preserved_in_verification() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook?token=abc&x=1");
    app.subscribe_active("orders", &callback, &[]).await;
    let check = &subscriber.verifications()[0];
    assert_eq!(check.param("token"), Some("abc"));
    assert_eq!(check.param("x"), Some("1"));
    assert_eq!(check.param("hub.mode"), Some("subscribe"));
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_echoed_challenge_or_a_404_leaves_no_active_subscription() {
    let app = spawn_app().await;
    for reply in [VerifyReply::WrongChallenge, VerifyReply::Status(404)] {
        let subscriber = Receiver::start().await;
        subscriber.set_verify(reply.clone());
        let callback = subscriber.url("/hook");
        assert_eq!(app.subscribe("orders", &callback, &[]).await.status(), 202);
        let id = eventually(WAIT, "the subscription row", || app.subscription("orders", &callback)).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let requests = app.settled_requests(&id).await;
        assert_eq!(requests[0]["state"], "failed", "{reply:?}");
        assert_eq!(app.subscription("orders", &callback).await.unwrap()["state"], "pending", "{reply:?}");
        assert_eq!(subscriber.verifications().len(), 1, "a refusal is final: {reply:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_resubscribe_is_verified_again_and_leaves_exactly_one_subscription() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let first = app.subscribe_active("orders", &callback, &[("hub.lease_seconds", "7200")]).await;
    assert_eq!(first["has_secret"], false);
    assert_eq!(
        app.subscribe("orders", &callback, &[("hub.lease_seconds", "9000"), ("hub.secret", "s3cret")]).await.status(),
        202
    );
    let renewed = eventually(WAIT, "the renewed lease", || async {
        app.subscription("orders", &callback).await.filter(|s| s["lease_seconds"] == 9000)
    })
    .await;
    assert_eq!(renewed["id"], first["id"]);
    assert_eq!(renewed["state"], "active");
    assert_eq!(renewed["has_secret"], true);
    assert_eq!(subscriber.verifications().len(), 2);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_failed_resubscribe_leaves_the_active_subscription_as_it_was() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let before = app.subscribe_active("orders", &callback, &[("hub.lease_seconds", "7200")]).await;
    subscriber.set_verify(VerifyReply::Status(404));
    app.subscribe("orders", &callback, &[("hub.lease_seconds", "9000"), ("hub.secret", "x")]).await;
    let requests = app.settled_requests(before["id"].as_str().unwrap()).await;
    assert_eq!(requests[1]["state"], "failed");
    let after = app.subscription("orders", &callback).await.unwrap();
    assert_eq!(after, before);
    app.stop().await;
}

#[tokio::test]
async fn an_unsubscribe_is_verified_and_then_ends_the_subscription() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    app.subscribe_active("orders", &callback, &[]).await;
    let response =
        app.post_form(&[("hub.mode", "unsubscribe"), ("hub.topic", "orders"), ("hub.callback", &callback)]).await;
    assert_eq!(response.status(), 202);
    app.wait_for_state("orders", &callback, "unsubscribed").await;
    let check = &subscriber.verifications()[1];
    assert_eq!(check.param("hub.mode"), Some("unsubscribe"));
    assert_eq!(check.param("hub.lease_seconds"), None);
    app.stop().await;
}

#[tokio::test]
async fn a_secret_of_200_bytes_or_more_is_refused_with_a_reason() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let long = "s".repeat(200);
    let response = app.subscribe("orders", &subscriber.url("/hook"), &[("hub.secret", &long)]).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("hub.secret"));
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0);
    let ok = app.subscribe("orders", &subscriber.url("/hook"), &[("hub.secret", &long[..199])]).await;
    assert_eq!(ok.status(), 202);
    app.stop().await;
}

#[tokio::test]
async fn unknown_parameters_are_ignored() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    app.subscribe_active("orders", &callback, &[("foo", "bar"), ("hub.foo", "x")]).await;
    app.stop().await;
}

#[tokio::test]
async fn the_lease_is_clamped_and_expiry_ends_delivery() {
    let mut config = test_config();
    config.hub.lease_min_seconds = 1;
    config.hub.lease_default_seconds = 2;
    config.hub.lease_max_seconds = 2;
    let app = spawn_app_with(config, Roles::ALL).await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let subscription = app.subscribe_active("orders", &callback, &[("hub.lease_seconds", "100000")]).await;
    assert_eq!(subscriber.verifications()[0].param("hub.lease_seconds"), Some("2"));
    assert_eq!(subscription["lease_seconds"], 2);
    app.wait_for_state("orders", &callback, "expired").await;
    app.publish(serde_json::json!({"topic": "orders", "body": 1})).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(subscriber.deliveries().is_empty());
    let detail = app.admin_get(&format!("/subscriptions/{}", subscription["id"].as_str().unwrap())).await;
    let transitions: Vec<_> =
        detail["history"].as_array().unwrap().iter().map(|h| h["change"]["transition"].clone()).collect();
    assert_eq!(transitions, ["verified", "expired"]);
    app.stop().await;
}

#[tokio::test]
async fn a_denied_topic_gets_hub_mode_denied_with_a_reason() {
    let mut config = test_config();
    config.hub.topic_allow = "allowed.*".into();
    let app = spawn_app_with(config, Roles::ALL).await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    assert_eq!(app.subscribe("secret.topic", &callback, &[]).await.status(), 202);
    let denial = eventually(WAIT, "the denial notice", || async { subscriber.verifications().pop() }).await;
    assert_eq!(denial.param("hub.mode"), Some("denied"));
    assert_eq!(denial.param("hub.topic"), Some("secret.topic"));
    assert!(denial.param("hub.reason").is_some_and(|r| !r.is_empty()));
    assert_eq!(denial.param("hub.challenge"), None);
    app.wait_for_state("secret.topic", &callback, "denied").await;
    app.subscribe_active("allowed.orders", &callback, &[]).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_subscription_requests_get_a_4xx_and_store_nothing() {
    let mut config = test_config();
    config.hub.callback_allow_private = false;
    let app = spawn_app_with(config, Roles::API).await;
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("hub.mode", "subscribe"), ("hub.topic", "t")], "hub.callback is required"),
        (vec![("hub.mode", "subscribe"), ("hub.callback", "https://example.com/")], "hub.topic is required"),
        (vec![("hub.mode", "subscribe"), ("hub.topic", "t"), ("hub.callback", "ftp://example.com/")], "http or https"),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "t"),
                ("hub.callback", "https://example.com/"),
                ("hub.lease_seconds", "soon"),
            ],
            "hub.lease_seconds",
        ),
        (vec![("hub.mode", "subscribe"), ("hub.topic", "t"), ("hub.callback", "http://127.0.0.1:9/")], "not public"),
        (
            vec![("hub.mode", "subscribe"), ("hub.topic", "t"), ("hub.callback", "http://[::ffff:10.0.0.1]/")],
            "not public",
        ),
        (
            vec![("hub.mode", "subscribe"), ("hub.topic", "t"), ("hub.callback", "http://169.254.169.254/latest")],
            "not public",
        ),
        (
            vec![
                ("hub.mode", "subscribe"),
                ("hub.topic", "t"),
                ("hub.topic", "u"),
                ("hub.callback", "https://example.com/"),
            ],
            "more than once",
        ),
    ];
    for (pairs, reason) in cases {
        let response = app.post_form(&pairs).await;
        assert_eq!(response.status(), 400, "{pairs:?}");
        let text = response.text().await.unwrap();
        assert!(text.contains(reason), "{pairs:?}: {text}");
    }
    let count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM subscription_requests").fetch_one(&app.pool).await.unwrap();
    assert_eq!(count, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_lists_subscriptions_with_their_history_and_never_their_secret() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let subscription = app.subscribe_active("orders", &callback, &[("hub.secret", "do-not-show-me")]).await;
    let id = subscription["id"].as_str().unwrap();
    let detail = app
        .client
        .get(app.url(&format!("/subscriptions/{id}")))
        .bearer_auth(crate::helpers::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let text = detail.text().await.unwrap();
    assert!(!text.contains("do-not-show-me"), "{text}");
    let detail: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(detail["subscription"]["has_secret"], true);
    assert_eq!(detail["history"][0]["change"]["transition"], "verified");
    assert_eq!(detail["history"][0]["change"]["to"], "active");
    let active = app.admin_get("/subscriptions?state=active").await;
    assert_eq!(active["subscriptions"].as_array().unwrap().len(), 1);
    let none = app.admin_get("/subscriptions?state=expired").await;
    assert!(none["subscriptions"].as_array().unwrap().is_empty());
    app.stop().await;
}
