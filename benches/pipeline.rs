//! The pipeline benchmark: the release binaries of Tidings as separate processes against a fresh database,
//! fast receivers on 127.0.0.1 subscribed through real WebSub verification, a publisher that stamps each event
//! with its send time, and the same load POSTed straight at the receivers as the ceiling. Prints the medians of
//! several runs per scenario as a table, and the command line that reproduces it.
//!
//! `cargo bench --bench pipeline` runs every scenario; `-- --help` lists the flags.

#[path = "pipeline/hub.rs"]
mod hub;
#[path = "pipeline/publisher.rs"]
mod publisher;
#[path = "pipeline/receiver.rs"]
mod receiver;
#[path = "pipeline/report.rs"]
mod report;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use sqlx::{Connection, PgConnection};

use hub::{Binaries, Hub};
use publisher::{Load, Target};
use report::Figures;

const TOPIC: &str = "bench";

#[derive(Debug, Parser)]
#[command(name = "pipeline", about = "Tidings end-to-end benchmark")]
struct Args {
    /// Scenarios to run, comma-separated: fanout1, fanout10, fanout100 (maximum rate), steady (fixed rate, fan-out
    /// 1), ten (fixed rate, ten fast subscribers), slow (fixed rate, ten subscribers of which one answers after 2 s).
    #[arg(long, value_delimiter = ',', default_value = "fanout1,fanout10,fanout100,steady,ten,slow")]
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
    /// Publish requests in flight at maximum rate (and the cap at a fixed rate).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of publishing straight at the receivers, per run (the ceiling); 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    direct_duration: f64,
    /// Give up waiting for deliveries after this many seconds without progress (what is missing then is lost).
    #[arg(long, default_value_t = 60.0)]
    drain_timeout: f64,
    /// Directories holding other builds of tidings, callbacks-spreader and callback-deliver to compare in the same
    /// runs (A/B); `.` is this checkout's release build.
    #[arg(long = "bins")]
    bins: Vec<String>,
    /// Environment for the hub processes (KEY=VALUE), applied to every variant.
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
    slow: bool,
}

fn scenario(name: &str) -> anyhow::Result<Scenario> {
    let (fanout, fixed_rate, slow) = match name {
        "fanout1" => (1, false, false),
        "fanout10" => (10, false, false),
        "fanout100" => (100, false, false),
        "steady" => (1, true, false),
        "ten" => (10, true, false),
        "slow" => (10, true, true),
        other => bail!("unknown scenario `{other}`"),
    };
    let name = ["fanout1", "fanout10", "fanout100", "steady", "ten", "slow"]
        .into_iter()
        .find(|n| *n == name)
        .expect("listed above");
    Ok(Scenario { name, fanout, fixed_rate, slow })
}

#[derive(Debug, Clone)]
struct Variant {
    label: String,
    bins: Binaries,
    env: Vec<(String, String)>,
}

fn parse_env(pairs: &str) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').with_context(|| format!("`{p}` is not KEY=VALUE"))?;
            Ok((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

fn variants(args: &Args) -> anyhow::Result<Vec<Variant>> {
    let mut base_env = vec![("TIDINGS_SHUTDOWN_GRACE_SECONDS".to_owned(), "1".to_owned())];
    for e in &args.hub_env {
        base_env.extend(parse_env(e)?);
    }
    let mut builds = Vec::new();
    if args.bins.is_empty() || args.bins.iter().any(|b| b == ".") {
        builds.push(Binaries::this_checkout()?);
    }
    for dir in args.bins.iter().filter(|b| *b != ".") {
        builds.push(Binaries::from_dir(dir.as_ref())?);
    }
    let mut envs = Vec::new();
    for v in &args.variants {
        let (label, pairs) = v.split_once(':').unwrap_or((v.as_str(), ""));
        envs.push((label.to_owned(), parse_env(pairs)?));
    }
    if envs.is_empty() {
        envs.push((String::new(), Vec::new()));
    }
    let mut out = Vec::new();
    for bins in &builds {
        for (label, env) in &envs {
            let mut full = base_env.clone();
            full.extend(env.iter().cloned());
            let label = match (builds.len() > 1, label.is_empty()) {
                (true, true) => bins.label.clone(),
                (true, false) => format!("{} {label}", bins.label),
                (false, _) => label.clone(),
            };
            out.push(Variant { label, bins: bins.clone(), env: full });
        }
    }
    Ok(out)
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
    let receivers = receiver::start(sc.fanout, sc.slow.then_some(sc.fanout - 1), Duration::from_secs(2))?;
    let database = format!("tidings_bench_{}_{run}", std::process::id());
    let logs = args.logs.join(format!("{}-{run}", sc.name));
    let hub = Hub::start(&variant.bins, &args.database_server, database, &variant.env, &logs).await?;
    let client = publisher::client();
    for url in &receivers.urls {
        let response = client
            .post(format!("{}/", hub.api))
            .form(&[("hub.mode", "subscribe"), ("hub.topic", TOPIC), ("hub.callback", url)])
            .send()
            .await?;
        if response.status().as_u16() != 202 {
            bail!("subscribing {url} answered {}", response.status());
        }
    }
    let mut db = PgConnection::connect(&hub.database_url).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active: i64 =
            sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE state = 'active'").fetch_one(&mut db).await?;
        if active as usize == sc.fanout {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "only {active} of {} subscriptions were verified ({} challenges answered)",
                sc.fanout,
                receivers.recorder.verified()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bytes_before = hub::database_bytes(&mut db).await?;
    let target = Target::Hub { url: format!("{}/events/raw?topic={TOPIC}", hub.api) };
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
    let receivers = receiver::start(sc.fanout, sc.slow.then_some(sc.fanout - 1), Duration::from_secs(2))?;
    let recorder = receivers.recorder.clone();
    // The slow subscriber is not measured; the ceiling is the load on the measured ones.
    let urls = receivers.urls.iter().enumerate().filter(|(i, _)| !recorder.subscribers[*i].slow).map(|(_, u)| u);
    let target = Target::Direct { urls: urls.cloned().collect() };
    let published = publisher::run(publisher::client(), target, load(args, sc, args.direct_duration)).await;
    let expected = published.accepted.len() as u64 * recorder.measured_count() as u64;
    drain(&recorder, expected, Duration::from_secs(10)).await;
    receivers.stop().await;
    Ok(Figures::measure(&published, &recorder))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scenarios = args.scenario.iter().map(|s| scenario(s.trim())).collect::<anyhow::Result<Vec<_>>>()?;
    let variants = variants(&args)?;
    receiver::now_ns();
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
    let command = std::env::args().skip(1).filter(|a| a != "--bench").collect::<Vec<_>>().join(" ");
    println!("{}", table.render(&scenarios.iter().map(|s| s.name).collect::<Vec<_>>()));
    println!("medians of {} run(s); reproduce with: cargo bench --bench pipeline -- {command}", args.runs);
    Ok(())
}
