//! The operations API: publish authentication, search, progress, statistics, replay, redelivery, policies.

use std::time::Duration;

use serde_json::{json, Value};
use tidings::{app::Roles, http::api::auth::publish_signature};

use crate::{
    helpers::{eventually, spawn_app, spawn_app_with, test_config, TestApp, ADMIN_TOKEN},
    receiver::Receiver,
    spreader::insert_subscription,
};

const WAIT: Duration = Duration::from_secs(15);

impl TestApp {
    pub async fn admin_send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    /// Waits until every event is spread and no delivery job is pending (one query, so one snapshot).
    pub async fn settle(&self) {
        eventually(WAIT, "every delivery to settle", || async {
            let settled: bool = sqlx::query_scalar(
                "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE state = 'pending')
                    AND NOT EXISTS (SELECT 1 FROM events e, spreader_cursor c WHERE (e.txid, e.position) > (c.txid, c.position))",
            )
            .fetch_one(&self.pool)
            .await
            .unwrap();
            settled.then_some(())
        })
        .await
    }
}

#[tokio::test]
async fn publishing_needs_a_publish_token_once_tokens_are_configured() {
    let mut config = test_config();
    config.http.publish_tokens = Some(tidings::config::Secret("pub-one, pub-two".into()));
    let app = spawn_app_with(config, Roles::API).await;
    let event = json!({"topic": "t", "body": 1});
    let post = |token: Option<&str>| {
        let r = app.client.post(app.url("/events")).json(&event);
        match token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    };
    assert_eq!(post(None).send().await.unwrap().status(), 401);
    assert_eq!(post(Some("pub-three")).send().await.unwrap().status(), 401);
    assert_eq!(post(Some("pub-on")).send().await.unwrap().status(), 401);
    assert_eq!(post(Some("pub-two")).send().await.unwrap().status(), 201);
    assert_eq!(post(Some(ADMIN_TOKEN)).send().await.unwrap().status(), 201);
    let thin = app.post_form(&[("hub.mode", "publish"), ("hub.url", "http://127.0.0.1:9/feed")]).await;
    assert_eq!(thin.status(), 401);
    assert_eq!(app.event_count().await, 2);
    app.stop().await;
}

#[tokio::test]
async fn publishing_with_an_hmac_signed_body_is_accepted_and_forgeries_are_not() {
    let mut config = test_config();
    config.http.publish_hmac_key = Some(tidings::config::Secret("shared-key".into()));
    let app = spawn_app_with(config, Roles::API).await;
    let body = json!({"topic": "t", "body": {"n": 1}}).to_string();
    let now = chrono::Utc::now().timestamp();
    let send = |ts: i64, signature: String, body: String| {
        app.client
            .post(app.url("/events"))
            .header("content-type", "application/json")
            .header("x-tidings-timestamp", ts.to_string())
            .header("x-tidings-signature", signature)
            .body(body)
            .send()
    };
    let good = publish_signature("shared-key", now, body.as_bytes());
    assert_eq!(send(now, good.clone(), body.clone()).await.unwrap().status(), 201);
    let other_body = json!({"topic": "t", "body": {"n": 2}}).to_string();
    assert_eq!(send(now, good.clone(), other_body).await.unwrap().status(), 401, "a signature for another body");
    let wrong_key = publish_signature("not-the-key", now, body.as_bytes());
    assert_eq!(send(now, wrong_key, body.clone()).await.unwrap().status(), 401);
    let old = now - 3600;
    let stale = publish_signature("shared-key", old, body.as_bytes());
    let response = send(old, stale, body.clone()).await.unwrap();
    assert_eq!(response.status(), 401, "an old signed request cannot be replayed");
    assert!(response.text().await.unwrap().contains("five minutes"));
    assert_eq!(send(now + 1, good, body).await.unwrap().status(), 401, "the timestamp is signed");
    assert_eq!(app.event_count().await, 1);
    app.stop().await;
}

#[tokio::test]
async fn events_can_be_searched_by_topic_tag_group_and_time_with_pagination() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    for i in 0..6 {
        let tags = if i % 2 == 0 { json!(["even"]) } else { json!(["odd"]) };
        let group = if i < 3 { "first" } else { "second" };
        app.publish(json!({"topic": if i < 4 { "a" } else { "b" }, "body": i, "tags": tags, "group_id": group})).await;
    }
    let bodies = |page: &Value| -> Vec<i64> {
        page["events"].as_array().unwrap().iter().map(|e| e["body"].as_i64().unwrap()).collect()
    };
    assert_eq!(bodies(&app.admin_get("/events?tag=even").await), [0, 2, 4]);
    assert_eq!(bodies(&app.admin_get("/events?group_id=second").await), [3, 4, 5]);
    assert_eq!(bodies(&app.admin_get("/events?topic=a&tag=odd").await), [1, 3]);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    assert_eq!(bodies(&app.admin_get(&format!("/events?since={}", enc(&future))).await), Vec::<i64>::new());
    assert_eq!(bodies(&app.admin_get(&format!("/events?until={}", enc(&future))).await).len(), 6);
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = app.admin_get(&format!("/events?limit=4&after={after}")).await;
        if page["events"].as_array().unwrap().is_empty() {
            break;
        }
        seen.extend(bodies(&page));
        after = page["next_after"].as_i64().unwrap();
    }
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
    let bad = app.client.get(app.url("/events?limit=0")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    app.stop().await;
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn progress_statistics_and_delivery_search_match_what_was_delivered() {
    let app = spawn_app().await;
    let good = Receiver::start().await;
    let bad = Receiver::start().await;
    bad.set_status(500);
    let ok = app.subscribe_active("orders", &good.url("/ok"), &[]).await;
    let failing = app.subscribe_active("orders", &bad.url("/fail"), &[]).await;
    let batch: Vec<_> = (0..3).map(|i| json!({"topic": "orders", "body": i, "group_id": "import-7"})).collect();
    app.publish(json!({ "events": batch })).await;
    app.settle().await;
    let progress = app.admin_get("/groups/import-7/progress").await;
    assert_eq!(progress, json!({"events": 3, "pending": 0, "retrying": 0, "delivered": 3, "dead": 3, "cancelled": 0}));

    let stats = app.admin_get("/stats?topic=orders").await;
    let topic = &stats["by_topic"][0];
    assert_eq!(
        (topic["topic"].as_str(), topic["delivered"].as_i64(), topic["dead"].as_i64()),
        (Some("orders"), Some(3), Some(3))
    );
    assert_eq!(topic["attempts"], 3 + 3 * 3, "one attempt each for the good subscriber, three for the failing one");
    assert_eq!(topic["success_rate"], 0.5);
    assert!(topic["latency_p99_ms"].as_f64().unwrap() > 0.0);
    let per_subscription = stats["by_subscription"].as_array().unwrap();
    let of = |id: &Value| per_subscription.iter().find(|s| s["subscription_id"] == *id).unwrap().clone();
    assert_eq!(of(&ok["id"])["success_rate"], 1.0);
    assert_eq!(of(&failing["id"])["failed_attempts"], 9);

    let dead = app
        .admin_get(&format!("/deliveries?subscription_id={}&state=dead&limit=2", failing["id"].as_str().unwrap()))
        .await;
    assert_eq!(dead["deliveries"].as_array().unwrap().len(), 2);
    let rest = app
        .admin_get(&format!(
            "/deliveries?subscription_id={}&state=dead&after={}",
            failing["id"].as_str().unwrap(),
            dead["next_after"]
        ))
        .await;
    assert_eq!(rest["deliveries"].as_array().unwrap().len(), 1);
    let event_id = app.admin_get("/events?topic=orders&limit=1").await["events"][0]["id"].as_str().unwrap().to_owned();
    let for_event = app.admin_get(&format!("/deliveries?event_id={event_id}")).await;
    assert_eq!(for_event["deliveries"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn redelivering_a_subscriptions_dead_deliveries_resends_them_once() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    subscriber.set_status(500);
    let subscription = app.subscribe_active("t", &subscriber.url("/hook"), &[]).await;
    let id = subscription["id"].as_str().unwrap();
    app.publish(json!([{"topic": "t", "body": 1}, {"topic": "t", "body": 2}])).await;
    app.settle().await;
    subscriber.set_status(204);
    let first = app.admin_send(reqwest::Method::POST, &format!("/subscriptions/{id}/redeliver-dead"), None).await;
    assert_eq!(first.json::<Value>().await.unwrap()["redelivered"], 2);
    app.settle().await;
    let again = app.admin_send(reqwest::Method::POST, &format!("/subscriptions/{id}/redeliver-dead"), None).await;
    assert_eq!(again.json::<Value>().await.unwrap()["redelivered"], 0);
    let delivered = app.admin_get(&format!("/deliveries?subscription_id={id}&state=delivered&kind=deliver")).await;
    assert_eq!(delivered["deliveries"].as_array().unwrap().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn replaying_a_subscription_creates_jobs_for_the_events_it_missed_and_nothing_on_a_repeat() {
    // No spreader: the events were published before the subscription existed, and only a replay gives them jobs.
    let app = spawn_app_with(test_config(), Roles::API).await;
    app.publish(json!((0..5).map(|i| json!({"topic": "shop.orders", "body": i})).collect::<Vec<_>>())).await;
    app.publish(json!({"topic": "other", "body": 0})).await;
    let id = insert_subscription(&app.pool, "shop.*", "http://127.0.0.1:1/hook", "active").await;
    let path = format!("/subscriptions/{id}/replay");
    let replay = |body: Value| app.admin_send(reqwest::Method::POST, &path, Some(body));
    let bounded: Value = replay(json!({"from_position": 0, "limit": 3})).await.json().await.unwrap();
    assert_eq!(bounded["created"], 3);
    let next = bounded["next_position"].as_i64().expect("a bounded replay says where to continue");
    let rest: Value = replay(json!({"from_position": next})).await.json().await.unwrap();
    assert_eq!(rest, json!({"created": 2, "next_position": null}));
    let repeat: Value = replay(json!({"from_position": 0})).await.json().await.unwrap();
    assert_eq!(repeat["created"], 0);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subscription_id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 5);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none: Value = replay(json!({"from_time": future})).await.json().await.unwrap();
    assert_eq!(none["created"], 0);
    app.stop().await;
}

#[tokio::test]
async fn an_operator_can_end_a_subscription() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let id = insert_subscription(&app.pool, "t", "http://127.0.0.1:1/hook", "active").await;
    let ended = app.admin_send(reqwest::Method::POST, &format!("/subscriptions/{id}/end"), None).await;
    assert_eq!(ended.json::<Value>().await.unwrap()["state"], "unsubscribed");
    let twice = app.admin_send(reqwest::Method::POST, &format!("/subscriptions/{id}/end"), None).await;
    assert_eq!(twice.status(), 409);
    let history = app.admin_get(&format!("/subscriptions/{id}")).await;
    assert_eq!(history["history"][0]["change"]["reason"], "ended by an operator");
    app.stop().await;
}

#[tokio::test]
async fn topic_policies_refuse_content_that_breaks_them_with_422_and_write_nothing() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let policy = json!({"topic": "orders.*", "max_bytes": 200, "content_types": ["application/json"], "json_schema": {
        "type": "object", "required": ["amount"], "properties": {"amount": {"type": "number", "minimum": 0}}}});
    let put = app.admin_send(reqwest::Method::PUT, "/policies", Some(policy)).await;
    assert_eq!(put.status(), 200);
    let cases = [
        (json!({"topic": "orders.created", "body": {"amount": "ten"}}), "/amount"),
        (json!({"topic": "orders.created", "body": {"total": 1}}), "amount"),
        (json!({"topic": "orders.created", "body": {"amount": 1, "pad": "x".repeat(300)}}), "more than the 200"),
        (json!({"topic": "orders.created", "content_type": "text/plain", "body": "{\"amount\": 1}"}), "not one of"),
    ];
    for (event, reason) in cases {
        let response = app.publish(event.clone()).await;
        assert_eq!(response.status(), 422, "{event}");
        let text = response.text().await.unwrap();
        assert!(text.contains(reason) && text.contains("orders.*"), "{event}: {text}");
    }
    assert_eq!(app.event_count().await, 0);
    assert_eq!(app.publish(json!({"topic": "orders.created", "body": {"amount": 10}})).await.status(), 201);
    assert_eq!(app.publish(json!({"topic": "invoices", "body": "anything"})).await.status(), 201);
    let invalid = app
        .admin_send(reqwest::Method::PUT, "/policies", Some(json!({"topic": "t", "json_schema": {"type": 5}})))
        .await;
    assert_eq!(invalid.status(), 400);
    let listed = app.admin_get("/policies").await;
    assert_eq!(listed["policies"].as_array().unwrap().len(), 1);
    let deleted = app.admin_send(reqwest::Method::DELETE, "/policies?topic=orders.*", None).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.publish(json!({"topic": "orders.created", "body": {"amount": "ten"}})).await.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn every_admin_route_refuses_a_missing_or_wrong_token() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let id = uuid::Uuid::now_v7();
    let routes = [
        ("GET", "/events".to_owned()),
        ("GET", "/fetches".to_owned()),
        ("GET", "/subscriptions".to_owned()),
        ("GET", format!("/subscriptions/{id}")),
        ("POST", format!("/subscriptions/{id}/replay")),
        ("POST", format!("/subscriptions/{id}/redeliver-dead")),
        ("POST", format!("/subscriptions/{id}/end")),
        ("GET", "/deliveries".to_owned()),
        ("GET", "/deliveries/1".to_owned()),
        ("POST", "/deliveries/1/redeliver".to_owned()),
        ("GET", "/groups/g/progress".to_owned()),
        ("GET", "/stats".to_owned()),
        ("GET", "/dry-run?topic=t".to_owned()),
        ("GET", "/spreader".to_owned()),
        ("GET", "/policies".to_owned()),
        ("PUT", "/policies".to_owned()),
        ("DELETE", "/policies?topic=t".to_owned()),
    ];
    for (method, path) in routes {
        let method: reqwest::Method = method.parse().unwrap();
        for token in [None, Some("wrong"), Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])] {
            let mut request = app.client.request(method.clone(), app.url(&path));
            if let Some(t) = token {
                request = request.bearer_auth(t);
            }
            assert_eq!(request.send().await.unwrap().status(), 401, "{method} {path} with {token:?}");
        }
    }
    app.stop().await;
}
