//! The hub under test: the three release binaries (`tidings serve`, `callbacks-spreader`, `callback-deliver`) as
//! separate processes against a fresh database, subscribing callbacks through it, their memory, and the
//! database's size.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};

/// The processes of a hub, in the order their memory is reported; further deliverers (`--deliverers`) follow.
pub const PROCESSES: [&str; 3] = ["serve", "spreader", "deliver"];

/// Where the three binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub label: String,
    pub tidings: PathBuf,
    pub spreader: PathBuf,
    pub deliver: PathBuf,
}

impl Binaries {
    fn in_dir(label: String, dir: &Path) -> Self {
        Self {
            label,
            tidings: dir.join("tidings"),
            spreader: dir.join("callbacks-spreader"),
            deliver: dir.join("callback-deliver"),
        }
    }

    fn all_exist(&self) -> bool {
        [&self.tidings, &self.spreader, &self.deliver].iter().all(|p| p.is_file())
    }

    /// The release binaries of this checkout. Under `cargo bench` cargo itself has just built them (with the bench
    /// profile, which is the release profile); run any other way, `cargo build --release --bins` builds them when
    /// absent or stale (a fresh build is a no-op).
    pub fn this_checkout() -> anyhow::Result<Self> {
        let built_by_cargo = [
            option_env!("CARGO_BIN_EXE_tidings"),
            option_env!("CARGO_BIN_EXE_callbacks-spreader"),
            option_env!("CARGO_BIN_EXE_callback-deliver"),
        ];
        if let [Some(tidings), Some(spreader), Some(deliver)] = built_by_cargo {
            let bins = Self {
                label: "this checkout".into(),
                tidings: tidings.into(),
                spreader: spreader.into(),
                deliver: deliver.into(),
            };
            if bins.all_exist() {
                return Ok(bins);
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--bins", "--quiet"])
            .current_dir(root)
            .status()
            .context("running cargo build --release --bins")?;
        if !status.success() {
            bail!("cargo build --release --bins failed");
        }
        let dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        let bins = Self::in_dir("this checkout".into(), &dir.join("release"));
        if !bins.all_exist() {
            bail!("the release binaries are missing from {}", dir.join("release").display());
        }
        Ok(bins)
    }

    /// Binaries built elsewhere (another commit, for an A/B in the same run).
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        let bins = Self::in_dir(dir.display().to_string(), dir);
        if !bins.all_exist() {
            bail!("{} does not hold tidings, callbacks-spreader and callback-deliver", dir.display());
        }
        Ok(bins)
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Hub {
    pub api: String,
    pub database_url: String,
    admin_url: String,
    database: String,
    children: Vec<(&'static str, Child)>,
}

impl Hub {
    /// Creates a fresh database, migrates it, starts the three processes (and `deliverers - 1` more deliverers)
    /// and waits until each is ready.
    pub async fn start(
        bins: &Binaries,
        server: &str,
        database: String,
        extra_env: &[(String, String)],
        deliverers: usize,
        logs: &Path,
    ) -> anyhow::Result<Self> {
        let admin_url = format!("{server}/postgres");
        let mut admin = PgConnection::connect(&admin_url).await.context("connecting to PostgreSQL")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")).execute(&mut admin).await?;
        sqlx::query(&format!("CREATE DATABASE \"{database}\"")).execute(&mut admin).await?;
        admin.close().await?;
        let database_url = format!("{server}/{database}");
        let api_port = free_port()?;
        let api = format!("http://127.0.0.1:{api_port}");
        std::fs::create_dir_all(logs)?;
        let env = |cmd: &mut Command| {
            cmd.env("DATABASE_URL", &database_url)
                .env("TIDINGS_HUB_URL", format!("{api}/"))
                .env("TIDINGS_CALLBACK_ALLOW_PRIVATE", "true")
                .env("TIDINGS_LOG_FORMAT", "text")
                .env("RUST_LOG", "warn")
                .envs(extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        };
        let mut migrate = Command::new(&bins.tidings);
        env(&mut migrate);
        let output = migrate.arg("migrate").output().context("running tidings migrate")?;
        if !output.status.success() {
            bail!("tidings migrate failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let mut hub =
            Hub { api: api.clone(), database_url: database_url.clone(), admin_url, database, children: vec![] };
        let mut ready_urls = vec![format!("{api}/readyz")];
        let names = PROCESSES.into_iter().chain(std::iter::repeat_n("deliver", deliverers.saturating_sub(1)));
        for (i, name) in names.enumerate() {
            let mut cmd = match name {
                "serve" => {
                    let mut c = Command::new(&bins.tidings);
                    c.arg("serve").env("TIDINGS_LISTEN", format!("127.0.0.1:{api_port}"));
                    c
                }
                "spreader" => Command::new(&bins.spreader),
                _ => Command::new(&bins.deliver),
            };
            env(&mut cmd);
            if name != "serve" {
                let port = free_port()?;
                cmd.env("TIDINGS_METRICS_LISTEN", format!("127.0.0.1:{port}"));
                ready_urls.push(format!("http://127.0.0.1:{port}/readyz"));
            }
            cmd.env("TIDINGS_MIGRATE_ON_START", "false")
                .stdin(Stdio::null())
                .stdout(File::create(logs.join(format!("{name}{}.log", suffix(i))))?)
                .stderr(File::create(logs.join(format!("{name}{}.err.log", suffix(i))))?);
            let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
            hub.children.push((name, child));
        }
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in ready_urls {
            loop {
                if matches!(client.get(&url).send().await, Ok(r) if r.status().is_success()) {
                    break;
                }
                for (name, child) in &mut hub.children {
                    if let Some(status) = child.try_wait()? {
                        bail!("{name} exited at start ({status}); see {}", logs.display());
                    }
                }
                if Instant::now() > deadline {
                    bail!("{url} did not become ready; see {}", logs.display());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(hub)
    }

    /// Subscribes every callback to `topic` through WebSub (callback `limited.0` with `hub.x-rate` set to
    /// `limited.1`) and waits until all of them are verified and active; `verified` says how many challenges the
    /// receivers answered, for the error.
    pub async fn subscribe(
        &self,
        client: &reqwest::Client,
        topic: &str,
        callbacks: &[String],
        limited: Option<(usize, f64)>,
        verified: impl Fn() -> u64,
    ) -> anyhow::Result<()> {
        for (i, url) in callbacks.iter().enumerate() {
            let mut form = vec![("hub.mode", "subscribe".to_owned()), ("hub.topic", topic.to_owned())];
            form.push(("hub.callback", url.clone()));
            if let Some((_, rate)) = limited.filter(|(at, _)| *at == i) {
                form.push(("hub.x-rate", rate.to_string()));
            }
            let response = client.post(format!("{}/", self.api)).form(&form).send().await?;
            if response.status().as_u16() != 202 {
                bail!("subscribing {url} answered {}", response.status());
            }
        }
        let mut db = PgConnection::connect(&self.database_url).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let active: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE state = 'active'")
                .fetch_one(&mut db)
                .await?;
            if active as usize == callbacks.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "only {active} of {} subscriptions were verified ({} challenges answered)",
                    callbacks.len(),
                    verified()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        db.close().await?;
        Ok(())
    }

    /// The processes that have exited, each with its exit status.
    pub fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(name, child)| child.try_wait().ok().flatten().map(|status| format!("{name} ({status})")))
            .collect()
    }

    /// Peak resident memory (VmHWM) of each process, in bytes, in the order of [`PROCESSES`].
    pub fn peak_rss(&self) -> Vec<u64> {
        self.children.iter().map(|(_, c)| status_kb(c.id(), "VmHWM:").unwrap_or(0) * 1024).collect()
    }

    /// Current resident memory (VmRSS) of each process, in bytes.
    pub fn rss(&self) -> Vec<u64> {
        self.children.iter().map(|(_, c)| status_kb(c.id(), "VmRSS:").unwrap_or(0) * 1024).collect()
    }

    /// Stops the processes (SIGTERM, then SIGKILL after a grace period) and drops the database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for (_, child) in &self.children {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (_, child) in &mut self.children {
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        self.children.clear();
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database)).execute(&mut admin).await?;
        Ok(())
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Nothing for the first three processes, `-N` for the further deliverers.
fn suffix(i: usize) -> String {
    if i < PROCESSES.len() {
        String::new()
    } else {
        format!("-{}", i - PROCESSES.len() + 2)
    }
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes of every table of the database, with indexes and TOAST.
pub async fn database_bytes(conn: &mut PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
    )
    .fetch_one(conn)
    .await?)
}

/// Percentiles (p50/p90/p99, ms) of each hop of first delivery attempts, from the database's timestamps: the
/// publish transaction's start, the spread transaction's start, and the start of the POST.
pub async fn hops(conn: &mut PgConnection) -> anyhow::Result<String> {
    type Percentiles = Option<Vec<f64>>;
    let (spread, post, total): (Percentiles, Percentiles, Percentiles) = sqlx::query_as(
        "SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM o.created_at - e.published_at) * 1000),
                percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - o.created_at) * 1000),
                percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM a.started_at - e.published_at) * 1000)
         FROM outbox o JOIN events e ON e.position = o.event_position
              JOIN delivery_attempts a ON a.outbox_id = o.id AND a.attempt = 1
         WHERE o.kind = 'deliver'",
    )
    .fetch_one(conn)
    .await?;
    let show = |p: Option<Vec<f64>>| match p.as_deref() {
        Some([p50, p90, p99]) => format!("{p50:.2}/{p90:.2}/{p99:.2}"),
        _ => "-".to_owned(),
    };
    Ok(format!(
        "hops p50/p90/p99 ms: publish->spread {}, spread->POST {}, publish->POST {}",
        show(spread),
        show(post),
        show(total)
    ))
}
