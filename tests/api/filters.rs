//! Content filters: asked for with `hub.x-filter` or set by the admin API, applied by the spreader, so an event a
//! filter leaves out is never a delivery; the dry run evaluates them against a sample event.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tidings::app::Roles;

use crate::{
    helpers::{eventually, spawn_app, spawn_app_with, test_config, TestApp},
    receiver::Receiver,
    spreader::insert_subscription,
};

const WAIT: Duration = Duration::from_secs(15);

impl TestApp {
    /// The ids a sample event would be delivered to, by the dry run.
    async fn would_reach(&self, sample: Value) -> Vec<String> {
        let response = self.admin_send(Method::POST, "/dry-run", Some(sample.clone())).await;
        assert_eq!(response.status(), 200, "{sample}");
        let answer: Value = response.json().await.unwrap();
        answer["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
    }
}

#[tokio::test]
async fn a_filtered_subscriber_gets_only_the_events_its_filter_passes_and_the_others_are_never_jobs() {
    let app = spawn_app().await;
    let filtered = Receiver::start().await;
    let everything = Receiver::start().await;
    let filter = r#"{"and": [{"tag": "paid"}, {"field": "amount", "gt": 100}]}"#;
    let subscription = app.subscribe_active("orders", &filtered.url("/big"), &[("hub.x-filter", filter)]).await;
    assert_eq!(subscription["filter"], serde_json::from_str::<Value>(filter).unwrap());
    app.subscribe_active("orders", &everything.url("/all"), &[]).await;

    let events = json!({"events": [
        {"topic": "orders", "tags": ["paid"], "body": {"amount": 150, "n": 1}},
        {"topic": "orders", "tags": ["paid"], "body": {"amount": 50, "n": 2}},
        {"topic": "orders", "tags": ["refunded"], "body": {"amount": 150, "n": 3}},
        {"topic": "orders", "tags": ["paid"], "content_type": "text/plain", "body": "amount 150"},
    ]});
    assert_eq!(app.publish(events).await.status(), 201);
    let broken = app
        .client
        .post(app.url("/events/raw?topic=orders&tag=paid"))
        .header("content-type", "application/json")
        .body("{\"amount\": 150,")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 201, "a body that does not parse is still an event");
    app.publish(json!({"topic": "orders", "tags": ["paid"], "body": {"amount": 101, "n": 6}})).await;

    eventually(WAIT, "every event to the unfiltered subscriber", || async {
        (everything.deliveries().len() == 6).then_some(())
    })
    .await;
    app.settle().await;
    let bodies: Vec<Value> = filtered.deliveries().iter().map(|d| serde_json::from_slice(&d.body).unwrap()).collect();
    assert_eq!(bodies, [json!({"amount": 150, "n": 1}), json!({"amount": 101, "n": 6})]);
    let jobs = app
        .count(&format!(
            "SELECT count(*) FROM outbox WHERE kind = 'deliver' AND subscription_id = '{}'",
            subscription["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(jobs, 2, "the events the filter left out were never jobs");
    app.stop().await;
}

#[tokio::test]
async fn a_resubscribe_keeps_a_filter_unless_it_names_another_and_an_empty_one_removes_it() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/cb");
    let id = app.subscribe_active("t", &callback, &[("hub.x-filter", r#"{"tag": "a"}"#)]).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let filter_now =
        || async { app.admin_get(&format!("/subscriptions/{id}")).await["subscription"]["filter"].clone() };
    app.subscribe("t", &callback, &[]).await;
    app.settled_requests(&id).await;
    assert_eq!(filter_now().await, json!({"tag": "a"}), "a renewal without hub.x-filter keeps it");
    app.subscribe("t", &callback, &[("hub.x-filter", r#"{"tag": "b"}"#)]).await;
    app.settled_requests(&id).await;
    assert_eq!(filter_now().await, json!({"tag": "b"}));
    app.subscribe("t", &callback, &[("hub.x-filter", "")]).await;
    app.settled_requests(&id).await;
    assert_eq!(filter_now().await, Value::Null, "an empty hub.x-filter removes it");
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_filter_gets_a_400_saying_what_is_wrong_and_stores_nothing() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    for (filter, says) in [
        ("{", "not JSON"),
        (r#"{"field": "amount", "gt": "100"}"#, "`gt` takes a number"),
        (r#"{"and": [{"tag": "a"}, {"nope": 1}]}"#, "filter.and[1]"),
        (r#"{"field": "a", "in": []}"#, "`in` takes an array"),
    ] {
        let response = app.subscribe("t", &subscriber.url("/cb"), &[("hub.x-filter", filter)]).await;
        assert_eq!(response.status(), 400, "{filter}");
        let body = response.text().await.unwrap();
        assert!(body.starts_with("hub.x-filter: ") && body.contains(says), "{filter}: {body}");
    }
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM subscription_requests").await, 0);
    assert!(subscriber.received().is_empty(), "no verification was sent");
    app.stop().await;
}

#[tokio::test]
async fn each_kind_of_node_decides_in_postgres_as_documented_and_the_dry_run_shows_it() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let id = insert_subscription(&app.pool, "t", "http://127.0.0.1:9/cb", "active").await.to_string();
    let sample = |tags: Value, body: Value| json!({"topic": "t", "tags": tags, "body": body});
    let order =
        json!({"status": "paid", "amount": 120.5, "customer": {"id": 7}, "items": [{"sku": "a"}, {"sku": "b"}]});
    let cases = [
        (json!({"tag": "x"}), sample(json!(["x", "y"]), json!({})), true),
        (json!({"tag": "x"}), sample(json!(["y"]), json!({})), false),
        (json!({"field": "status", "eq": "paid"}), sample(json!([]), order.clone()), true),
        (json!({"field": "status", "eq": "PAID"}), sample(json!([]), order.clone()), false),
        (json!({"field": "status", "in": ["refunded", "paid"]}), sample(json!([]), order.clone()), true),
        (json!({"field": "customer.id", "eq": 7}), sample(json!([]), order.clone()), true),
        (json!({"field": "customer.id", "exists": true}), sample(json!([]), order.clone()), true),
        (json!({"field": "customer.name", "exists": false}), sample(json!([]), order.clone()), true),
        (json!({"field": "items.sku", "eq": "b"}), sample(json!([]), order.clone()), true),
        (json!({"field": "amount", "gt": 120}), sample(json!([]), order.clone()), true),
        (json!({"field": "amount", "lte": 120}), sample(json!([]), order.clone()), false),
        (json!({"field": "status", "gt": 1}), sample(json!([]), order.clone()), false),
        (json!({"or": [{"tag": "z"}, {"field": "amount", "lt": 200}]}), sample(json!([]), order.clone()), true),
        (json!({"not": {"field": "status", "eq": "paid"}}), sample(json!([]), order.clone()), false),
        (
            json!({"field": "status", "exists": true}),
            json!({"topic": "t", "content_type": "text/plain", "body": "{\"status\": 1}"}),
            false,
        ),
    ];
    for (filter, event, reaches) in cases {
        let set = app.admin_send(Method::PUT, &format!("/subscriptions/{id}/filter"), Some(filter.clone())).await;
        assert_eq!(set.status(), 200, "{filter}");
        let reached = app.would_reach(event.clone()).await.contains(&id);
        assert_eq!(reached, reaches, "{filter} on {event}");
    }
    let bad = app.admin_send(Method::PUT, &format!("/subscriptions/{id}/filter"), Some(json!({"tag": ""}))).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        app.would_reach(sample(json!([]), order.clone())).await,
        std::slice::from_ref(&id),
        "the last filter stayed"
    );
    let removed = app.admin_send(Method::DELETE, &format!("/subscriptions/{id}/filter"), None).await;
    assert_eq!(removed.json::<Value>().await.unwrap()["filter"], Value::Null);
    assert_eq!(app.would_reach(sample(json!(["q"]), json!(1))).await, [id]);
    app.stop().await;
}
