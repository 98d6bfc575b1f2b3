//! Starting Tidings: which roles run in this process (API, spreader, deliverer), wired to one pool and one
//! cancellation token, and stopped together on SIGTERM/SIGINT.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    callback,
    config::Config,
    db,
    deliverer::{transport::HttpTransport, Deliverer},
    fetcher,
    http::{AppState, Application},
    metrics::Metrics,
    ops_server, partitions,
    policies::Policies,
    spreader,
};

/// The parts of Tidings a process runs. The topic fetcher (thin pings) runs beside the API by default, where the
/// pings arrive and wake it at once; in a process of its own it finds new fetches by polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub api: bool,
    pub fetcher: bool,
    pub spreader: bool,
    pub deliverer: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { api: true, fetcher: true, spreader: true, deliverer: true };
    pub const API: Roles = Roles { api: true, fetcher: true, spreader: false, deliverer: false };
    pub const SPREADER: Roles = Roles { api: false, fetcher: false, spreader: true, deliverer: false };
    pub const DELIVERER: Roles = Roles { api: false, fetcher: false, spreader: false, deliverer: true };

    /// What the process's connections call themselves to PostgreSQL (`application_name`), so that
    /// `pg_stat_activity` and the server's logs tell the processes apart.
    pub fn process_name(self) -> &'static str {
        match self {
            Roles::ALL => "tidings all",
            Roles::API => "tidings serve",
            Roles::SPREADER => "callbacks-spreader",
            Roles::DELIVERER => "callback-deliver",
            _ => "tidings",
        }
    }
}

/// A running Tidings: its API port (when it serves the API), its pool, and its tasks.
pub struct Running {
    pub api_port: Option<u16>,
    /// The port of /metrics, /healthz and /readyz in a process without the API.
    pub metrics_port: Option<u16>,
    pub pool: PgPool,
    pub token: CancellationToken,
    tasks: JoinSet<anyhow::Result<()>>,
}

/// Connects (creating and migrating the database as configured) and starts the requested roles.
pub async fn start(config: Config, roles: Roles) -> anyhow::Result<Running> {
    let plans = if roles.api { db::Plans::Chosen } else { db::Plans::Generic };
    let pool = db::connect(&config.database, config.database.pool_size, plans, roles.process_name()).await?;
    start_with_pool(config, roles, pool).await
}

pub async fn start_with_pool(config: Config, roles: Roles, pool: PgPool) -> anyhow::Result<Running> {
    let token = CancellationToken::new();
    let metrics = Metrics::new();
    let mut tasks = JoinSet::new();
    let mut api_port = None;
    let mut metrics_port = None;
    // Before anything is served: partitions for what is about to be written.
    let now = chrono::Utc::now();
    if let Err(e) = partitions::ensure(&pool, &config.partitions, now, now).await {
        tracing::error!(error = %e, "could not create time partitions; trying again shortly");
    }
    tasks.spawn(partitions_task(pool.clone(), config.partitions.clone(), roles.deliverer, token.clone()));
    // Thin pings received by this process's API wake its fetcher at once.
    let fetch_wakeup = Arc::new(Notify::new());
    let policies = Arc::new(Policies::new(pool.clone()));
    if roles.fetcher {
        let fetcher = fetcher::Fetcher {
            pool: pool.clone(),
            metrics: metrics.clone(),
            policies: policies.clone(),
            client: callback::http_client(config.hub.callback_allow_private, config.hub.fetch_timeout),
            allow_private: config.hub.callback_allow_private,
            max_bytes: config.http.max_body_bytes as usize,
            timeout: config.hub.fetch_timeout,
        };
        let (wakeup, t) = (fetch_wakeup.clone(), token.clone());
        tasks.spawn(async move {
            fetcher.run_until_stopped(wakeup, t).await;
            Ok(())
        });
    }
    if roles.api {
        let mut state = AppState::new(pool.clone(), config.clone(), fetch_wakeup, policies, metrics.clone())?;
        if let Some(url) = &config.database.database_read_url {
            state = state.with_read_pool(db::connect_read(url.expose(), config.database.pool_size).await?);
            tracing::info!("the query API reads from the replica named by DATABASE_READ_URL");
        }
        let app = Application::build(state)?;
        api_port = Some(app.port());
        tracing::info!(port = app.port(), "API listening");
        tasks.spawn(app.run_until_stopped(token.clone()));
    } else {
        let server = ops_server::OpsServer::build(config.http.metrics_listen, pool.clone(), metrics.clone())?;
        metrics_port = Some(server.port());
        tracing::info!(port = server.port(), "metrics and health listening");
        tasks.spawn(server.run_until_stopped(token.clone()));
    }
    if roles.spreader {
        let spreader = spreader::Spreader::new(pool.clone(), config.spread_batch as i64)
            .with_max_jobs(config.spread_batch_jobs as i64)
            .with_metrics(metrics.clone());
        let t = token.clone();
        tasks.spawn(async move {
            spreader.run_until_stopped(t).await;
            Ok(())
        });
    }
    if roles.deliverer {
        let transport = HttpTransport::new(config.hub.callback_allow_private, config.delivery.request_timeout);
        let deliverer = Deliverer::new(pool.clone(), transport, config.hub.hub_url.clone(), config.delivery.clone())
            .with_metrics(metrics.clone());
        let t = token.clone();
        tasks.spawn(async move {
            deliverer.run_until_stopped(t).await;
            Ok(())
        });
    }
    Ok(Running { api_port, metrics_port, pool, token, tasks })
}

async fn partitions_task(
    pool: PgPool,
    config: crate::config::PartitionConfig,
    vacuum: bool,
    token: CancellationToken,
) -> anyhow::Result<()> {
    partitions::run_until_stopped(pool, config, vacuum, token).await;
    Ok(())
}

impl Running {
    /// Runs until a task fails or the token is cancelled, then waits for every task to finish.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = outcome {
                if result.is_ok() {
                    result = Err(e);
                }
                self.token.cancel();
            }
        }
        result
    }

    pub fn stop(&self) {
        self.token.cancel();
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The body of every binary: start the roles, stop on a signal, exit non-zero on failure.
pub async fn run_process(config: Config, roles: Roles) -> anyhow::Result<()> {
    let running = start(config, roles).await?;
    let token = running.token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; draining in-flight work");
        token.cancel();
    });
    running.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

/// Parses the command line and environment; on a bad value prints one line naming the variable and exits 2.
pub fn load_cli<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", describe_cli_error::<T>(&e));
            std::process::exit(2);
        }
    }
}

/// One line for a command-line or environment error, naming the environment variable when there is one.
pub fn describe_cli_error<T: clap::CommandFactory>(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("error: invalid configuration").to_owned();
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else { return line };
    let long = arg.trim_start_matches("--").split([' ', '=']).next().unwrap_or("");
    let command = T::command();
    let env = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned());
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => format!(" `{v}`"),
        _ => String::new(),
    };
    let reason = text.lines().next().and_then(|l| l.rsplit_once(": ")).map(|(_, r)| r).unwrap_or("invalid value");
    match env {
        Some(env) => format!("error: {env}: invalid value{value}: {reason}"),
        None => line,
    }
}

/// Validates the configuration or exits with one line naming the variable.
pub fn validated(config: Config) -> Config {
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    config
}
