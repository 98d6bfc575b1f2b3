//! Per-subscription custom headers: asked for with `hub.x-header`, set by the admin API, sent with every
//! delivery to a real receiver; the hub's own and framing headers are refused.

use std::time::Duration;

use serde_json::json;

use crate::{
    helpers::{eventually, spawn_app, ADMIN_TOKEN},
    receiver::{Received, Receiver},
};

async fn delivery_of(subscriber: &Receiver, n: usize) -> Received {
    eventually(Duration::from_secs(10), "a delivery", || async { subscriber.deliveries().get(n).cloned() }).await
}

#[tokio::test]
async fn a_subscriber_gets_its_custom_headers_with_every_delivery_a_renewal_keeps_them_and_an_empty_one_clears() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let callback = subscriber.url("/hook");
    let extra =
        [("hub.x-header", "X-Tenant: acme"), ("hub.x-header", "Authorization: Bearer s3cret"), ("hub.secret", "k")];
    let subscription = app.subscribe_active("t", &callback, &extra).await;
    assert_eq!(subscription["headers"], json!({"X-Tenant": "acme", "Authorization": "Bearer s3cret"}));

    app.publish(json!({"topic": "t", "body": {"n": 1}})).await;
    let first = delivery_of(&subscriber, 0).await;
    assert_eq!(first.header("x-tenant"), Some("acme"));
    assert_eq!(first.header("authorization"), Some("Bearer s3cret"));
    assert!(first.header("x-hub-signature").is_some() && first.header("webhook-signature").is_some());
    assert!(first.header("link").unwrap().contains("rel=\"hub\""), "the hub's own headers are all still there");

    let id = subscription["id"].as_str().unwrap();
    assert_eq!(app.subscribe("t", &callback, &[("hub.secret", "k")]).await.status(), 202);
    app.settled_requests(id).await;
    app.publish(json!({"topic": "t", "body": {"n": 2}})).await;
    assert_eq!(delivery_of(&subscriber, 1).await.header("x-tenant"), Some("acme"), "a renewal keeps the headers");

    assert_eq!(app.subscribe("t", &callback, &[("hub.x-header", "")]).await.status(), 202);
    app.settled_requests(id).await;
    app.publish(json!({"topic": "t", "body": {"n": 3}})).await;
    let third = delivery_of(&subscriber, 2).await;
    assert_eq!((third.header("x-tenant"), third.header("authorization")), (None, None), "an empty one clears them");
    app.stop().await;
}

#[tokio::test]
async fn a_forbidden_or_malformed_header_gets_a_400_naming_it_and_stores_nothing() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    for (header, says) in [
        ("Host: evil.example", "Host is set by the hub"),
        ("Content-Length: 0", "Content-Length is set by the hub"),
        ("X-Hub-Signature: sha256=forged", "X-Hub-Signature is set by the hub"),
        ("webhook-signature: v1,forged", "webhook-signature is set by the hub"),
        ("Link: <http://evil>; rel=hub", "Link is set by the hub"),
        ("Transfer-Encoding: chunked", "Transfer-Encoding is set by the hub"),
        ("X-Split: a\r\nX-Injected: b", "value of X-Split"),
        ("Not A Name: x", "not a valid header name"),
        ("no colon at all", "Name: value"),
    ] {
        let response = app.subscribe("t", &subscriber.url("/cb"), &[("hub.x-header", header)]).await;
        assert_eq!(response.status(), 400, "{header:?}");
        let body = response.text().await.unwrap();
        assert!(body.contains("hub.x-header") && body.contains(says), "{header:?}: {body}");
    }
    let eleven: Vec<(&str, String)> = (0..11).map(|i| ("hub.x-header", format!("X-{i}: v"))).collect();
    let eleven: Vec<(&str, &str)> = eleven.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(app.subscribe("t", &subscriber.url("/cb"), &eleven).await.status(), 400);
    assert_eq!(app.count("SELECT count(*) FROM subscriptions").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM subscription_requests").await, 0);
    assert!(subscriber.received().is_empty(), "no verification was sent");
    app.stop().await;
}

#[tokio::test]
async fn an_operator_replaces_and_removes_custom_headers_and_the_next_delivery_carries_the_change() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    let subscription = app.subscribe_active("t", &subscriber.url("/hook"), &[]).await;
    let id = subscription["id"].as_str().unwrap();
    let path = format!("/subscriptions/{id}/headers");
    let put = |body: serde_json::Value| app.client.put(app.url(&path)).bearer_auth(ADMIN_TOKEN).json(&body).send();

    let set: serde_json::Value = put(json!({"X-Team": "payments"})).await.unwrap().json().await.unwrap();
    assert_eq!(set["headers"], json!({"X-Team": "payments"}));
    for bad in [json!({"Host": "x"}), json!({"X-A": "a\nb"}), json!({"X A": "x"}), json!(["X-A", "b"]), json!({"X": 1})]
    {
        let response = put(bad.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }
    let stranger = app.client.put(app.url(&path)).json(&json!({"X-A": "b"})).send().await.unwrap();
    assert_eq!(stranger.status(), 401);
    let unknown = app.client.delete(app.url(&format!("/subscriptions/{}/headers", uuid::Uuid::now_v7())));
    assert_eq!(unknown.bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), 404);
    let detail = app.admin_get(&format!("/subscriptions/{id}")).await;
    assert_eq!(detail["subscription"]["headers"], json!({"X-Team": "payments"}), "a refused change changes nothing");

    app.publish(json!({"topic": "t", "body": 1})).await;
    assert_eq!(delivery_of(&subscriber, 0).await.header("x-team"), Some("payments"));
    let removed = app.client.delete(app.url(&path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(removed.json::<serde_json::Value>().await.unwrap()["headers"], json!({}));
    app.publish(json!({"topic": "t", "body": 2})).await;
    assert_eq!(delivery_of(&subscriber, 1).await.header("x-team"), None);
    app.stop().await;
}
