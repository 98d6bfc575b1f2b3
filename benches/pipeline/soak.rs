//! The soak: one long run at a fixed rate, the hub rotating its log into time partitions and dropping expired ones
//! (by default every minute, after five), to show whether its performance stays flat. Every window it prints a
//! row: rates, the latencies of the events published in that window, memory, and the tables' sizes; at the end a
//! summary comparing the first minutes with the last. A row is printed once every event of its window has been
//! delivered, or when the next window has ended, whichever comes first (its `late` column then says how many
//! deliveries were still missing). A hub process that exits ends the run with an error.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tokio::time::Instant;

use crate::{
    hub::Hub,
    publisher::{self, Load, Target},
    receiver::{self, now_ns, Receivers},
    soak_report::{self, Sample, Span},
    tables,
    variants::Variant,
    windows::{Clock, Deliveries, Publishes},
    TOPIC,
};

/// How often pending rows are checked for completeness.
const POLL: Duration = Duration::from_millis(250);

/// The soak's hub environment unless `--hub-env` says otherwise.
pub const DEFAULT_ENV: [(&str, &str); 2] = [("TIDINGS_PARTITION_INTERVAL", "1m"), ("TIDINGS_RETENTION", "5m")];

#[derive(Debug, Clone)]
pub struct Settings {
    pub rate: f64,
    pub duration: Duration,
    pub window: Duration,
    /// How much of the start and of the end the summary compares.
    pub compare: Duration,
    pub fanout: usize,
    pub concurrency: usize,
    pub deliverers: usize,
    pub drain_timeout: Duration,
    pub database_server: String,
    pub logs: PathBuf,
    /// The arguments that reproduce the run.
    pub command: String,
}

/// Runs the soak against `variant` and prints its rows and summary.
pub async fn run(settings: &Settings, variant: &Variant) -> anyhow::Result<()> {
    let deliveries = Arc::new(Deliveries::default());
    let receivers = receiver::start_windowed(settings.fanout, deliveries.clone())?;
    let database = format!("tidings_bench_{}_soak", std::process::id());
    let logs = settings.logs.join("soak");
    let mut hub =
        Hub::start(&variant.bins, &settings.database_server, database, &variant.env, settings.deliverers, &logs)
            .await?;
    let result = soak(settings, variant, &mut hub, &receivers, &deliveries, &logs).await;
    let stopped = hub.stop().await;
    receivers.stop().await;
    result.and(stopped)
}

async fn soak(
    settings: &Settings,
    variant: &Variant,
    hub: &mut Hub,
    receivers: &Receivers,
    deliveries: &Deliveries,
    logs: &std::path::Path,
) -> anyhow::Result<()> {
    let client = publisher::client();
    hub.subscribe(&client, TOPIC, &receivers.urls, None, || receivers.recorder.verified()).await?;
    let mut db = PgConnection::connect(&hub.database_url).await?;
    let recorder = &receivers.recorder;
    let measured = recorder.measured_count() as u64;
    println!("{}", soak_report::header(settings, &variant.env));
    let started = Instant::now();
    let clock = Clock::new(now_ns(), settings.window, settings.duration);
    let at = |ns: u64| started + Duration::from_nanos(ns - clock.origin_ns);
    deliveries.begin(clock);
    let publishes = Arc::new(Publishes::new(clock));
    let target = Target::Hub { url: format!("{}/events/raw?topic={TOPIC}", hub.api) };
    let load = Load { duration: settings.duration, rate: Some(settings.rate), concurrency: settings.concurrency };
    let publisher = tokio::spawn(publisher::drive(client, target, load, publishes.clone()));

    let complete = |k: usize, publisher_done: bool| {
        let sent = publishes.window(k);
        let (latency, _) = deliveries.over(k..k + 1);
        sent.in_flight == 0 && (k + 1 < clock.count || publisher_done) && latency.total() >= sent.accepted * measured
    };
    let row = |k: usize, sample: &Sample| {
        let (latency, arrived) = deliveries.over(k..k + 1);
        soak_report::row(&clock, k, publishes.window(k), &latency, arrived, measured, sample)
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut printed = 0;
    while samples.len() < clock.count {
        let next = at(clock.end_of(samples.len()));
        tokio::time::sleep_until(next.min(Instant::now() + POLL)).await;
        if Instant::now() >= next {
            let exited = hub.exited();
            if !exited.is_empty() {
                let elapsed = started.elapsed().as_secs();
                bail!("{} exited {elapsed} s into the soak; see {}", exited.join(", "), logs.display());
            }
            let elapsed_s = (clock.end_of(samples.len()) - clock.origin_ns) as f64 / 1e9;
            let (peak_rss, rss) = (hub.peak_rss(), hub.rss());
            samples.push(Sample { elapsed_s, peak_rss, rss, tables: tables::read(&mut db).await });
        }
        while printed < samples.len() && (printed + 1 < samples.len() || complete(printed, false)) {
            println!("{}", row(printed, &samples[printed]));
            printed += 1;
        }
    }

    // Publishing is over: wait for the last answers and deliveries, as long as deliveries keep coming.
    let mut progress = (recorder.unique_measured(), Instant::now());
    while printed < clock.count {
        tokio::time::sleep(POLL).await;
        let delivered = recorder.unique_measured();
        if delivered != progress.0 {
            progress = (delivered, Instant::now());
        }
        let done = publisher.is_finished();
        let given_up = done && progress.1.elapsed() > settings.drain_timeout;
        while printed < clock.count && (given_up || complete(printed, done)) {
            println!("{}", row(printed, &samples[printed]));
            printed += 1;
        }
    }
    publisher.await.context("the publisher failed")?;
    db.close().await?;

    // Whole windows, at least one, and the two spans apart unless the run is a single window.
    let wanted = (settings.compare.as_secs_f64() / settings.window.as_secs_f64()).round() as usize;
    let spans = wanted.clamp(1, (clock.count / 2).max(1));
    let span = |range: std::ops::Range<usize>| {
        let seconds = range.clone().map(|k| clock.seconds(k)).sum();
        let (latency, arrived) = deliveries.over(range.clone());
        Span { windows: range, seconds, latency, arrived }
    };
    let (lost, duplicates) = recorder.lost_and_duplicates(publishes.accepted());
    let summary = soak_report::Summary {
        settings,
        env: &variant.env,
        samples: &samples,
        first: span(0..spans),
        last: span(clock.count - spans..clock.count),
        sent: publishes.total(),
        measured,
        lost,
        duplicates,
        unparsable: recorder.unparsable(),
    };
    println!("{}", summary.render());
    Ok(())
}
