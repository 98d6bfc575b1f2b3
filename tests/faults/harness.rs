//! The hub as three real processes (`tidings serve`, `callbacks-spreader`, `callback-deliver`) that a test can
//! kill with SIGKILL and start again, a steady publisher, and the final accounting.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::receiver::Receiver;

pub const TOPIC: &str = "https://shop.example/orders";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Api,
    Spreader,
    Deliverer,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fresh database on the machine's PostgreSQL (`TIDINGS_TEST_DATABASE_URL`, default local).
pub fn fresh_database_url() -> String {
    let server = std::env::var("TIDINGS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut url: url::Url = server.parse().expect("TIDINGS_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("tidings_faults_{}", Uuid::new_v4().simple()));
    url.to_string()
}

pub struct Hub {
    pub database_url: String,
    pub api_port: u16,
    extra_env: Vec<(String, String)>,
    children: HashMap<Role, Child>,
}

impl Hub {
    /// Migrates the database with `tidings migrate` and starts the three processes.
    pub async fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Hub {
        let mut hub = Hub {
            database_url: database_url.to_owned(),
            api_port: free_port(),
            extra_env: extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            children: HashMap::new(),
        };
        let mut migrate = hub.command("tidings");
        migrate.arg("migrate");
        let status = migrate.status().expect("tidings migrate runs");
        assert!(status.success(), "tidings migrate failed: {status}");
        for role in [Role::Api, Role::Spreader, Role::Deliverer] {
            hub.spawn(role);
        }
        hub.wait_ready().await;
        hub
    }

    fn command(&self, binary: &str) -> Command {
        let path = match binary {
            "tidings" => env!("CARGO_BIN_EXE_tidings"),
            "callbacks-spreader" => env!("CARGO_BIN_EXE_callbacks-spreader"),
            _ => env!("CARGO_BIN_EXE_callback-deliver"),
        };
        let mut command = Command::new(path);
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("TIDINGS_MIGRATE_ON_START", "false")
            .env("TIDINGS_CALLBACK_ALLOW_PRIVATE", "true")
            .env("TIDINGS_ADMIN_TOKEN", "faults-admin-token")
            .env("TIDINGS_RETRY_SCHEDULE", "200ms,400ms,800ms,1s,1s,1s,1s,1s,1s,1s")
            .env("TIDINGS_DELIVERY_TIMEOUT_SECONDS", "1")
            .env("TIDINGS_SHUTDOWN_GRACE_SECONDS", "2")
            .env("TIDINGS_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        command
    }

    pub fn spawn(&mut self, role: Role) {
        let mut command = match role {
            Role::Api => {
                let mut c = self.command("tidings");
                c.arg("serve").env("TIDINGS_LISTEN", format!("127.0.0.1:{}", self.api_port));
                c
            }
            Role::Spreader => self.command("callbacks-spreader"),
            Role::Deliverer => self.command("callback-deliver"),
        };
        command.env("TIDINGS_METRICS_LISTEN", format!("127.0.0.1:{}", free_port()));
        let child = command.spawn().expect("the binary starts");
        self.children.insert(role, child);
    }

    /// SIGKILL: no shutdown, no cleanup, whatever it was doing.
    pub fn kill9(&mut self, role: Role) {
        let mut child = self.children.remove(&role).expect("the process runs");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    pub fn restart(&mut self, role: Role) {
        self.spawn(role);
    }

    /// Whether every process is still running (none exited on its own).
    pub fn all_running(&mut self) -> bool {
        self.children.values_mut().all(|c| c.try_wait().map(|s| s.is_none()).unwrap_or(false))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.api_port, path)
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the API never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Subscribes each receiver through WebSub (the deliverer verifies intent) and waits until all are active.
    pub async fn subscribe(&self, pool: &PgPool, receivers: &[&Receiver]) {
        let plain: Vec<(&Receiver, Option<Value>)> = receivers.iter().map(|r| (*r, None)).collect();
        self.subscribe_filtered(pool, &plain).await;
    }

    /// As `subscribe`, each receiver with its content filter (`hub.x-filter`) when it has one.
    pub async fn subscribe_filtered(&self, pool: &PgPool, receivers: &[(&Receiver, Option<Value>)]) {
        let client = reqwest::Client::new();
        for (n, (receiver, filter)) in receivers.iter().enumerate() {
            let callback = receiver.url(&format!("/subscriber/{n}"));
            let mut form =
                vec![("hub.mode", "subscribe".to_owned()), ("hub.topic", TOPIC.to_owned()), ("hub.callback", callback)];
            if let Some(filter) = filter {
                form.push(("hub.x-filter", filter.to_string()));
            }
            let response = client.post(self.url("/")).form(&form).send().await.expect("subscribe");
            assert_eq!(response.status(), 202);
        }
        let started = Instant::now();
        loop {
            let active: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE state = 'active'")
                .fetch_one(pool)
                .await
                .unwrap();
            if active == receivers.len() as i64 {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "subscriptions never became active");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Publishes one event every `interval` until stopped, remembering the id of every event the hub acknowledged
/// with a 2xx. Failures (the API killed, the database restarting) are counted, not retried: an event that was
/// never acknowledged carries no promise.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    pub acknowledged: Arc<Mutex<Vec<Uuid>>>,
    pub failed: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn start(url: String, interval: Duration) -> Publisher {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(0));
        let (s, a, f) = (stop.clone(), acknowledged.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            let mut n = 0u64;
            let mut tick = tokio::time::interval(interval);
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let parity = if n.is_multiple_of(2) { "even" } else { "odd" };
                let body = json!({ "topic": TOPIC, "body": { "order": n, "parity": parity } });
                let acked = match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["id"].as_str().and_then(|id| Uuid::parse_str(id).ok())),
                    _ => None,
                };
                match acked {
                    Some(id) => a.lock().unwrap().push(id),
                    None => *f.lock().unwrap() += 1,
                }
            }
        });
        Publisher { stop, acknowledged, failed, task }
    }

    /// Stops publishing and returns the acknowledged event ids.
    pub async fn stop(self) -> Vec<Uuid> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        let ids = self.acknowledged.lock().unwrap().clone();
        ids
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }
}

#[derive(Debug)]
pub struct Accounting {
    pub events: usize,
    /// Acknowledged events × the subscriptions whose filter each one matches.
    pub pairs: usize,
    pub delivered: usize,
    pub dead_with_attempts: usize,
    pub lost: usize,
    pub duplicates: usize,
    /// Events delivered to a receiver whose filter they do not match.
    pub unwanted: usize,
}

/// Which acknowledged events a receiver is owed, judged on the event's JSON body.
pub type Wants<'a> = &'a dyn Fn(&Value) -> bool;

/// Waits until every acknowledged event × subscriber is delivered or dead with its attempts recorded (or the
/// limit passes), then counts. Every acknowledged event must be in the log.
pub async fn account(pool: &PgPool, receivers: &[&Receiver], acknowledged: &[Uuid], limit: Duration) -> Accounting {
    let every: Wants = &|_| true;
    let owed: Vec<(&Receiver, Wants)> = receivers.iter().map(|r| (*r, every)).collect();
    account_matching(pool, &owed, acknowledged, limit).await
}

/// As `account`, with each receiver owed only the events its filter matches; a delivery of any other event to
/// it is counted as unwanted.
pub async fn account_matching(
    pool: &PgPool,
    receivers: &[(&Receiver, Wants<'_>)],
    acknowledged: &[Uuid],
    limit: Duration,
) -> Accounting {
    let in_log: Vec<(Uuid, Vec<u8>)> = sqlx::query_as("SELECT id, body FROM events WHERE id = ANY($1)")
        .bind(acknowledged)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(in_log.len(), acknowledged.len(), "every acknowledged event is in the log");
    let bodies: HashMap<Uuid, Value> =
        in_log.into_iter().map(|(id, body)| (id, serde_json::from_slice(&body).unwrap_or(Value::Null))).collect();
    let owed: Vec<Vec<Uuid>> = receivers
        .iter()
        .map(|(_, wants)| acknowledged.iter().copied().filter(|id| wants(&bodies[id])).collect())
        .collect();
    let started = Instant::now();
    loop {
        let mut delivered = 0;
        let mut duplicates = 0;
        let mut unwanted = 0;
        let mut missing: Vec<Uuid> = Vec::new();
        for ((receiver, _), owed) in receivers.iter().zip(&owed) {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for r in receiver.deliveries().into_iter().filter(|r| (200..300).contains(&r.status)) {
                if let Some(id) = r.header("webhook-id") {
                    *seen.entry(id.to_owned()).or_default() += 1;
                }
            }
            for id in owed {
                match seen.remove(&id.to_string()) {
                    Some(count) => {
                        delivered += 1;
                        duplicates += count - 1;
                    }
                    None => missing.push(*id),
                }
            }
            unwanted +=
                seen.keys().filter_map(|id| Uuid::parse_str(id).ok()).filter(|id| bodies.contains_key(id)).count();
        }
        let dead_with_attempts: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM outbox o JOIN events e ON e.position = o.event_position AND e.published_at = o.logged_at
             WHERE e.id = ANY($1) AND o.state = 'dead'
               AND EXISTS (SELECT 1 FROM delivery_attempts a WHERE a.outbox_id = o.id)",
        )
        .bind(&missing)
        .fetch_one(pool)
        .await
        .unwrap();
        let lost = missing.len().saturating_sub(dead_with_attempts as usize);
        if lost == 0 || started.elapsed() > limit {
            return Accounting {
                events: acknowledged.len(),
                pairs: owed.iter().map(Vec::len).sum(),
                delivered,
                dead_with_attempts: dead_with_attempts as usize,
                lost,
                duplicates,
                unwanted,
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn connect(database_url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(database_url).await.expect("connect")
}
