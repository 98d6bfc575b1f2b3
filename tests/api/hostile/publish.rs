//! Publishing: malformed events, oversized batches and bodies, wrong content types, forged credentials.

use reqwest::Method;
use serde_json::json;
use tidings::http::api::auth::publish_signature;

use super::{assert_all_refused, hostile_hub, Case, HMAC_KEY, PUBLISH_TOKEN};

fn event() -> serde_json::Value {
    json!({"topic": "hostile.topic", "body": {"n": 1}})
}

fn malformed_events() -> Vec<Case> {
    let mut cases = Vec::new();
    for (name, body) in [
        ("an empty body", "".to_owned()),
        ("truncated JSON", r#"{"topic": "a", "body": {"n""#.to_owned()),
        ("a number", "42".to_owned()),
        ("a string", r#""event""#.to_owned()),
        ("null", "null".to_owned()),
        ("an empty batch", "[]".to_owned()),
        ("an empty events batch", r#"{"events": []}"#.to_owned()),
        ("a batch beside other fields", r#"{"events": [{"topic": "a", "body": 1}], "x": 1}"#.to_owned()),
        ("events that are not a list", r#"{"events": {"topic": "a", "body": 1}}"#.to_owned()),
        ("an unknown field", r#"{"topic": "a", "body": 1, "admin": true}"#.to_owned()),
        ("no topic", r#"{"body": 1}"#.to_owned()),
        ("an empty topic", r#"{"topic": "", "body": 1}"#.to_owned()),
        ("a topic that is a number", r#"{"topic": 5, "body": 1}"#.to_owned()),
        ("a topic with CR LF", r#"{"topic": "a\r\nLink: <x>", "body": 1}"#.to_owned()),
        ("a topic with NUL", r#"{"topic": "a\u0000b", "body": 1}"#.to_owned()),
        ("a topic with a space", r#"{"topic": "a b", "body": 1}"#.to_owned()),
        ("a pattern topic", r#"{"topic": "a.*", "body": 1}"#.to_owned()),
        ("the match-all pattern", r#"{"topic": "*", "body": 1}"#.to_owned()),
        ("a topic of 1025 bytes", format!(r#"{{"topic": "{}", "body": 1}}"#, "t".repeat(1025))),
        ("no body", r#"{"topic": "a"}"#.to_owned()),
        ("body and body_base64", r#"{"topic": "a", "body": 1, "body_base64": "AA=="}"#.to_owned()),
        ("invalid base64", r#"{"topic": "a", "body_base64": "!!!"}"#.to_owned()),
        (
            "a content type with CR LF",
            r#"{"topic": "a", "body": "x", "content_type": "text/plain\r\nX-Injected: yes"}"#.to_owned(),
        ),
        ("a content type with NUL", r#"{"topic": "a", "body": "x", "content_type": "text/plain\u0000"}"#.to_owned()),
        ("a content type without subtype", r#"{"topic": "a", "body": "x", "content_type": "text"}"#.to_owned()),
        (
            "a content type of 1000 bytes",
            format!(r#"{{"topic": "a", "body": "x", "content_type": "text/{}"}}"#, "p".repeat(1000)),
        ),
        ("a non-string body for text", r#"{"topic": "a", "body": 1, "content_type": "text/plain"}"#.to_owned()),
        ("an id that is not a UUID", r#"{"topic": "a", "body": 1, "id": "1 OR 1=1"}"#.to_owned()),
        ("a tag with LF", r#"{"topic": "a", "body": 1, "tags": ["a\nb"]}"#.to_owned()),
        ("an empty tag", r#"{"topic": "a", "body": 1, "tags": [""]}"#.to_owned()),
        ("a tag of 10 kB", format!(r#"{{"topic": "a", "body": 1, "tags": ["{}"]}}"#, "t".repeat(10_000))),
        (
            "a thousand tags",
            format!(
                r#"{{"topic": "a", "body": 1, "tags": [{}]}}"#,
                (0..1000).map(|i| format!("\"t{i}\"")).collect::<Vec<_>>().join(",")
            ),
        ),
        ("a group id with NUL", r#"{"topic": "a", "body": 1, "group_id": "g\u0000"}"#.to_owned()),
        ("a group id with CR", r#"{"topic": "a", "body": 1, "group_id": "g\r"}"#.to_owned()),
        ("an empty group id", r#"{"topic": "a", "body": 1, "group_id": ""}"#.to_owned()),
        ("a lone surrogate escape", r#"{"topic": "a\ud800", "body": 1}"#.to_owned()),
        ("nesting 10000 deep", format!(r#"{{"topic": "a", "body": {}{}}}"#, "[".repeat(10_000), "]".repeat(10_000))),
        ("a batch whose last event is bad", json!([event(), event(), {"topic": "", "body": 1}]).to_string()),
        ("a batch whose first event is bad", json!({"events": [{"topic": "a\nb", "body": 1}, event()]}).to_string()),
        ("a batch of 1001 events", serde_json::Value::Array(vec![event(); 1001]).to_string()),
        ("a batch of 1001 in events", json!({"events": vec![event(); 1001]}).to_string()),
    ] {
        cases.push(Case::json(name, body));
    }
    cases.push(Case::json("raw invalid UTF-8", b"{\"topic\": \"a\xff\", \"body\": 1}".to_vec()));
    cases.push(Case::json("a body of 2 MiB", json!({"topic": "a", "body": "x".repeat(2 * 1024 * 1024)}).to_string()));
    let valid = event().to_string();
    for content_type in
        [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("application/xml"), Some("json")]
    {
        let mut case = Case::new(format!("an event sent as {content_type:?}"), Method::POST, "/events")
            .header("authorization", format!("Bearer {PUBLISH_TOKEN}"))
            .body(valid.clone());
        if let Some(content_type) = content_type {
            case = case.header("content-type", content_type);
        }
        cases.push(case);
    }
    cases
}

fn raw(name: &str, query: &str) -> Case {
    Case::new(name, Method::POST, format!("/events/raw?{query}"))
        .header("authorization", format!("Bearer {PUBLISH_TOKEN}"))
        .header("content-type", "text/plain")
        .body("hello")
}

fn malformed_raw_events() -> Vec<Case> {
    let mut cases = vec![
        raw("no topic", ""),
        raw("an empty topic", "topic="),
        raw("a topic with CR LF", "topic=a%0D%0ALink:%20x"),
        raw("a topic with NUL", "topic=a%00"),
        raw("a topic with a bad escape", "topic=a%ZZ"),
        raw("a topic with invalid UTF-8", "topic=a%FF"),
        raw("a pattern topic", "topic=a.*"),
        raw("a topic of 1025 bytes", &format!("topic={}", "t".repeat(1025))),
        raw("an id that is not a UUID", "topic=a&id=x"),
        raw("an unknown parameter", "topic=a&admin=true"),
        raw("a tag with LF", "topic=a&tag=a%0Ab"),
        raw("a group id with NUL", "topic=a&group_id=%00"),
        raw("a topic given twice", "topic=a&topic=b"),
    ];
    cases.push(
        Case::new("no content type", Method::POST, "/events/raw?topic=a")
            .header("authorization", format!("Bearer {PUBLISH_TOKEN}"))
            .body("hello"),
    );
    for content_type in ["text", "text/ plain", "/plain", "text/pl ain", "text/plain/x"] {
        cases.push(
            Case::new(format!("the content type {content_type:?}"), Method::POST, "/events/raw?topic=a")
                .header("authorization", format!("Bearer {PUBLISH_TOKEN}"))
                .header("content-type", content_type)
                .body("hello"),
        );
    }
    cases.push(raw("an idempotency key that is not a UUID", "topic=a").header("idempotency-key", "not-a-uuid"));
    cases.push(raw("a body of 2 MiB", "topic=a").body(vec![b'x'; 2 * 1024 * 1024]));
    cases
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn signed(name: &str, timestamp: impl Into<String>, signature: impl Into<String>, body: &str) -> Case {
    Case::new(name, Method::POST, "/events")
        .header("content-type", "application/json")
        .header("x-tidings-timestamp", timestamp)
        .header("x-tidings-signature", signature)
        .body(body.to_owned())
}

fn forged_credentials() -> Vec<Case> {
    let body = event().to_string();
    let other = json!({"topic": "hostile.topic", "body": {"n": 2}}).to_string();
    let unsigned = |name: &str| {
        Case::new(name, Method::POST, "/events").header("content-type", "application/json").body(body.clone())
    };
    let mut cases = vec![unsigned("no credentials")];
    for (name, authorization) in [
        ("a wrong token", "Bearer wrong-token".to_owned()),
        ("an empty token", "Bearer ".to_owned()),
        ("a token with a suffix", format!("Bearer {PUBLISH_TOKEN}x")),
        ("a token cut short", format!("Bearer {}", &PUBLISH_TOKEN[..PUBLISH_TOKEN.len() - 1])),
        ("a token in capitals", format!("Bearer {}", PUBLISH_TOKEN.to_uppercase())),
        ("both tokens as one", format!("Bearer {PUBLISH_TOKEN}, second-publish-token")),
        ("a token with a space before it", format!("Bearer  {PUBLISH_TOKEN}")),
        ("the token as Basic", format!("Basic {PUBLISH_TOKEN}")),
        ("the token without a scheme", PUBLISH_TOKEN.to_owned()),
        ("the HMAC key as a token", format!("Bearer {HMAC_KEY}")),
        ("a previous token", "Bearer publish-token-retired".to_owned()),
    ] {
        cases.push(unsigned(name).header("authorization", authorization));
    }
    let ts = now();
    let good = publish_signature(HMAC_KEY, ts, body.as_bytes());
    let hex_part = good.trim_start_matches("sha256=").to_owned();
    cases.extend([
        signed(
            "a signature under a wrong key",
            ts.to_string(),
            publish_signature("wrong-key", ts, body.as_bytes()),
            &body,
        ),
        signed("a signature of another body", ts.to_string(), publish_signature(HMAC_KEY, ts, other.as_bytes()), &body),
        signed(
            "a signature of a truncated body",
            ts.to_string(),
            publish_signature(HMAC_KEY, ts, &body.as_bytes()[1..]),
            &body,
        ),
        signed("a signature for another timestamp", (ts - 1).to_string(), good.clone(), &body),
        signed(
            "a stale timestamp",
            (ts - 400).to_string(),
            publish_signature(HMAC_KEY, ts - 400, body.as_bytes()),
            &body,
        ),
        signed(
            "a replayed request from an hour ago",
            (ts - 3600).to_string(),
            publish_signature(HMAC_KEY, ts - 3600, body.as_bytes()),
            &body,
        ),
        signed(
            "a future timestamp",
            (ts + 400).to_string(),
            publish_signature(HMAC_KEY, ts + 400, body.as_bytes()),
            &body,
        ),
        signed(
            "a timestamp far in the future",
            i64::MAX.to_string(),
            publish_signature(HMAC_KEY, i64::MAX, body.as_bytes()),
            &body,
        ),
        signed(
            "a most negative timestamp",
            i64::MIN.to_string(),
            publish_signature(HMAC_KEY, i64::MIN, body.as_bytes()),
            &body,
        ),
        signed(
            "a timestamp in milliseconds",
            (ts * 1000).to_string(),
            publish_signature(HMAC_KEY, ts * 1000, body.as_bytes()),
            &body,
        ),
        signed("a timestamp that is not a number", "now", good.clone(), &body),
        signed("a fractional timestamp", format!("{ts}.0"), good.clone(), &body),
        signed("an empty timestamp", "", good.clone(), &body),
        signed("a malformed hex signature", ts.to_string(), format!("sha256={}", "zz".repeat(32)), &body),
        signed("a signature cut short", ts.to_string(), good[..good.len() - 2].to_owned(), &body),
        signed("a signature without its prefix", ts.to_string(), hex_part.clone(), &body),
        signed("a signature with another prefix", ts.to_string(), format!("sha1={hex_part}"), &body),
        signed("an empty signature", ts.to_string(), "", &body),
        signed("a signature of zeros", ts.to_string(), format!("sha256={}", "0".repeat(64)), &body),
        Case::new("a signature without a timestamp", Method::POST, "/events")
            .header("content-type", "application/json")
            .header("x-tidings-signature", good.clone())
            .body(body.clone()),
        Case::new("a timestamp without a signature", Method::POST, "/events")
            .header("content-type", "application/json")
            .header("x-tidings-timestamp", ts.to_string())
            .body(body.clone()),
        signed("a wrong token beside a valid signature", ts.to_string(), good.clone(), &body)
            .header("authorization", "Bearer wrong-token"),
        Case::new("a raw event under a wrong token", Method::POST, "/events/raw?topic=a")
            .header("content-type", "text/plain")
            .header("authorization", "Bearer wrong-token")
            .body("hello"),
        Case::new("a raw event signed over another body", Method::POST, "/events/raw?topic=a")
            .header("content-type", "text/plain")
            .header("x-tidings-timestamp", ts.to_string())
            .header("x-tidings-signature", publish_signature(HMAC_KEY, ts, b"other"))
            .body("hello"),
        Case::form(
            "a thin ping without credentials",
            &[("hub.mode", "publish"), ("hub.url", "http://93.184.216.34/feed")],
        ),
        Case::form(
            "a thin ping under a wrong token",
            &[("hub.mode", "publish"), ("hub.url", "http://93.184.216.34/feed")],
        )
        .header("authorization", "Bearer wrong-token"),
    ]);
    cases
}

#[tokio::test]
async fn malformed_events_oversized_batches_and_wrong_content_types_are_refused_and_store_nothing() {
    let app = hostile_hub().await;
    assert_all_refused(&app, malformed_events()).await;
    assert_all_refused(&app, malformed_raw_events()).await;
    app.stop().await;
}

#[tokio::test]
async fn forged_publish_tokens_and_signatures_are_refused_and_store_nothing() {
    let app = hostile_hub().await;
    assert_all_refused(&app, forged_credentials()).await;
    // The same request, correctly signed, is accepted: the refusals above are about the credentials alone.
    let body = event().to_string();
    let ts = now();
    let response = app
        .client
        .post(app.url("/events"))
        .header("content-type", "application/json")
        .header("x-tidings-timestamp", ts.to_string())
        .header("x-tidings-signature", publish_signature(HMAC_KEY, ts, body.as_bytes()))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    app.stop().await;
}
