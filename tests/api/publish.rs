//! Publishing: fat pings (JSON and raw), thin pings, idempotency, the append-only log, and bad input.

use std::time::Duration;

use serde_json::json;
use tidings::app::Roles;

use crate::{
    helpers::{eventually, spawn_app, spawn_app_with, test_config, ADMIN_TOKEN},
    receiver::Receiver,
};

#[tokio::test]
async fn a_published_json_event_lands_in_the_log_exactly_as_sent() {
    let app = spawn_app().await;
    let response = app
        .publish(
            json!({"topic": "orders.created", "body": {"order": 42}, "tags": ["eu", "vip"], "group_id": "batch-1"}),
        )
        .await;
    assert_eq!(response.status(), 201);
    let created: serde_json::Value = response.json().await.unwrap();
    let page = app.admin_get("/events").await;
    let event = &page["events"][0];
    assert_eq!(event["id"], created["id"]);
    assert_eq!(event["position"], created["position"]);
    assert_eq!(event["topic"], "orders.created");
    assert_eq!(event["content_type"], "application/json");
    assert_eq!(event["body"], json!({"order": 42}));
    assert_eq!(event["tags"], json!(["eu", "vip"]));
    assert_eq!(event["group_id"], "batch-1");
    app.stop().await;
}

#[tokio::test]
async fn a_batch_is_written_in_order_and_all_or_nothing() {
    let app = spawn_app().await;
    let batch: Vec<_> =
        (0..3).map(|i| json!({"topic": "t", "content_type": "text/plain", "body": format!("n{i}")})).collect();
    let response = app.publish(json!({ "events": batch })).await;
    assert_eq!(response.status(), 201);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["events"].as_array().unwrap().len(), 3);
    let page = app.admin_get("/events").await;
    let bodies: Vec<_> =
        page["events"].as_array().unwrap().iter().map(|e| e["body"].as_str().unwrap().to_owned()).collect();
    assert_eq!(bodies, ["n0", "n1", "n2"]);

    let bad = json!([{"topic": "t", "body": 1}, {"topic": "", "body": 2}]);
    let response = app.publish(bad).await;
    assert_eq!(response.status(), 400);
    assert!(response.text().await.unwrap().contains("event 1: topic: the topic is empty"));
    assert_eq!(app.event_count().await, 3);
    app.stop().await;
}

#[tokio::test]
async fn a_raw_body_is_stored_byte_for_byte_with_its_content_type() {
    let app = spawn_app().await;
    let body: Vec<u8> = (0..=255u8).chain([0xff, 0x00, 0xfe]).collect();
    let response = app
        .client
        .post(app.url("/events/raw?topic=https%3A%2F%2Fexample.com%2Ffeed%3Fa%3D1&tag=x&tag=y&group_id=g"))
        .header("content-type", "application/octet-stream; profile=\"v1\"")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let (topic, content_type, stored, tags): (String, String, Vec<u8>, Vec<String>) =
        sqlx::query_as("SELECT topic, content_type, body, tags FROM events").fetch_one(&app.pool).await.unwrap();
    assert_eq!(topic, "https://example.com/feed?a=1");
    assert_eq!(content_type, "application/octet-stream; profile=\"v1\"");
    assert_eq!(stored, body);
    assert_eq!(tags, ["x", "y"]);
    app.stop().await;
}

#[tokio::test]
async fn republishing_an_id_with_the_same_content_writes_no_second_row() {
    let app = spawn_app().await;
    let event = json!({"id": "0190b7a2-8d55-7cc4-9a2f-1b2c3d4e5f60", "topic": "t", "body": {"a": 1}});
    let first = app.publish(event.clone()).await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = app.publish(event).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    assert_eq!(app.event_count().await, 1);

    let changed =
        app.publish(json!({"id": "0190b7a2-8d55-7cc4-9a2f-1b2c3d4e5f60", "topic": "t", "body": {"a": 2}})).await;
    assert_eq!(changed.status(), 409);
    assert_eq!(app.event_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_publishes_of_one_id_write_it_once_whatever_partition_holds_it() {
    let app = spawn_app().await;
    let id = "0190b7a2-8d55-7cc4-9a2f-1b2c3d4e5f61";
    let same = (0..16).map(|_| app.publish(json!({"id": id, "topic": "t", "body": {"a": 1}})));
    let statuses: Vec<u16> = futures_util::future::join_all(same).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 200), "{statuses:?}");
    let other = (0..8).map(|i| app.publish(json!({"id": id, "topic": "t", "body": {"a": 100 + i}})));
    let statuses: Vec<u16> = futures_util::future::join_all(other).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 409), "other content under the same id conflicts: {statuses:?}");
    assert_eq!(app.event_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn the_log_refuses_update_and_delete() {
    let app = spawn_app().await;
    app.publish(json!({"topic": "t", "body": 1})).await;
    for statement in ["UPDATE events SET topic = 'x'", "DELETE FROM events", "TRUNCATE events"] {
        let err = sqlx::query(statement).execute(&app.pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{statement}: {err}");
    }
    assert_eq!(app.event_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_thin_ping_fetches_the_topic_and_appends_its_body_and_content_type() {
    let app = spawn_app().await;
    let origin = Receiver::start().await;
    let topic = origin.url("/feed.atom");
    let response = app.post_form(&[("hub.mode", "publish"), ("hub.url", &topic)]).await;
    assert_eq!(response.status(), 202);
    let (content_type, body): (String, Vec<u8>) = eventually(Duration::from_secs(10), "the fetched event", || async {
        sqlx::query_as("SELECT content_type, body FROM events WHERE topic = $1")
            .bind(&topic)
            .fetch_optional(&app.pool)
            .await
            .unwrap()
    })
    .await;
    // The test origin answers GETs like a verification, with an empty challenge and its default type.
    assert_eq!(body, b"");
    assert!(
        content_type.starts_with("application/octet-stream") || content_type.starts_with("text/plain"),
        "{content_type}"
    );
    assert_eq!(origin.verifications().len(), 1);
    let fetches = app.admin_get(&format!("/fetches?topic={}", urlencode(&topic))).await;
    assert_eq!(fetches["fetches"][0]["state"], "fetched");
    app.stop().await;
}

#[tokio::test]
async fn a_failed_thin_ping_fetch_is_recorded_and_visible() {
    let app = spawn_app().await;
    let origin = Receiver::start().await;
    origin.set_verify(crate::receiver::VerifyReply::Status(404));
    let topic = origin.url("/missing");
    assert_eq!(app.post_form(&[("hub.mode", "publish"), ("hub.topic", &topic)]).await.status(), 202);
    let fetch = eventually(Duration::from_secs(10), "the failed fetch", || async {
        let page = app.admin_get("/fetches").await;
        let fetch = page["fetches"][0].clone();
        (fetch["status_code"] == 404).then_some(fetch)
    })
    .await;
    assert!(fetch["error"].as_str().unwrap().contains("404"), "{fetch}");
    assert_eq!(app.event_count().await, 0);
    app.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_with_a_reason_and_writes_nothing() {
    let mut config = test_config();
    config.http.max_body_bytes = 64 * 1024;
    let app = spawn_app_with(config, Roles::API).await;
    let json_post =
        |body: String| app.client.post(app.url("/events")).header("content-type", "application/json").body(body);
    let too_many: Vec<_> = (0..1001).map(|_| json!({"topic": "t", "body": 1})).collect();
    let cases = vec![
        ("malformed JSON", json_post("{\"topic\": ".into()), 400, "not valid JSON"),
        ("missing topic", json_post(r#"{"body": 1}"#.into()), 400, "missing field `topic`"),
        ("empty topic", json_post(r#"{"topic": "", "body": 1}"#.into()), 400, "topic is empty"),
        ("missing body", json_post(r#"{"topic": "t"}"#.into()), 400, "body"),
        (
            "bad content type",
            json_post(r#"{"topic": "t", "content_type": "nope", "body": "x"}"#.into()),
            400,
            "content type",
        ),
        ("batch over the limit", json_post(json!({ "events": too_many }).to_string()), 400, "at most 1000"),
        (
            "body over the size limit",
            json_post(format!(r#"{{"topic": "t", "body": "{}"}}"#, "x".repeat(70_000))),
            413,
            "size limit",
        ),
        ("publishing to a pattern", json_post(r#"{"topic": "a.*", "body": 1}"#.into()), 400, "pattern"),
        (
            "not JSON",
            app.client.post(app.url("/events")).header("content-type", "text/plain").body("x"),
            415,
            "application/json",
        ),
        (
            "raw without topic",
            app.client.post(app.url("/events/raw")).header("content-type", "text/plain").body("x"),
            400,
            "topic",
        ),
        ("raw without content type", app.client.post(app.url("/events/raw?topic=t")).body("x"), 400, "Content-Type"),
        (
            "raw with a bad id",
            app.client.post(app.url("/events/raw?topic=t&id=7")).header("content-type", "text/plain").body("x"),
            400,
            "UUID",
        ),
        ("unsupported hub.mode", form(&app, "hub.mode=fetch&hub.topic=t"), 400, "unsupported hub.mode"),
        ("missing hub.mode", form(&app, "hub.topic=t"), 400, "hub.mode is required"),
        ("thin ping without a URL", form(&app, "hub.mode=publish"), 400, "hub.url"),
        ("thin ping with a non-URL", form(&app, "hub.mode=publish&hub.url=not-a-url"), 400, "not a valid absolute URL"),
        (
            "non-form body on the hub",
            app.client.post(app.url("/")).header("content-type", "application/json").body("{}"),
            415,
            "x-www-form-urlencoded",
        ),
    ];
    for (name, request, status, reason) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let text = response.text().await.unwrap();
        assert!(text.contains(reason), "{name}: {text}");
    }
    assert_eq!(app.event_count().await, 0);
    let fetches: i64 = sqlx::query_scalar("SELECT count(*) FROM topic_fetches").fetch_one(&app.pool).await.unwrap();
    assert_eq!(fetches, 0);
    app.stop().await;
}

#[tokio::test]
async fn reading_after_a_position_returns_the_later_events_in_order() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    for i in 0..5 {
        let topic = if i % 2 == 0 { "even" } else { "odd" };
        app.publish(json!({"topic": topic, "body": i})).await;
    }
    let first = app.admin_get("/events?limit=2").await;
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    let next = first["next_after"].as_i64().unwrap();
    let rest = app.admin_get(&format!("/events?after={next}")).await;
    let bodies: Vec<_> = rest["events"].as_array().unwrap().iter().map(|e| e["body"].as_i64().unwrap()).collect();
    assert_eq!(bodies, [2, 3, 4]);
    let even = app.admin_get("/events?topic=even").await;
    let bodies: Vec<_> = even["events"].as_array().unwrap().iter().map(|e| e["body"].as_i64().unwrap()).collect();
    assert_eq!(bodies, [0, 2, 4]);
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_health_checks_do_not() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let anonymous = app.client.get(app.url("/events")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let wrong = app.client.get(app.url("/events")).bearer_auth(format!("{ADMIN_TOKEN}x")).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().text().await.unwrap(), "ready\n");
    app.stop().await;
}

fn form(app: &crate::helpers::TestApp, body: &'static str) -> reqwest::RequestBuilder {
    app.client.post(app.url("/")).header("content-type", "application/x-www-form-urlencoded").body(body)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
