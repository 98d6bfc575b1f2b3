//! The fault suite's world: the real binaries as separate OS processes against a fresh database, subscribers on
//! 127.0.0.1, a steady publish load, and the accounting that proves nothing was lost.

use std::{
    collections::{HashMap, HashSet},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::receiver::Receiver;

pub const ADMIN_TOKEN: &str = "faults-admin-token";

/// Which binary a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Api,
    Spreader,
    Deliverer,
}

/// A running Tidings process; killed with SIGKILL when dropped.
pub struct Process {
    pub role: Role,
    child: Child,
}

impl Process {
    /// `kill -9`, and wait until it is gone.
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    /// Whether it is still running (it has not exited on its own).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("process status").is_none()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One hub: its database, its API address, the environment every process gets, and where their logs go.
pub struct Hub {
    pub api_port: u16,
    pub env: Vec<(String, String)>,
    pub logs: PathBuf,
    pub pool: PgPool,
    pub client: reqwest::Client,
}

impl Hub {
    /// A hub on a fresh database of the server at `server_url`, with `extra` environment on top of the defaults.
    pub async fn new(server_url: &str, extra: &[(&str, &str)]) -> Self {
        let mut url: url::Url = server_url.parse().unwrap();
        url.set_path(&format!("tidings_faults_{}", Uuid::new_v4().simple()));
        let database_url = url.to_string();
        let api_port = free_port();
        let logs = std::env::temp_dir().join(format!("tidings-faults-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&logs).unwrap();
        let mut env: HashMap<String, String> = [
            ("DATABASE_URL", database_url.as_str()),
            ("TIDINGS_LISTEN", &format!("127.0.0.1:{api_port}")),
            ("TIDINGS_METRICS_LISTEN", "127.0.0.1:0"),
            ("TIDINGS_ADMIN_TOKEN", ADMIN_TOKEN),
            ("TIDINGS_CALLBACK_ALLOW_PRIVATE", "true"),
            ("TIDINGS_RETRY_SCHEDULE", "100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s"),
            ("TIDINGS_DELIVERY_TIMEOUT_SECONDS", "2"),
            ("TIDINGS_DB_POOL_SIZE", "4"),
            ("TIDINGS_SHUTDOWN_GRACE_SECONDS", "1"),
            ("TIDINGS_LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        tidings::db::create_database_if_missing(&database_url).await.expect("the test database is created");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy(&database_url)
            .unwrap();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        Self { api_port, env: env.into_iter().collect(), logs, pool, client }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    /// Starts one process of `role`, its stdout and stderr appended to a log file of its own.
    pub fn spawn(&self, role: Role) -> Process {
        let (program, args): (&str, &[&str]) = match role {
            Role::Api => (env!("CARGO_BIN_EXE_tidings"), &["serve"]),
            Role::Spreader => (env!("CARGO_BIN_EXE_callbacks-spreader"), &[]),
            Role::Deliverer => (env!("CARGO_BIN_EXE_callback-deliver"), &[]),
        };
        let log = |suffix: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.logs.join(format!("{role:?}.{suffix}")))
                .unwrap()
        };
        let child = Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log("stdout"))
            .stderr(log("stderr"))
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        Process { role, child }
    }

    /// Starts the API and waits until it answers `/readyz`.
    pub async fn spawn_api(&self) -> Process {
        let process = self.spawn(Role::Api);
        self.wait_ready().await;
        process
    }

    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(60), "the API to be ready", || async {
            let response = self.client.get(self.url("/readyz")).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
    }

    /// Every log line written so far by every process.
    pub fn all_logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(&self.logs).unwrap() {
            text.push_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
        }
        text
    }

    /// Subscribes `receiver` (through WebSub verification) and waits until the subscription is active.
    pub async fn subscribe(&self, receiver: &Receiver, topic: &str, path: &str) -> Uuid {
        let callback = receiver.url(path);
        let response = self
            .client
            .post(self.url("/"))
            .form(&[("hub.mode", "subscribe"), ("hub.topic", topic), ("hub.callback", callback.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 202, "{}", response.text().await.unwrap_or_default());
        eventually(Duration::from_secs(30), "the subscription to be active", || async {
            sqlx::query_scalar("SELECT id FROM subscriptions WHERE callback = $1 AND state = 'active'")
                .bind(&callback)
                .fetch_optional(&self.pool)
                .await
                .ok()
                .flatten()
        })
        .await
    }

    /// Publishes one event with a known id; `Some(id)` when the hub acknowledged it with a 2xx.
    pub async fn publish(&self, topic: &str) -> Option<Uuid> {
        let id = Uuid::now_v7();
        let body = serde_json::json!({"topic": topic, "id": id, "body": {"event": id}});
        let response = self.client.post(self.url("/events")).json(&body).send().await.ok()?;
        response.status().is_success().then_some(id)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

/// A steady publish load on one topic, recording every acknowledged event, until stopped.
pub struct Load {
    accepted: Arc<Mutex<Vec<Uuid>>>,
    attempted: Arc<Mutex<usize>>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    pub fn start(hub: Arc<Hub>, topic: &'static str, every: Duration) -> Self {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempted = Arc::new(Mutex::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let (a, n, s) = (accepted.clone(), attempted.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            while !s.is_cancelled() {
                tick.tick().await;
                *n.lock().unwrap() += 1;
                if let Some(id) = hub.publish(topic).await {
                    a.lock().unwrap().push(id);
                }
            }
        });
        Self { accepted, attempted, stop, task }
    }

    pub fn accepted_so_far(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    /// Stops the load; returns the acknowledged event ids and how many publishes were attempted.
    pub async fn stop(self) -> (Vec<Uuid>, usize) {
        self.stop.cancel();
        self.task.await.unwrap();
        let accepted = self.accepted.lock().unwrap().clone();
        let attempted = *self.attempted.lock().unwrap();
        (accepted, attempted)
    }
}

/// What happened to every acknowledged event × active subscription.
#[derive(Debug, Default)]
pub struct Accounting {
    pub expected: usize,
    pub delivered: usize,
    pub dead: usize,
    /// Requests a subscriber received beyond the first per event: duplicates, and attempts it refused (5xx).
    pub duplicates: usize,
    pub lost: Vec<String>,
}

/// Waits until every acknowledged event has a settled (delivered or dead) job for every subscription, then checks
/// each against the log, the outbox, the attempts and what the receivers saw.
pub async fn account(
    hub: &Hub,
    accepted: &[Uuid],
    subscriptions: &[(Uuid, &Receiver)],
    settle: Duration,
) -> Accounting {
    let ids: Vec<Uuid> = accepted.to_vec();
    let expected = ids.len() * subscriptions.len();
    let _ = tokio::time::timeout(settle, async {
        loop {
            let settled: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM outbox o JOIN events e ON e.position = o.event_position
                 WHERE o.kind = 'deliver' AND o.state IN ('delivered', 'dead') AND e.id = ANY($1)",
            )
            .bind(&ids)
            .fetch_one(&hub.pool)
            .await
            .unwrap_or(0);
            if settled as usize >= expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let mut accounting = Accounting { expected, ..Default::default() };
    let in_log: HashSet<Uuid> = sqlx::query_scalar("SELECT id FROM events WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&hub.pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    for id in &ids {
        if !in_log.contains(id) {
            accounting.lost.push(format!("event {id} was acknowledged but is not in the log"));
        }
    }
    for (subscription, receiver) in subscriptions {
        let mut seen: HashMap<Uuid, usize> = HashMap::new();
        for delivery in receiver.deliveries() {
            let body: serde_json::Value = serde_json::from_slice(&delivery.body).unwrap_or_default();
            if let Some(id) = body.get("event").and_then(|v| v.as_str()).and_then(|v| v.parse().ok()) {
                *seen.entry(id).or_default() += 1;
            }
        }
        let jobs: Vec<(Uuid, String, i32, i64)> = sqlx::query_as(
            "SELECT e.id, o.state, o.attempts,
                    (SELECT count(*) FROM delivery_attempts a WHERE a.outbox_id = o.id)
             FROM outbox o JOIN events e ON e.position = o.event_position
             WHERE o.kind = 'deliver' AND o.subscription_id = $1 AND e.id = ANY($2)",
        )
        .bind(subscription)
        .bind(&ids)
        .fetch_all(&hub.pool)
        .await
        .unwrap();
        let jobs: HashMap<Uuid, (String, i32, i64)> = jobs.into_iter().map(|(e, s, a, n)| (e, (s, a, n))).collect();
        for id in &ids {
            let received = seen.get(id).copied().unwrap_or(0);
            accounting.duplicates += received.saturating_sub(1);
            match jobs.get(id) {
                None => accounting.lost.push(format!("event {id} × {subscription}: no delivery job")),
                Some((state, _, _)) if state == "delivered" && received > 0 => accounting.delivered += 1,
                Some((state, attempts, recorded)) if state == "dead" && *attempts > 0 && *recorded > 0 => {
                    accounting.dead += 1
                }
                Some((state, attempts, recorded)) => accounting.lost.push(format!(
                    "event {id} × {subscription}: {state} after {attempts} attempts ({recorded} recorded), received {received}×"
                )),
            }
        }
    }
    accounting
}

/// Polls `check` until it returns `Some`, failing after `timeout`.
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shared test server (`TIDINGS_TEST_DATABASE_URL`, default local PostgreSQL).
pub fn shared_server() -> String {
    std::env::var("TIDINGS_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A private, throwaway PostgreSQL cluster (initdb + pg_ctl) on a free port, so a test can restart it without
/// disturbing anything else. Run as the `postgres` user when the tests run as root.
pub struct PrivateCluster {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

impl PrivateCluster {
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql (scripts/ensure-postgres installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = std::env::temp_dir().join(format!("tidings-faults-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            run("chown", &["postgres:postgres", dir.to_str().unwrap()], false);
        }
        let port = free_port();
        let cluster = Self { dir, port, bin };
        let data = cluster.dir.join("data");
        cluster.pg("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres", "--no-sync"]);
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            cluster.dir.display()
        );
        let log = cluster.dir.join("server.log");
        cluster
            .pg("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &options, "-w", "start"]);
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection is cut; the server comes back on the same port.
    pub fn restart(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        // With -l, so the restarted server does not hold pg_ctl's output pipe open.
        self.pg("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-m", "fast", "-w", "restart"]);
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        run(program.to_str().unwrap(), args, is_root());
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let program = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", program.to_str().unwrap()]);
            c
        } else {
            std::process::Command::new(program)
        };
        let _ = command.args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0\n")).unwrap_or(false)
}

fn run(program: &str, args: &[&str], as_postgres: bool) {
    let mut command = if as_postgres {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        std::process::Command::new(program)
    };
    let output = command.args(args).current_dir(Path::new("/")).output().expect("the command runs");
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
