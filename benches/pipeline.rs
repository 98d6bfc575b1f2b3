//! The pipeline benchmark: the release binaries of Tidings as separate processes against a fresh database,
//! fast receivers on 127.0.0.1 subscribed through real WebSub verification, a publisher that stamps each event
//! with its send time, and the same load POSTed straight at the receivers as the ceiling. Prints the medians of
//! several runs per scenario as a table, and the command line that reproduces it. The soak (`--scenario soak`)
//! is one long run at a fixed rate, reported window by window; see `pipeline/soak.rs`.
//!
//! `cargo bench --bench pipeline` runs every scenario but the soak; `-- --help` lists the flags.

#[path = "pipeline/histogram.rs"]
mod histogram;
#[path = "pipeline/hub.rs"]
mod hub;
#[path = "pipeline/publisher.rs"]
mod publisher;
#[path = "pipeline/receiver.rs"]
mod receiver;
#[path = "pipeline/report.rs"]
mod report;
#[path = "pipeline/soak.rs"]
mod soak;
#[path = "pipeline/soak_report.rs"]
mod soak_report;
#[path = "pipeline/tables.rs"]
mod tables;
#[path = "pipeline/variants.rs"]
mod variants;
#[path = "pipeline/windows.rs"]
mod windows;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use sqlx::{Connection, PgConnection};

use hub::Hub;
use publisher::{Load, Target};
use report::Figures;
use variants::Variant;

const TOPIC: &str = "bench";

#[derive(Debug, Parser)]
#[command(name = "pipeline", about = "Tidings end-to-end benchmark")]
struct Args {
    /// Scenarios to run, comma-separated: fanout1, fanout10, fanout100 (maximum rate), steady (fixed rate, fan-out
    /// 1), ten (fixed rate, ten fast subscribers), slow (fixed rate, ten subscribers of which one answers after 2 s),
    /// limited (as slow, and one more of the ten rate-limited to --limit per second, with at least two deliverer
    /// processes), thinping (maximum rate, fan-out 1, WebSub thin pings: the hub fetches a topic URL per ping;
    /// latency from the fetch). `soak` (one long run at --soak-rate, reported per window) runs on its own and is not among the defaults.
    #[arg(long, value_delimiter = ',', default_value = "fanout1,fanout10,fanout100,steady,ten,slow,limited")]
    scenario: Vec<String>,
    /// Seconds of publishing per run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of publishing per run of fan-out 100 (each second of it is a hundred times as many deliveries to
    /// wait for, so it is kept short by default).
    #[arg(long, default_value_t = 2.0)]
    wide_duration: f64,
    /// Runs per scenario (medians are printed).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Events per second of the fixed-rate scenarios (steady, ten, slow).
    #[arg(long, default_value_t = 500.0)]
    rate: f64,
    /// Deliveries per second the rate-limited subscriber of `limited` asks for (`hub.x-rate`).
    #[arg(long, default_value_t = 50.0)]
    limit: f64,
    /// Publish requests in flight at maximum rate (and the cap at a fixed rate).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of publishing straight at the receivers, per run (the ceiling); 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    direct_duration: f64,
    /// Events per second of the soak.
    #[arg(long, default_value_t = 2000.0)]
    soak_rate: f64,
    /// Seconds of publishing of the soak.
    #[arg(long, default_value_t = 1800.0)]
    soak_duration: f64,
    /// Seconds per row of the soak.
    #[arg(long, default_value_t = 60.0)]
    soak_window: f64,
    /// Seconds at the start and at the end of the soak its summary compares.
    #[arg(long, default_value_t = 300.0)]
    soak_compare: f64,
    /// Subscribers of the soak.
    #[arg(long, default_value_t = 1)]
    soak_fanout: usize,
    /// callback-deliver processes per hub (one deliverer process per replica, all claiming from the same outbox).
    #[arg(long, default_value_t = 1)]
    deliverers: usize,
    /// Give up waiting for deliveries after this many seconds without progress (what is missing then is lost).
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Directories holding other builds of tidings, callbacks-spreader and callback-deliver to compare in the same
    /// runs (A/B); `.` is this checkout's release build.
    #[arg(long = "bins")]
    bins: Vec<String>,
    /// Environment for the hub processes (KEY=VALUE), applied to every variant. The soak's hub gets
    /// TIDINGS_PARTITION_INTERVAL=1m and TIDINGS_RETENTION=5m unless this sets them.
    #[arg(long = "hub-env")]
    hub_env: Vec<String>,
    /// Alternative environments to compare in the same runs, each `label:KEY=VALUE,KEY=VALUE`.
    #[arg(long = "variant")]
    variants: Vec<String>,
    /// PostgreSQL server (without a database name); each run creates and drops its own database.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432")]
    database_server: String,
    /// Where the hub processes' logs go.
    #[arg(long, default_value = "target/bench-logs")]
    logs: PathBuf,
    /// After each run, print where the time went from the database's own timestamps: publish to spread
    /// (`events.published_at` to `outbox.created_at`), spread to POST (to the first `delivery_attempts.started_at`)
    /// and publish to POST, p50/p90/p99 in ms.
    #[arg(long)]
    hops: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    fanout: usize,
    /// Fixed rate or maximum rate.
    fixed_rate: bool,
    /// The last subscriber answers after 2 s.
    slow: bool,
    /// The one before the slow one is rate-limited, and at least two deliverers run.
    limited: bool,
    /// Thin pings instead of events: the publisher names a topic URL the hub fetches.
    thin: bool,
}

impl Scenario {
    /// At maximum rate, every subscriber fast, events published directly.
    const fn plain(name: &'static str, fanout: usize) -> Self {
        Self { name, fanout, fixed_rate: false, slow: false, limited: false, thin: false }
    }

    fn slow_at(&self) -> Option<usize> {
        self.slow.then_some(self.fanout - 1)
    }

    fn limited_at(&self) -> Option<usize> {
        self.limited.then_some(self.fanout - 2)
    }

    fn deliverers(&self, args: &Args) -> usize {
        if self.limited {
            args.deliverers.max(2)
        } else {
            args.deliverers
        }
    }
}

/// Every scenario, by name: fan-out, then what sets it apart from a plain one at maximum rate.
const SCENARIOS: &[Scenario] = &[
    Scenario::plain("fanout1", 1),
    Scenario::plain("fanout10", 10),
    Scenario::plain("fanout100", 100),
    Scenario { fixed_rate: true, ..Scenario::plain("steady", 1) },
    Scenario { fixed_rate: true, ..Scenario::plain("ten", 10) },
    Scenario { fixed_rate: true, slow: true, ..Scenario::plain("slow", 10) },
    Scenario { fixed_rate: true, slow: true, limited: true, ..Scenario::plain("limited", 10) },
    Scenario { thin: true, ..Scenario::plain("thinping", 1) },
];

fn scenario(name: &str) -> anyhow::Result<Scenario> {
    match SCENARIOS.iter().find(|s| s.name == name) {
        Some(found) => Ok(*found),
        None => bail!("unknown scenario `{name}`"),
    }
}

fn load(args: &Args, sc: Scenario, duration: f64) -> Load {
    let duration = if sc.fanout >= 100 { duration.min(args.wide_duration) } else { duration };
    Load {
        duration: Duration::from_secs_f64(duration),
        rate: sc.fixed_rate.then_some(args.rate),
        concurrency: args.concurrency,
    }
}

/// Waits until every accepted event reached every measured subscriber, or nothing moved for `timeout`.
async fn drain(recorder: &receiver::Recorder, expected: u64, timeout: Duration) {
    let mut last = (recorder.unique_measured(), tokio::time::Instant::now());
    while recorder.unique_measured() < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = recorder.unique_measured();
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        } else if last.1.elapsed() > timeout {
            break;
        }
    }
}

async fn run_hub(args: &Args, sc: Scenario, variant: &Variant, run: usize) -> anyhow::Result<Figures> {
    let receivers = receiver::start(sc.fanout, sc.slow_at(), sc.limited_at(), Duration::from_secs(2))?;
    let database = format!("tidings_bench_{}_{run}", std::process::id());
    let logs = args.logs.join(format!("{}-{run}", sc.name));
    let deliverers = sc.deliverers(args);
    let hub = Hub::start(&variant.bins, &args.database_server, database, &variant.env, deliverers, &logs).await?;
    let client = publisher::client();
    let limited = sc.limited_at().map(|at| (at, args.limit));
    // A thin ping's topic is a URL the hub fetches: the receivers' feed.
    let topic = if sc.thin { receivers.feed.clone() } else { TOPIC.to_owned() };
    hub.subscribe(&client, &topic, &receivers.urls, limited, || receivers.recorder.verified()).await?;
    let mut db = PgConnection::connect(&hub.database_url).await?;
    let bytes_before = hub::database_bytes(&mut db).await?;
    let target = if sc.thin {
        Target::ThinPing { url: format!("{}/", hub.api), topic }
    } else {
        Target::Hub { url: format!("{}/events/raw?topic={TOPIC}", hub.api) }
    };
    let published = publisher::run(client, target, load(args, sc, args.duration)).await;
    let recorder = receivers.recorder.clone();
    let expected = published.accepted.len() as u64 * recorder.measured_count() as u64;
    let mid_rss = hub.rss();
    drain(&recorder, expected, Duration::from_secs_f64(args.drain_timeout)).await;
    let peak_rss = hub.peak_rss();
    let end_rss = hub.rss();
    let bytes_after = hub::database_bytes(&mut db).await?;
    if args.hops {
        eprintln!("run {run} {:<9} {:<12} {}", sc.name, variant.label, hub::hops(&mut db).await?);
    }
    db.close().await?;
    hub.stop().await?;
    receivers.stop().await;
    let mut figures = Figures::measure(&published, &recorder);
    figures.peak_rss = peak_rss;
    figures.rss_growth = end_rss.iter().zip(&mid_rss).map(|(e, m)| *e as i64 - *m as i64).collect();
    figures.db_bytes_per_event = (bytes_after - bytes_before) as f64 / published.accepted.len().max(1) as f64;
    Ok(figures)
}

async fn run_direct(args: &Args, sc: Scenario) -> anyhow::Result<Figures> {
    let receivers = receiver::start(sc.fanout, sc.slow_at(), sc.limited_at(), Duration::from_secs(2))?;
    let recorder = receivers.recorder.clone();
    // The slow and limited subscribers are not measured; the ceiling is the load on the measured ones.
    let urls = receivers.urls.iter().enumerate().filter(|(i, _)| recorder.subscribers[*i].measured()).map(|(_, u)| u);
    let target = Target::Direct { urls: urls.cloned().collect() };
    let published = publisher::run(publisher::client(), target, load(args, sc, args.direct_duration)).await;
    let expected = published.accepted.len() as u64 * recorder.measured_count() as u64;
    drain(&recorder, expected, Duration::from_secs(10)).await;
    receivers.stop().await;
    Ok(Figures::measure(&published, &recorder))
}

fn command() -> String {
    std::env::args().skip(1).filter(|a| a != "--bench").collect::<Vec<_>>().join(" ")
}

async fn run_soak(args: &Args) -> anyhow::Result<()> {
    if args.scenario.len() > 1 {
        bail!("the soak runs on its own: --scenario soak");
    }
    if !(args.soak_rate > 0.0 && args.soak_duration > 0.0 && args.soak_window > 0.0 && args.soak_fanout > 0) {
        bail!("--soak-rate, --soak-duration, --soak-window and --soak-fanout must be positive");
    }
    let variants = variants::variants(&args.bins, &soak::DEFAULT_ENV, &args.hub_env, &args.variants)?;
    let [variant] = variants.as_slice() else {
        bail!("the soak runs one build with one environment; it got {} variants", variants.len());
    };
    let settings = soak::Settings {
        rate: args.soak_rate,
        duration: Duration::from_secs_f64(args.soak_duration),
        window: Duration::from_secs_f64(args.soak_window),
        compare: Duration::from_secs_f64(args.soak_compare.max(0.0)),
        fanout: args.soak_fanout,
        concurrency: args.concurrency,
        deliverers: args.deliverers,
        drain_timeout: Duration::from_secs_f64(args.drain_timeout),
        database_server: args.database_server.clone(),
        logs: args.logs.clone(),
        command: command(),
    };
    soak::run(&settings, variant).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    receiver::now_ns();
    if args.deliverers == 0 {
        bail!("--deliverers must be at least 1");
    }
    if args.scenario.iter().any(|s| s.trim() == "soak") {
        return run_soak(&args).await;
    }
    let scenarios = args.scenario.iter().map(|s| scenario(s.trim())).collect::<anyhow::Result<Vec<_>>>()?;
    let variants = variants::variants(&args.bins, &[], &args.hub_env, &args.variants)?;
    let mut table = report::Table::new(&variants.iter().map(|v| v.label.clone()).collect::<Vec<_>>());
    for run in 0..args.runs {
        for &sc in &scenarios {
            for (v, variant) in variants.iter().enumerate() {
                let figures =
                    run_hub(&args, sc, variant, run).await.with_context(|| format!("{} run {run}", sc.name))?;
                eprintln!("run {run} {:<9} {:<12} {}", sc.name, variant.label, figures.line());
                table.add_hub(sc.name, v, figures);
            }
            if args.direct_duration > 0.0 {
                let figures = run_direct(&args, sc).await?;
                eprintln!("run {run} {:<9} {:<12} {}", sc.name, "direct", figures.line());
                table.add_direct(sc.name, figures);
            }
        }
    }
    println!("{}", table.render(&scenarios.iter().map(|s| s.name).collect::<Vec<_>>(), args.limit));
    println!("medians of {} run(s); reproduce with: cargo bench --bench pipeline -- {}", args.runs, command());
    Ok(())
}
