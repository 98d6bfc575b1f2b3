//! Prometheus metrics (`tidings_*`), one registry per running Tidings. Counters and histograms are updated where
//! things happen; gauges that describe shared state (outbox depth, spreader lag, subscriptions by state, pool
//! usage) are read from PostgreSQL when `/metrics` is scraped, so every process reports the same truth.

use std::sync::Arc;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use sqlx::PgPool;

const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

pub struct Metrics {
    registry: Registry,
    /// Events appended, by source: json, raw, thin_ping.
    pub events_appended: IntCounterVec,
    pub publish_seconds: Histogram,
    pub spread_events: IntCounter,
    pub spread_jobs: IntCounter,
    /// Finished delivery attempts (and cancelled jobs), by outcome.
    pub deliveries: IntCounterVec,
    /// Duration of callback requests, by kind (deliver, verify, deny).
    pub attempt_seconds: HistogramVec,
    /// Verification of intent and denial notices, by outcome.
    pub verifications: IntCounterVec,
    /// Deliveries a subscription's rate limit held back at a claim (each time it did).
    pub delivery_throttled: IntCounter,
    spreader_lag_events: IntGauge,
    spreader_lag_seconds: Gauge,
    outbox_jobs: IntGaugeVec,
    outbox_oldest_due_seconds: Gauge,
    subscriptions: IntGaugeVec,
    pool_connections: IntGaugeVec,
    log_partitions: IntGauge,
    log_oldest_period_seconds: Gauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    registry.register(Box::new(metric.clone())).expect("metric names are unique");
    metric
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let r = Registry::new();
        let counter_vec = |name: &str, help: &str, label: &str| {
            register(&r, IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
        };
        let gauge_vec = |name: &str, help: &str, label: &str| {
            register(&r, IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"))
        };
        let histogram = |name: &str, help: &str| HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        Arc::new(Self {
            events_appended: counter_vec(
                "tidings_events_appended_total",
                "Events appended to the log, by source.",
                "source",
            ),
            publish_seconds: register(
                &r,
                Histogram::with_opts(histogram(
                    "tidings_publish_seconds",
                    "Time to validate and durably append a publish request.",
                ))
                .expect("valid metric"),
            ),
            spread_events: register(
                &r,
                IntCounter::new("tidings_spread_events_total", "Events read by the spreader.").expect("valid metric"),
            ),
            spread_jobs: register(
                &r,
                IntCounter::new("tidings_spread_jobs_total", "Delivery jobs written by the spreader.")
                    .expect("valid metric"),
            ),
            deliveries: counter_vec(
                "tidings_deliveries_total",
                "Delivery attempts and cancelled jobs, by outcome.",
                "outcome",
            ),
            attempt_seconds: register(
                &r,
                HistogramVec::new(
                    histogram("tidings_attempt_seconds", "Duration of callback requests, by kind."),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            verifications: counter_vec(
                "tidings_verifications_total",
                "Verifications of intent and denial notices, by outcome.",
                "outcome",
            ),
            delivery_throttled: register(
                &r,
                IntCounter::new(
                    "tidings_delivery_throttled_total",
                    "Deliveries a subscription's rate limit pushed back at a claim, counted each time.",
                )
                .expect("valid metric"),
            ),
            spreader_lag_events: register(
                &r,
                IntGauge::new("tidings_spreader_lag_positions", "Log head position minus the spreader's position.")
                    .expect("valid metric"),
            ),
            spreader_lag_seconds: register(
                &r,
                Gauge::new("tidings_spreader_lag_seconds", "Age of the oldest event not yet spread.")
                    .expect("valid metric"),
            ),
            outbox_jobs: gauge_vec("tidings_outbox_jobs", "Outbox jobs by state (due, scheduled, dead).", "state"),
            outbox_oldest_due_seconds: register(
                &r,
                Gauge::new("tidings_outbox_oldest_due_seconds", "How long the oldest due job has been waiting.")
                    .expect("valid metric"),
            ),
            subscriptions: gauge_vec("tidings_subscriptions", "Subscriptions by state.", "state"),
            pool_connections: gauge_vec(
                "tidings_db_pool_connections",
                "Database pool connections of this process (idle, in_use, max).",
                "state",
            ),
            log_partitions: register(
                &r,
                IntGauge::new("tidings_log_partitions", "Live time periods of the log (each one partition per table).")
                    .expect("valid metric"),
            ),
            log_oldest_period_seconds: register(
                &r,
                Gauge::new(
                    "tidings_log_oldest_period_seconds",
                    "Age of the end of the oldest live period: above TIDINGS_RETENTION, pending jobs are holding it.",
                )
                .expect("valid metric"),
            ),
            registry: r,
        })
    }

    /// Reads the shared-state gauges from the database, then renders everything in the text format.
    pub async fn render(&self, pool: &PgPool) -> String {
        if let Err(e) = self.refresh(pool).await {
            tracing::warn!(error = %e, "could not read metrics from the database");
        }
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding never fails");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let size = pool.size() as i64;
        let idle = pool.num_idle() as i64;
        self.pool_connections.with_label_values(&["idle"]).set(idle);
        self.pool_connections.with_label_values(&["in_use"]).set(size - idle);
        self.pool_connections.with_label_values(&["max"]).set(pool.options().get_max_connections() as i64);
        let (due, scheduled, dead, lag_positions, lag_seconds): (i64, i64, i64, i64, Option<f64>) =
            sqlx::query_as(
                "SELECT p.due, p.scheduled,
                        (SELECT count(*) FROM outbox WHERE state = 'dead'),
                        coalesce((SELECT max(position) FROM events), 0) - (SELECT position FROM spreader_cursor WHERE id),
                        (SELECT extract(epoch FROM now() - e.published_at)::float8 FROM events e
                          WHERE (e.txid, e.position) > ((SELECT txid FROM spreader_cursor WHERE id), (SELECT position FROM spreader_cursor WHERE id))
                          ORDER BY e.txid, e.position LIMIT 1)
                 FROM (SELECT count(*) FILTER (WHERE due_at <= now()) AS due,
                              count(*) FILTER (WHERE due_at > now()) AS scheduled
                       FROM outbox WHERE state = 'pending') p",
            )
            .fetch_one(pool)
            .await?;
        self.outbox_jobs.with_label_values(&["due"]).set(due);
        self.outbox_jobs.with_label_values(&["scheduled"]).set(scheduled);
        self.outbox_jobs.with_label_values(&["dead"]).set(dead);
        let oldest_due = crate::outbox::next_due(pool).await?.map(|at| (chrono::Utc::now() - at).num_milliseconds());
        self.outbox_oldest_due_seconds.set(oldest_due.unwrap_or(0).max(0) as f64 / 1000.0);
        self.spreader_lag_events.set(lag_positions.max(0));
        self.spreader_lag_seconds.set(lag_seconds.unwrap_or(0.0));
        let (periods, oldest_end): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), extract(epoch FROM now() - min(ends_at))::float8 FROM log_partitions WHERE dropped_at IS NULL",
        )
        .fetch_one(pool)
        .await?;
        self.log_partitions.set(periods);
        self.log_oldest_period_seconds.set(oldest_end.unwrap_or(0.0).max(0.0));
        let states: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, count(*) FROM subscriptions GROUP BY state").fetch_all(pool).await?;
        for state in ["pending", "active", "expired", "unsubscribed", "denied"] {
            let n = states.iter().find(|(s, _)| s == state).map(|(_, n)| *n).unwrap_or(0);
            self.subscriptions.with_label_values(&[state]).set(n);
        }
        Ok(())
    }
}
