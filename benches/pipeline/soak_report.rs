//! The soak's output, in markdown so it can be pasted as it is: a header, one row per window, and the summary
//! (the first minutes against the last, the tables' growth, lost and duplicate deliveries, the publisher's rate,
//! and the command line that reproduces the run).

use std::ops::Range;

use crate::{
    histogram::Histogram,
    soak::Settings,
    tables::{Tables, TABLES},
    variants::effective,
    windows::{Clock, Sent},
};

/// A change within this fraction counts as flat.
const FLAT: f64 = 0.10;

/// What was read at the end of one window.
pub struct Sample {
    /// Seconds since publishing began.
    pub elapsed_s: f64,
    /// Per hub process (serve, spreader, deliver), bytes.
    pub peak_rss: Vec<u64>,
    pub rss: Vec<u64>,
    pub tables: Tables,
}

fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1048576.0)
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.2}")
    }
}

fn per_process(bytes: &[u64]) -> String {
    bytes.iter().map(|b| mb(*b as f64)).collect::<Vec<_>>().join(" / ")
}

fn env_line(env: &[(String, String)]) -> String {
    effective(env).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

pub fn header(s: &Settings, env: &[(String, String)]) -> String {
    format!(
        "### Soak: {} events/s for {} s, fan-out {}, {} s windows\n\nhub environment: `{}`\n\n\
         | t s | accepted/s | delivered ev/s | p50 ms | p99 ms | max ms | late | peak RSS MB serve / spreader / deliver \
         | RSS MB serve / spreader / deliver | events MB | outbox MB | attempts MB | dead tuples events / outbox / \
         attempts | events partitions | outbox pending |\n\
         |--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        s.rate,
        s.duration.as_secs_f64(),
        s.fanout,
        s.window.as_secs_f64(),
        env_line(env),
    )
}

/// The row of window `k`: its rates and latencies, and `sample` read when it ended.
pub fn row(
    clock: &Clock,
    k: usize,
    sent: Sent,
    latency: &Histogram,
    arrived: u64,
    measured: u64,
    sample: &Sample,
) -> String {
    let seconds = clock.seconds(k);
    let late = (sent.accepted * measured).saturating_sub(latency.total());
    let t = &sample.tables.tables;
    let cell = |i: usize, f: &dyn Fn(&crate::tables::Table) -> String| {
        t.get(i).copied().flatten().map_or("–".into(), |table| f(&table))
    };
    let dead = (0..TABLES.len()).map(|i| cell(i, &|t| t.dead_tuples.to_string())).collect::<Vec<_>>().join(" / ");
    format!(
        "| {:.0} | {:.0} | {:.0} | {} | {} | {} | {late} | {} | {} | {} | {} | {} | {dead} | {} | {} |",
        sample.elapsed_s,
        sent.accepted as f64 / seconds,
        arrived as f64 / measured.max(1) as f64 / seconds,
        ms(latency.percentile_ms(0.50)),
        ms(latency.percentile_ms(0.99)),
        ms(latency.max_ms()),
        per_process(&sample.peak_rss),
        per_process(&sample.rss),
        cell(0, &|t| mb(t.bytes as f64)),
        cell(1, &|t| mb(t.bytes as f64)),
        cell(2, &|t| mb(t.bytes as f64)),
        cell(0, &|t| t.partitions.to_string()),
        sample.tables.pending.map_or("–".into(), |p| p.to_string()),
    )
}

/// Some windows of the run, taken together.
pub struct Span {
    pub windows: Range<usize>,
    pub seconds: f64,
    /// Latencies of the events published in these windows.
    pub latency: Histogram,
    /// First deliveries that arrived in these windows.
    pub arrived: u64,
}

pub struct Summary<'a> {
    pub settings: &'a Settings,
    pub env: &'a [(String, String)],
    pub samples: &'a [Sample],
    pub first: Span,
    pub last: Span,
    pub sent: Sent,
    pub measured: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub unparsable: u64,
}

fn compare(name: &str, first: f64, last: f64) -> String {
    let change = (last - first) / first;
    let (change, flat) = if change.is_finite() {
        (format!("{:+.1} %", change * 100.0), if change.abs() <= FLAT { "yes" } else { "no" })
    } else {
        ("–".into(), "–")
    };
    format!("| {name} | {first:.2} | {last:.2} | {change} | {flat} |\n")
}

impl Summary<'_> {
    fn delivered_per_s(&self, span: &Span) -> f64 {
        span.arrived as f64 / self.measured.max(1) as f64 / span.seconds
    }

    /// Per table: the largest size, when it was read, the size at the end, and the verdict: bounded when the
    /// largest size within the last span is at most 10 % above the largest before it.
    fn sizes(&self) -> String {
        let mut out = format!(
            "| table | max MB | max at t s | at end MB | max in the last {:.0} s ÷ max before | size |\n|---|--:|--:|--:|--:|---|\n",
            self.last.seconds
        );
        for (i, name) in TABLES.iter().enumerate() {
            let bytes: Vec<Option<i64>> =
                self.samples.iter().map(|s| s.tables.tables.get(i).copied().flatten().map(|t| t.bytes)).collect();
            let max_of = |r: Range<usize>| bytes.get(r).unwrap_or_default().iter().flatten().copied().max();
            let Some((at, max)) =
                bytes.iter().enumerate().filter_map(|(k, b)| b.map(|b| (k, b))).max_by_key(|(_, b)| *b)
            else {
                out.push_str(&format!("| {name} | – | – | – | – | – |\n"));
                continue;
            };
            let end = bytes.last().copied().flatten().map_or("–".into(), |b| mb(b as f64));
            let ratio = match (max_of(self.last.windows.clone()), max_of(0..self.last.windows.start)) {
                (Some(last), Some(before)) if before > 0 => Some(last as f64 / before as f64),
                _ => None,
            };
            let verdict = ratio.map_or("–", |r| if r <= 1.0 + FLAT { "bounded" } else { "growing" });
            out.push_str(&format!(
                "| {name} | {} | {:.0} | {end} | {} | {verdict} |\n",
                mb(max as f64),
                self.samples[at].elapsed_s,
                ratio.map_or("–".into(), |r| format!("{r:.2}")),
            ));
        }
        out
    }

    pub fn render(&self) -> String {
        let s = self.settings;
        let (first, last) = (&self.first, &self.last);
        let mut out = format!(
            "\n#### Summary\n\n{} events/s for {} s, fan-out {}, hub environment `{}`.\n\n| figure | first {:.0} s | last {:.0} s | change | flat (±10 %) |\n|---|--:|--:|--:|---|\n",
            s.rate,
            s.duration.as_secs_f64(),
            s.fanout,
            env_line(self.env),
            first.seconds,
            last.seconds
        );
        out.push_str(&compare("delivered events/s", self.delivered_per_s(first), self.delivered_per_s(last)));
        out.push_str(&compare("p99 ms", first.latency.percentile_ms(0.99), last.latency.percentile_ms(0.99)));
        if first.windows.end > last.windows.start {
            out.push_str("\nThe run is too short for the two spans to be apart: they overlap.\n");
        }
        out.push('\n');
        out.push_str(&self.sizes());
        let accepted_per_s = self.sent.accepted as f64 / s.duration.as_secs_f64();
        let kept_up = accepted_per_s >= 0.99 * s.rate;
        out.push_str(&format!(
            "\nPublisher: {:.0} events/s accepted of {} targeted ({:.1} %), {} failed{}.\n",
            accepted_per_s,
            s.rate,
            accepted_per_s / s.rate * 100.0,
            self.sent.failed,
            if kept_up {
                String::new()
            } else {
                format!(
                    "; the target rate was not kept (at most {} publishes in flight), so every figure is for the rate \
                     accepted",
                    s.concurrency
                )
            },
        ));
        out.push_str(&format!(
            "Deliveries to measured subscribers: {} accepted events, lost {}, duplicates {}, unparsable {}.\n",
            self.sent.accepted, self.lost, self.duplicates, self.unparsable,
        ));
        out.push_str(&format!("\nReproduce with: `cargo bench --bench pipeline -- {}`\n", s.command));
        out
    }
}
