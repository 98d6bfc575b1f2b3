//! Every admin route, called without, with a wrong, a malformed, or a replayed (retired) admin token.

use reqwest::Method;

use super::{assert_all_refused, hostile_hub, Case, HMAC_KEY, PUBLISH_TOKEN};
use crate::helpers::ADMIN_TOKEN;

const ID: &str = "0190f6a4-9e4e-7c1a-8d3b-5e6f7a8b9c0d";

fn routes() -> Vec<(Method, String, Option<&'static str>)> {
    let policy = Some(r#"{"topic": "hostile.*", "max_body_bytes": 10}"#);
    vec![
        (Method::GET, "/events".into(), None),
        (Method::GET, "/events?topic=a&limit=10".into(), None),
        (Method::GET, "/fetches".into(), None),
        (Method::GET, "/dry-run?topic=a".into(), None),
        (Method::GET, "/spreader".into(), None),
        (Method::GET, "/deliveries".into(), None),
        (Method::GET, format!("/deliveries/{ID}"), None),
        (Method::POST, format!("/deliveries/{ID}/redeliver"), None),
        (Method::GET, "/subscriptions".into(), None),
        (Method::GET, format!("/subscriptions/{ID}"), None),
        (Method::POST, format!("/subscriptions/{ID}/replay"), Some(r#"{"from_position": 0}"#)),
        (Method::POST, format!("/subscriptions/{ID}/redeliver-dead"), None),
        (Method::POST, format!("/subscriptions/{ID}/end"), None),
        (Method::GET, "/groups/g/progress".into(), None),
        (Method::GET, "/stats".into(), None),
        (Method::GET, "/policies".into(), None),
        (Method::PUT, "/policies".into(), policy),
        (Method::DELETE, "/policies?topic=hostile.*".into(), None),
    ]
}

fn cases() -> Vec<Case> {
    let credentials: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("a wrong token", Some("Bearer not-the-admin-token".into())),
        ("a retired token", Some("Bearer test-admin-token-2025".into())),
        ("the token cut short", Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]))),
        ("the token with a suffix", Some(format!("Bearer {ADMIN_TOKEN}0"))),
        ("the token in capitals", Some(format!("Bearer {}", ADMIN_TOKEN.to_uppercase()))),
        ("the token as Basic", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("the token without a scheme", Some(ADMIN_TOKEN.into())),
        ("an empty bearer", Some("Bearer ".into())),
        ("a publish token", Some(format!("Bearer {PUBLISH_TOKEN}"))),
        ("the publish HMAC key", Some(format!("Bearer {HMAC_KEY}"))),
    ];
    let mut cases = Vec::new();
    for (method, path, body) in routes() {
        for (name, authorization) in &credentials {
            let mut case = Case::new(format!("{method} {path} with {name}"), method.clone(), path.clone());
            if let Some(authorization) = authorization {
                case = case.header("authorization", authorization.clone());
            }
            if let Some(body) = body {
                case = case.header("content-type", "application/json").body(body);
            }
            cases.push(case);
        }
    }
    cases
}

/// Policies the admin may send, but that cannot be stored as given.
fn bad_policies() -> Vec<Case> {
    [
        ("a content type with NUL", r#"{"topic": "p.topic", "content_types": ["text/plain\u0000"]}"#),
        ("a content type that is not one", r#"{"topic": "p.topic", "content_types": ["\u00a5"]}"#),
        ("a schema holding NUL", r#"{"topic": "p.topic", "json_schema": {"const": "a\u0000"}}"#),
        ("a topic with CR LF", r#"{"topic": "p\r\ntopic"}"#),
        ("a schema that is not an object", r#"{"topic": "p.topic", "json_schema": 5}"#),
        ("a zero size", r#"{"topic": "p.topic", "max_bytes": 0}"#),
        ("truncated JSON", r#"{"topic": "p.to"#),
    ]
    .into_iter()
    .map(|(name, body)| {
        Case::new(format!("PUT /policies with {name}"), Method::PUT, "/policies")
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(body)
    })
    .collect()
}

#[tokio::test]
async fn policies_that_cannot_be_stored_as_given_are_refused_with_a_reason() {
    let app = hostile_hub().await;
    assert_all_refused(&app, bad_policies()).await;
    app.stop().await;
}

#[tokio::test]
async fn every_admin_route_refuses_missing_wrong_malformed_and_retired_tokens_and_stores_nothing() {
    let app = hostile_hub().await;
    assert_all_refused(&app, cases()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_nul_byte_in_any_admin_url_is_a_400_even_with_the_right_token() {
    let app = hostile_hub().await;
    let urls = [
        (Method::GET, "/events?topic=a%00b"),
        (Method::GET, "/events?tag=a%00"),
        (Method::GET, "/events?group_id=a%00"),
        (Method::GET, "/subscriptions?topic=a%00"),
        (Method::GET, "/dry-run?topic=a%00"),
        (Method::GET, "/groups/a%00b/progress"),
        (Method::GET, "/stats?topic=a%00"),
        (Method::GET, "/fetches?url=a%00"),
        (Method::DELETE, "/policies?topic=a%00"),
        (Method::GET, "/console/events?topic=a%00"),
    ];
    let cases = urls
        .into_iter()
        .map(|(method, url)| {
            Case::new(format!("{method} {url}"), method, url).header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        })
        .collect();
    assert_all_refused(&app, cases).await;
    app.stop().await;
}
