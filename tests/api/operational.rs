//! The hub's own topics (`tidings.*`): lifecycle changes and dead deliveries published there reach an operator's
//! subscription through the ordinary pipeline; nobody else can publish to them or subscribe to them.

use std::time::Duration;

use serde_json::{json, Value};

use crate::{
    helpers::{eventually, spawn_app, TestApp, ADMIN_TOKEN},
    receiver::Receiver,
};

/// Retries due sooner than the deliverer's poll are taken at its poll (seconds): two deliveries dying one after
/// the other take a while.
const WAIT: Duration = Duration::from_secs(40);

impl TestApp {
    /// Subscribes as the operator (the admin token as a bearer token).
    pub async fn subscribe_as_operator(&self, topic: &str, callback: &str) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs([("hub.mode", "subscribe"), ("hub.topic", topic), ("hub.callback", callback)])
            .finish();
        self.client
            .post(self.url("/"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// The JSON bodies an operator's receiver got on `topic`, matched on the `Link: rel="self"` of each delivery.
fn notices(receiver: &Receiver, topic: &str) -> Vec<Value> {
    receiver
        .deliveries()
        .iter()
        .filter(|d| d.header("link").is_some_and(|l| l.contains(&format!("<{topic}>; rel=\"self\""))))
        .map(|d| serde_json::from_slice(&d.body).unwrap())
        .collect()
}

#[tokio::test]
async fn an_operator_subscribed_to_the_hubs_own_topics_hears_of_verifications_and_dead_deliveries() {
    let app = spawn_app().await;
    let operator = Receiver::start().await;
    assert_eq!(app.subscribe_as_operator("tidings.*", &operator.url("/alerts")).await.status(), 202);
    app.wait_for_state("tidings.*", &operator.url("/alerts"), "active").await;

    let failing = Receiver::start().await;
    failing.set_status(500);
    let subscription = app.subscribe_active("orders", &failing.url("/hook"), &[]).await;
    let id = subscription["id"].as_str().unwrap();
    let published: Value = app.publish(json!({"topic": "orders", "body": {"n": 1}})).await.json().await.unwrap();

    let verified = eventually(WAIT, "the verification notice", || async {
        notices(&operator, "tidings.subscription.verified").into_iter().find(|n| n["subscription_id"] == id)
    })
    .await;
    assert_eq!((verified["from"].as_str(), verified["to"].as_str()), (Some("pending"), Some("active")));
    assert_eq!(verified["callback"], failing.url("/hook"));
    let dead = eventually(WAIT, "the dead-delivery notice", || async {
        notices(&operator, "tidings.delivery.dead").into_iter().next()
    })
    .await;
    assert_eq!(dead["subscription_id"], id);
    assert_eq!(dead["event_id"], published["id"]);
    assert_eq!(dead["event_topic"], "orders");
    assert_eq!(dead["attempts"], 3, "the whole retry schedule was used");
    assert_eq!(dead["last_status"], 500);
    let delivery = app.admin_get(&format!("/deliveries/{}", dead["delivery_id"])).await;
    assert_eq!(delivery["delivery"]["state"], "dead");
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 3);
    app.stop().await;
}

#[tokio::test]
async fn a_failing_alert_callback_does_not_feed_itself_with_notices_of_its_own_dead_deliveries() {
    let app = spawn_app().await;
    let operator = Receiver::start().await;
    operator.set_status(500);
    assert_eq!(app.subscribe_as_operator("tidings.delivery.dead", &operator.url("/alerts")).await.status(), 202);
    app.wait_for_state("tidings.delivery.dead", &operator.url("/alerts"), "active").await;
    let failing = Receiver::start().await;
    failing.set_status(500);
    app.subscribe_active("orders", &failing.url("/hook"), &[]).await;
    app.publish(json!({"topic": "orders", "body": 1})).await;

    let dead = "SELECT count(*) FROM outbox WHERE state = 'dead'";
    app.wait_for_count(WAIT, "both deliveries dead", dead, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.count(dead).await, 2, "the notice's own dead delivery made no further notice");
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE kind = 'content' AND topic = 'tidings.delivery.dead'").await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn publishing_to_a_reserved_topic_gets_a_403_and_writes_nothing() {
    let app = spawn_app().await;
    let before = app.count("SELECT count(*) FROM events").await;
    for body in [
        json!({"topic": "tidings.delivery.dead", "body": {"forged": true}}),
        json!({"topic": "TIDINGS.subscription.disabled", "body": 1}),
        json!({"events": [{"topic": "fine", "body": 1}, {"topic": "tidings.x", "body": 2}]}),
    ] {
        let response = app.publish(body.clone()).await;
        assert_eq!(response.status(), 403, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains("the hub's own"), "{text}");
    }
    let raw = app
        .client
        .post(app.url("/events/raw?topic=tidings.delivery.dead"))
        .header("content-type", "text/plain")
        .body("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 403);
    assert_eq!(app.count("SELECT count(*) FROM events").await, before, "nothing was written");
    app.stop().await;
}

#[tokio::test]
async fn subscribing_to_a_reserved_topic_without_the_admin_token_gets_a_403_and_stores_nothing() {
    let app = spawn_app().await;
    let stranger = Receiver::start().await;
    for topic in ["tidings.delivery.dead", "tidings.*", "Tidings.subscription.verified"] {
        let response = app.subscribe(topic, &stranger.url("/cb"), &[]).await;
        assert_eq!(response.status(), 403, "{topic}");
        assert!(response.text().await.unwrap().contains("admin token"));
    }
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM subscription_requests").await, 0);
    assert!(stranger.received().is_empty(), "no verification was sent");
    app.stop().await;
}

#[tokio::test]
async fn a_match_all_subscription_gets_every_published_event_but_none_of_the_hubs_own() {
    let app = spawn_app().await;
    let everything = Receiver::start().await;
    app.subscribe_active("*", &everything.url("/all"), &[]).await;
    let other = Receiver::start().await;
    app.subscribe_active("orders", &other.url("/hook"), &[]).await;
    app.publish(json!({"topic": "orders", "body": 1})).await;
    eventually(WAIT, "the published event", || async { (everything.deliveries().len() == 1).then_some(()) }).await;
    let notices = app
        .count("SELECT count(*) FROM events WHERE kind = 'content' AND topic = 'tidings.subscription.verified'")
        .await;
    assert_eq!(notices, 2, "both verifications were published on the hub's topic");
    let dry: Value = app.admin_get("/dry-run?topic=tidings.subscription.verified").await;
    assert_eq!(dry["subscriptions"], json!([]), "{dry}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(everything.deliveries().len(), 1, "only the published event");
    app.stop().await;
}
