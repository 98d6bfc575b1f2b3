//! Configuration, read once from the environment (or the matching command-line flags) into typed structs and
//! validated before anything starts. A bad value stops the process with one line naming the variable.
//! Secrets are wrapped in [`Secret`] so they never appear in logs or `Debug` output.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use clap::{Args, Parser, Subcommand};
use url::Url;

use crate::retry::RetrySchedule;

/// The `tidings` command line: one subcommand per way of running, everything else from the environment.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about = "Tidings: an event-sourced WebSub hub backed by PostgreSQL")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Apply database migrations and exit.
    Migrate,
    /// Serve the HTTP API only (the hub endpoint, publishing and the admin API).
    Serve,
    /// Run the API, the callbacks spreader and the callback deliverer in one process (the default).
    All,
}

/// Everything every Tidings process needs.
#[derive(Debug, Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub hub: HubConfig,
    #[command(flatten)]
    pub delivery: DeliveryConfig,
    #[command(flatten)]
    pub partitions: PartitionConfig,
    /// Events the callbacks spreader reads per transaction.
    #[arg(long, env = "TIDINGS_SPREAD_BATCH", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub spread_batch: u32,
    /// Most delivery jobs the callbacks spreader writes per transaction; an event with a larger fan-out is spread
    /// over several transactions.
    #[arg(long, env = "TIDINGS_SPREAD_BATCH_JOBS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub spread_batch_jobs: u32,
    /// Log format: `json` (one JSON object per line) or `text` (human-readable).
    #[arg(long, env = "TIDINGS_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL connection URL. The database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        hide_default_value = false,
        default_value = "postgres://postgres@127.0.0.1:5432/tidings"
    )]
    pub database_url: Secret<Url>,
    /// A read replica for the query API (searches, statistics, progress); unset: the primary serves them too.
    /// Everything that writes, and publishing's policy checks, stay on DATABASE_URL.
    #[arg(long, env = "DATABASE_READ_URL", hide_env_values = true)]
    pub database_read_url: Option<Secret<Url>>,
    /// Maximum connections in this process's pool.
    #[arg(long, env = "TIDINGS_DB_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,
    /// Apply migrations when the process starts.
    #[arg(long, env = "TIDINGS_MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, Args)]
pub struct HttpConfig {
    /// Address the HTTP API listens on.
    #[arg(long, env = "TIDINGS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (publish bodies, batches, fetched topic content).
    #[arg(long, env = "TIDINGS_MAX_BODY_BYTES", default_value_t = 1_048_576, value_parser = clap::value_parser!(u64).range(1024..=268_435_456))]
    pub max_body_bytes: u64,
    /// Where a processor without the API (callbacks-spreader, callback-deliver) serves /metrics, /healthz, /readyz.
    #[arg(long, env = "TIDINGS_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// Bearer token for the admin and query API. When unset, the admin API refuses every request.
    #[arg(long, env = "TIDINGS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret<String>>,
    /// Comma-separated bearer tokens that may publish. When neither this nor the HMAC key is set, publishing is open.
    #[arg(long, env = "TIDINGS_PUBLISH_TOKENS", hide_env_values = true)]
    pub publish_tokens: Option<Secret<String>>,
    /// Shared key for publishing with an HMAC-signed body (`X-Tidings-Timestamp`, `X-Tidings-Signature`).
    #[arg(long, env = "TIDINGS_PUBLISH_HMAC_KEY", hide_env_values = true)]
    pub publish_hmac_key: Option<Secret<String>>,
    /// Whether the web console's session cookie is marked Secure. Unset: when the request came over https.
    #[arg(long, env = "TIDINGS_CONSOLE_SECURE_COOKIE", action = clap::ArgAction::Set)]
    pub console_secure_cookie: Option<bool>,
}

#[derive(Debug, Clone, Args)]
pub struct HubConfig {
    /// Public URL of the hub endpoint, sent in `Link: <...>; rel="hub"`.
    #[arg(long, env = "TIDINGS_HUB_URL", default_value = "http://127.0.0.1:8080/")]
    pub hub_url: Url,
    /// Allow callbacks (and thin-ping topic URLs) on loopback, private, link-local and similar addresses.
    #[arg(long, env = "TIDINGS_CALLBACK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub callback_allow_private: bool,
    /// Lease granted when a subscriber asks for none, in seconds.
    #[arg(long, env = "TIDINGS_LEASE_DEFAULT_SECONDS", default_value_t = 864_000)]
    pub lease_default_seconds: u32,
    /// Shortest lease granted, in seconds.
    #[arg(long, env = "TIDINGS_LEASE_MIN_SECONDS", default_value_t = 3_600)]
    pub lease_min_seconds: u32,
    /// Longest lease granted, in seconds.
    #[arg(long, env = "TIDINGS_LEASE_MAX_SECONDS", default_value_t = 2_592_000)]
    pub lease_max_seconds: u32,
    /// Comma-separated topic patterns subscribers may subscribe to (`*` alone allows every topic).
    #[arg(long, env = "TIDINGS_TOPIC_ALLOW", default_value = "*")]
    pub topic_allow: String,
    /// Timeout for fetching a topic URL after a thin ping (`hub.mode=publish`), in seconds.
    #[arg(long, env = "TIDINGS_FETCH_TIMEOUT_SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub fetch_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct DeliveryConfig {
    /// Retry delays after each failed attempt (`5s,5m,30m,2h`); when exhausted, the delivery is dead.
    #[arg(long, env = "TIDINGS_RETRY_SCHEDULE", default_value = "5s,5m,30m,2h,5h,10h,10h")]
    pub retry_schedule: RetrySchedule,
    /// Timeout of one callback request (delivery or verification), in seconds.
    #[arg(long, env = "TIDINGS_DELIVERY_TIMEOUT_SECONDS", default_value = "15", value_parser = parse_seconds)]
    pub request_timeout: Duration,
    /// Requests in flight at once across all callbacks, per deliverer process (jobs claimed and not finished: at
    /// most twice this).
    #[arg(long, env = "TIDINGS_DELIVERY_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Requests in flight at once to one callback host, per deliverer process.
    #[arg(long, env = "TIDINGS_DELIVERY_HOST_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub host_concurrency: u32,
    /// Jobs claimed per database round trip.
    #[arg(long, env = "TIDINGS_DELIVERY_BATCH", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,
    /// Longest `Retry-After` honoured, in seconds; longer values are clamped to this.
    #[arg(long, env = "TIDINGS_RETRY_AFTER_MAX_SECONDS", default_value = "3600", value_parser = parse_seconds)]
    pub retry_after_max: Duration,
    /// How long a replaced secret still signs deliveries beside the new one (`24h`, `7d`, `0s`; at most `30d`).
    #[arg(long, env = "TIDINGS_SECRET_GRACE", default_value = "24h", value_parser = parse_grace)]
    pub secret_grace: Duration,
    /// Disable a subscription whose deliveries have all failed for this long (`5d`, `12h`), once at least
    /// `TIDINGS_DISABLE_AFTER_DEAD` of them died in a row; `never` keeps failing subscriptions active.
    #[arg(long, env = "TIDINGS_DISABLE_AFTER", default_value = "5d", value_parser = parse_disable_after)]
    pub disable_after: DisableAfter,
    /// Dead deliveries in a row, at least, before a failing subscription is disabled.
    #[arg(long, env = "TIDINGS_DISABLE_AFTER_DEAD", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub disable_after_dead: u32,
    /// How long in-flight work may take to finish after SIGTERM, in seconds.
    #[arg(long, env = "TIDINGS_SHUTDOWN_GRACE_SECONDS", default_value = "20", value_parser = parse_seconds)]
    pub shutdown_grace: Duration,
}

/// Time partitions of the log, the outbox and the attempt history, and how long they are kept.
#[derive(Debug, Clone, Args)]
pub struct PartitionConfig {
    /// Length of one time partition (`1d`, `6h`, `10m`; at least `1m`). Each period's events, delivery jobs and
    /// attempts share one partition of each table.
    #[arg(long, env = "TIDINGS_PARTITION_INTERVAL", default_value = "1d", value_parser = parse_interval)]
    pub partition_interval: Duration,
    /// How long history is kept (`7d`, `90d`, `1y`), or `forever`. Partitions that ended longer ago than this are
    /// dropped whole once none of their jobs is still pending.
    #[arg(long, env = "TIDINGS_RETENTION", default_value = "7d", value_parser = parse_retention)]
    pub retention: Retention,
}

/// How long every delivery must have failed before a subscription is disabled: `None` never disables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisableAfter(pub Option<Duration>);

fn parse_disable_after(s: &str) -> Result<DisableAfter, ValueError> {
    match s.trim() {
        "never" => Ok(DisableAfter(None)),
        d => Ok(DisableAfter(Some(crate::retry::parse_duration_within(d, Duration::from_secs(366 * 86_400))?))),
    }
}

/// How long history is kept: `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

/// Why one setting's value was refused (the variable is named by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Duration(#[from] crate::retry::DurationError),
    #[error("`{0}` is shorter than one minute")]
    UnderAMinute(String),
    #[error("`{0}` is not a duration like 7d, 90d or 1y")]
    NotARetention(String),
    #[error("`{0}` is not a number of seconds")]
    NotSeconds(String),
    #[error("`{0}` must be more than 0 and at most 86400 seconds")]
    SecondsOutOfRange(String),
}

/// A configuration whose values parse but do not fit together: the variable to change and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub reason: String,
}

fn refuse(variable: &'static str, reason: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError { variable, reason: reason.into() })
}

fn parse_interval(s: &str) -> Result<Duration, ValueError> {
    let d = crate::retry::parse_duration_within(s.trim(), Duration::from_secs(366 * 86_400))?;
    if d < Duration::from_secs(60) {
        return Err(ValueError::UnderAMinute(s.to_owned()));
    }
    Ok(d)
}

fn parse_grace(s: &str) -> Result<Duration, ValueError> {
    Ok(crate::retry::parse_duration_within(s.trim(), MAX_SECRET_GRACE)?)
}

/// The longest grace period a replaced secret may have.
pub const MAX_SECRET_GRACE: Duration = Duration::from_secs(30 * 86_400);

fn parse_retention(s: &str) -> Result<Retention, ValueError> {
    let s = s.trim();
    if s == "forever" {
        return Ok(Retention(None));
    }
    let d = match s.strip_suffix('y') {
        Some(years) => {
            let n: u64 = years.parse().map_err(|_| ValueError::NotARetention(s.to_owned()))?;
            Duration::from_secs(n.saturating_mul(365 * 86_400))
        }
        None => crate::retry::parse_duration_within(s, Duration::from_secs(100 * 365 * 86_400))?,
    };
    if d < Duration::from_secs(60) {
        return Err(ValueError::UnderAMinute(s.to_owned()));
    }
    Ok(Retention(Some(d)))
}

impl Config {
    /// Checks relations between values that no single parser can see.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let hub = &self.hub;
        if hub.lease_min_seconds == 0 {
            return refuse("TIDINGS_LEASE_MIN_SECONDS", "must be at least 1 (leases are never perpetual)");
        }
        if hub.lease_min_seconds > hub.lease_max_seconds {
            return refuse("TIDINGS_LEASE_MIN_SECONDS", "must not exceed TIDINGS_LEASE_MAX_SECONDS");
        }
        if !(hub.lease_min_seconds..=hub.lease_max_seconds).contains(&hub.lease_default_seconds) {
            return refuse("TIDINGS_LEASE_DEFAULT_SECONDS", "must lie between the minimum and maximum lease");
        }
        if let Err(e) = crate::topic::TopicAllowList::parse(&hub.topic_allow) {
            return refuse("TIDINGS_TOPIC_ALLOW", e.to_string());
        }
        if !matches!(hub.hub_url.scheme(), "http" | "https") {
            return refuse("TIDINGS_HUB_URL", "must be an http or https URL");
        }
        if !matches!(self.database.database_url.0.scheme(), "postgres" | "postgresql") {
            return refuse("DATABASE_URL", "must be a postgres:// URL");
        }
        if let Retention(Some(keep)) = self.partitions.retention {
            if keep < self.partitions.partition_interval {
                return refuse("TIDINGS_RETENTION", "must not be shorter than TIDINGS_PARTITION_INTERVAL");
            }
        }
        if let Some(read) = &self.database.database_read_url {
            if !matches!(read.0.scheme(), "postgres" | "postgresql") {
                return refuse("DATABASE_READ_URL", "must be a postgres:// URL");
            }
        }
        Ok(())
    }

    /// The configuration with every default, for tests and examples that override a few fields.
    pub fn defaults() -> Self {
        Cli::try_parse_from(["tidings"]).expect("defaults parse").config
    }
}

fn parse_seconds(s: &str) -> Result<Duration, ValueError> {
    let secs: f64 = s.trim().parse().map_err(|_| ValueError::NotSeconds(s.to_owned()))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(ValueError::SecondsOutOfRange(s.to_owned()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A value that must never be printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(pub T);

impl<T> Secret<T> {
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: FromStr> FromStr for Secret<T> {
    type Err = T::Err;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| crate::app::describe_cli_error::<Cli>(&e))?;
        cli.config.validate().map_err(|e| e.to_string())?;
        Ok(cli.config)
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse(&["tidings"]).expect("defaults");
        assert_eq!(config.http.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.hub.lease_default_seconds, 864_000);
        assert!(!config.hub.callback_allow_private);
    }

    #[test]
    fn a_minimum_lease_above_the_maximum_is_refused() {
        let err = parse(&["tidings", "--lease-min-seconds", "100", "--lease-max-seconds", "10"]).unwrap_err();
        assert!(err.contains("TIDINGS_LEASE_MIN_SECONDS"), "{err}");
    }

    #[test]
    fn a_bad_listen_address_names_the_variable() {
        let err = parse(&["tidings", "--listen", "nowhere"]).unwrap_err();
        assert!(err.contains("TIDINGS_LISTEN"), "{err}");
    }

    #[test]
    fn retention_is_a_duration_or_forever_and_never_shorter_than_a_partition() {
        let config = parse(&["tidings"]).expect("defaults");
        assert_eq!(config.partitions.retention, Retention(Some(Duration::from_secs(7 * 86_400))));
        assert_eq!(config.partitions.partition_interval, Duration::from_secs(86_400));
        let config = parse(&["tidings", "--retention", "forever"]).expect("forever");
        assert_eq!(config.partitions.retention, Retention(None));
        let config = parse(&["tidings", "--retention", "2y"]).expect("years");
        assert_eq!(config.partitions.retention, Retention(Some(Duration::from_secs(2 * 365 * 86_400))));
        let err = parse(&["tidings", "--retention", "1h", "--partition-interval", "1d"]).unwrap_err();
        assert!(err.contains("TIDINGS_RETENTION"), "{err}");
        let err = parse(&["tidings", "--partition-interval", "30s"]).unwrap_err();
        assert!(err.contains("TIDINGS_PARTITION_INTERVAL"), "{err}");
    }

    #[test]
    fn auto_disable_defaults_to_five_days_and_three_dead_and_can_be_turned_off() {
        let config = parse(&["tidings"]).expect("defaults");
        assert_eq!(config.delivery.disable_after, DisableAfter(Some(Duration::from_secs(5 * 86_400))));
        assert_eq!(config.delivery.disable_after_dead, 3);
        let config = parse(&["tidings", "--disable-after", "never"]).expect("never");
        assert_eq!(config.delivery.disable_after, DisableAfter(None));
        let err = parse(&["tidings", "--disable-after", "soon"]).unwrap_err();
        assert!(err.contains("TIDINGS_DISABLE_AFTER"), "{err}");
        let err = parse(&["tidings", "--disable-after-dead", "0"]).unwrap_err();
        assert!(err.contains("TIDINGS_DISABLE_AFTER_DEAD"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let s: Secret<String> = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }
}
