//! Spawning Tidings for a test: a fresh PostgreSQL database per test, the API on port 0, and real HTTP
//! receivers on 127.0.0.1 that the hub calls over the network.

use std::time::Duration;

use sqlx::{Connection, PgPool};
use tidings::{
    app::{self, Roles, Running},
    config::{Config, Secret},
};
use uuid::Uuid;

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub struct TestApp {
    pub address: String,
    pub pool: PgPool,
    pub client: reqwest::Client,
    pub config: Config,
    running: Running,
}

/// The server every test database lives on (`TIDINGS_TEST_DATABASE_URL`, default local PostgreSQL).
fn server_url() -> String {
    std::env::var("TIDINGS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A configuration for a fresh, uniquely named database, listening on a free port, private callbacks allowed.
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    let mut url: url::Url = server_url().parse().expect("TIDINGS_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("tidings_test_{}", Uuid::new_v4().simple()));
    config.database.database_url = Secret(url);
    config.database.pool_size = 8;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.http.admin_token = Some(Secret(ADMIN_TOKEN.into()));
    config.hub.callback_allow_private = true;
    config.delivery.retry_schedule = "50ms,100ms".parse().unwrap();
    config.delivery.request_timeout = Duration::from_secs(5);
    config
}

/// The name of the database `config` points at.
pub fn database_name(config: &Config) -> String {
    config.database.database_url.expose().path().trim_start_matches('/').to_owned()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config(), Roles::ALL).await
}

pub async fn spawn_app_with(config: Config, roles: Roles) -> TestApp {
    let running = app::start(config.clone(), roles).await.expect("Tidings starts");
    let port = running.api_port.unwrap_or(0);
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        pool: running.pool.clone(),
        client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        config,
        running,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn publish(&self, body: serde_json::Value) -> reqwest::Response {
        self.client.post(self.url("/events")).json(&body).send().await.expect("publish request")
    }

    pub async fn post_form(&self, pairs: &[(&str, &str)]) -> reqwest::Response {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        self.client
            .post(self.url("/"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("hub request")
    }

    pub async fn admin_get(&self, path: &str) -> serde_json::Value {
        let response = self.client.get(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.expect("admin request");
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.expect("admin JSON")
    }

    /// Events publishers appended (the hub's own operational events on `tidings.` topics left out).
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE kind = 'content' AND topic NOT ILIKE 'tidings.%'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The single number `sql` returns (a `count(*)`, say).
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Waits until `sql` counts `expected`, failing the test after `timeout`.
    pub async fn wait_for_count(&self, timeout: Duration, what: &str, sql: &str, expected: i64) {
        eventually(timeout, what, || async { (self.count(sql).await == expected).then_some(()) }).await;
    }

    /// Stops the hub and drops its database (a test that fails before this keeps its database to look at).
    pub async fn stop(self) {
        self.running.stop();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.running.wait()).await;
        self.pool.close().await;
        let name = database_name(&self.config);
        if let Ok(mut server) = sqlx::PgConnection::connect(&server_url()).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut server).await;
            let _ = server.close().await;
        }
    }
}

/// Polls `check` until it returns `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
