//! The hostile-input corpus: requests an attacker (or a broken client) sends, each of which the hub must refuse
//! with a 4xx and a reason, storing nothing. Every table of cases runs against one hub; the rows of every table a
//! request could write are counted before and after each case.

mod admin;
mod forms;
mod limits;
mod publish;
mod redirects;
mod sql;
mod ssrf;

use sqlx::PgPool;
use tidings::app::Roles;

use crate::helpers::{spawn_app_with, test_config, TestApp};

pub const PUBLISH_TOKEN: &str = "publish-token-hostile";
pub const HMAC_KEY: &str = "hmac-key-hostile";
/// A callback every case may use when the case is about something else: a public literal address.
pub const PUBLIC_CALLBACK: &str = "http://93.184.216.34/callback";

/// One hostile request.
pub struct Case {
    pub name: String,
    pub method: reqwest::Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Case {
    pub fn new(name: impl Into<String>, method: reqwest::Method, path: impl Into<String>) -> Self {
        Self { name: name.into(), method, path: path.into(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// `POST /` with a form body given verbatim (already encoded), and the form content type.
    pub fn form_raw(name: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new(name, reqwest::Method::POST, "/")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }

    /// `POST /` with these pairs, encoded.
    pub fn form(name: impl Into<String>, pairs: &[(&str, &str)]) -> Self {
        Self::form_raw(name, encode(pairs))
    }

    /// `POST /events` with a JSON body (verbatim) and a valid publish token.
    pub fn json(name: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new(name, reqwest::Method::POST, "/events")
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {PUBLISH_TOKEN}"))
            .body(body)
    }
}

pub fn encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

/// A hub that refuses private callbacks and requires publish credentials (a token or the HMAC signature).
pub async fn hostile_hub() -> TestApp {
    let mut config = test_config();
    config.hub.callback_allow_private = false;
    config.http.publish_tokens = Some(tidings::config::Secret(format!("{PUBLISH_TOKEN}, second-publish-token")));
    config.http.publish_hmac_key = Some(tidings::config::Secret(HMAC_KEY.into()));
    spawn_app_with(config, Roles::API).await
}

/// Rows in every table a request could write.
pub async fn stored_rows(pool: &PgPool) -> Vec<(&'static str, i64)> {
    let mut counts = Vec::new();
    for table in ["events", "subscriptions", "subscription_requests", "outbox", "topic_policies", "topic_fetches"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(pool).await.unwrap();
        counts.push((table, n));
    }
    counts
}

/// Sends every case; fails listing every case that was not refused with a 4xx and a reason, or that stored rows.
pub async fn assert_all_refused(app: &TestApp, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let total = cases.len();
    for case in cases {
        let before = stored_rows(&app.pool).await;
        let mut request = app.client.request(case.method.clone(), app.url(&case.path)).body(case.body);
        for (name, value) in &case.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{}: the request failed: {e}", case.name));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let after = stored_rows(&app.pool).await;
        if !status.is_client_error() {
            failures.push(format!("{}: answered {status}: {}", case.name, text.trim()));
        } else if text.trim().is_empty() {
            failures.push(format!("{}: answered {status} without a reason", case.name));
        } else if text.contains("could not be resolved") {
            // The tests have no DNS: a case refused only because a name did not resolve proves nothing.
            failures.push(format!("{}: refused only because a name did not resolve: {}", case.name, text.trim()));
        }
        if before != after {
            failures.push(format!("{}: stored rows: {before:?} -> {after:?}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} hostile cases were not refused cleanly:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
