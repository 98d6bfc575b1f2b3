//! Secret rotation: a re-subscribe with a new `hub.secret`, or the admin API, replaces the secret; for the grace
//! period deliveries carry Standard Webhooks signatures under both, checked by the official library.

use std::time::Duration;

use serde_json::json;
use tidings::app::Roles;

use crate::{
    delivery::verify_with_python,
    helpers::{eventually, spawn_app_with, test_config, ADMIN_TOKEN},
    receiver::{Received, Receiver},
};

const OLD: &str = "whsec_b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZA==";
const NEW: &str = "rotated-secret-45678";

async fn delivery_of(subscriber: &Receiver, n: usize) -> Received {
    eventually(Duration::from_secs(10), "a delivery", || async { subscriber.deliveries().get(n).cloned() }).await
}

#[tokio::test]
async fn during_the_grace_period_a_delivery_verifies_under_the_old_and_the_new_secret_and_after_it_only_the_new() {
    let mut config = test_config();
    config.delivery.secret_grace = Duration::from_secs(4);
    let app = spawn_app_with(config, Roles::ALL).await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let subscription = app.subscribe_active("t", &callback, &[("hub.secret", OLD)]).await;
    assert!(subscription["previous_secret_until"].is_null(), "a first secret replaces none");
    let id = subscription["id"].as_str().unwrap();

    assert_eq!(app.subscribe("t", &callback, &[("hub.secret", NEW)]).await.status(), 202);
    app.settled_requests(id).await;
    let rotated = app.admin_get(&format!("/subscriptions/{id}")).await;
    let until: chrono::DateTime<chrono::Utc> =
        rotated["subscription"]["previous_secret_until"].as_str().expect("a grace period").parse().unwrap();

    app.publish(json!({"topic": "t", "body": {"n": 1}})).await;
    let during = delivery_of(&subscriber, 0).await;
    assert_eq!(during.header("webhook-signature").unwrap().split(' ').count(), 2, "two v1 signatures");
    verify_with_python(NEW, &during, false).await.expect("the new secret verifies both headers");
    verify_with_python(OLD, &during, true).await.expect("the old secret still verifies webhook-signature");
    assert!(verify_with_python(OLD, &during, false).await.is_err(), "X-Hub-Signature uses the new secret only");
    assert!(verify_with_python("another secret", &during, true).await.is_err());

    let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(300)).await;
    app.publish(json!({"topic": "t", "body": {"n": 2}})).await;
    let after = delivery_of(&subscriber, 1).await;
    assert_eq!(after.header("webhook-signature").unwrap().split(' ').count(), 1);
    verify_with_python(NEW, &after, false).await.expect("the new secret verifies");
    assert!(verify_with_python(OLD, &after, true).await.is_err(), "after the grace period the old one does not");
    let detail = app.admin_get(&format!("/subscriptions/{id}")).await;
    assert!(detail["subscription"]["previous_secret_until"].is_null(), "{detail}");
    app.stop().await;
}

#[tokio::test]
async fn an_operator_rotates_a_secret_with_its_own_grace_period_and_bad_requests_change_nothing() {
    let app = spawn_app_with(test_config(), Roles::ALL).await;
    let subscriber = Receiver::start().await;
    let subscription = app.subscribe_active("t", &subscriber.url("/hook"), &[("hub.secret", OLD)]).await;
    let id = subscription["id"].as_str().unwrap();
    let path = format!("/subscriptions/{id}/secret");
    let put = |body: serde_json::Value| app.client.put(app.url(&path)).bearer_auth(ADMIN_TOKEN).json(&body).send();

    for bad in [
        json!({"secret": "s".repeat(200)}),
        json!({"secret": "a\nb"}),
        json!({"secret": NEW, "grace_seconds": 2_592_001}),
        json!({"secret": NEW, "grace_seconds": -1}),
        json!({"secret": NEW, "extra": 1}),
    ] {
        assert_eq!(put(bad.clone()).await.unwrap().status(), 400, "{bad}");
    }
    let stranger = app.client.put(app.url(&path)).json(&json!({"secret": NEW})).send().await.unwrap();
    assert_eq!(stranger.status(), 401);
    let unknown = format!("/subscriptions/{}/secret", uuid::Uuid::now_v7());
    let unknown = app.client.put(app.url(&unknown)).bearer_auth(ADMIN_TOKEN).json(&json!({"secret": NEW}));
    assert_eq!(unknown.send().await.unwrap().status(), 404);
    let unchanged = app.admin_get(&format!("/subscriptions/{id}")).await;
    assert!(unchanged["subscription"]["previous_secret_until"].is_null(), "a refused change changes nothing");

    let set = put(json!({"secret": NEW, "grace_seconds": 3600})).await.unwrap();
    assert_eq!(set.status(), 200);
    let set: serde_json::Value = set.json().await.unwrap();
    let until: chrono::DateTime<chrono::Utc> = set["previous_secret_until"].as_str().unwrap().parse().unwrap();
    let ahead = (until - chrono::Utc::now()).num_seconds();
    assert!((3590..=3600).contains(&ahead), "the grace ends in {ahead} s");
    app.publish(json!({"topic": "t", "body": 1})).await;
    let delivery = delivery_of(&subscriber, 0).await;
    verify_with_python(NEW, &delivery, false).await.expect("the new secret verifies");
    verify_with_python(OLD, &delivery, true).await.expect("the old one too, for an hour");

    let unsigned: serde_json::Value = put(json!({"secret": null})).await.unwrap().json().await.unwrap();
    assert_eq!((unsigned["has_secret"].as_bool(), unsigned["previous_secret_until"].is_null()), (Some(false), true));
    app.publish(json!({"topic": "t", "body": 2})).await;
    let delivery = delivery_of(&subscriber, 1).await;
    assert_eq!((delivery.header("webhook-signature"), delivery.header("x-hub-signature")), (None, None));
    app.stop().await;
}
