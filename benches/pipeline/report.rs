//! Figures of one run, and the table of medians over runs.

use std::collections::BTreeMap;

use crate::{publisher::Published, receiver::Recorder};

#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub accepted_per_s: f64,
    pub failed: u64,
    pub deliveries_per_s: f64,
    pub events_delivered_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Per hub process, in bytes (empty for the direct ceiling).
    pub peak_rss: Vec<u64>,
    /// Per hub process: resident memory at the end of the drain minus at the end of publishing.
    pub rss_growth: Vec<i64>,
    pub db_bytes_per_event: f64,
    pub lost: u64,
    pub duplicates: u64,
    /// Deliveries a second the rate-limited subscriber received while publishing went on (NaN without one).
    pub limited_per_s: f64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

impl Figures {
    pub fn measure(published: &Published, recorder: &Recorder) -> Self {
        let mut latencies = recorder.latencies_us();
        latencies.sort_unstable();
        let delivered = recorder.unique_measured();
        let span = (recorder.last_ns().max(published.end_ns) - published.start_ns) as f64 / 1e9;
        let deliveries_per_s = delivered as f64 / span;
        let (lost, duplicates) = recorder.lost_and_duplicates(published.accepted.iter().copied());
        Figures {
            accepted_per_s: published.accepted_per_second(),
            failed: published.failed + recorder.unparsable(),
            deliveries_per_s,
            events_delivered_per_s: deliveries_per_s / recorder.measured_count().max(1) as f64,
            p50_ms: percentile(&latencies, 0.50),
            p95_ms: percentile(&latencies, 0.95),
            p99_ms: percentile(&latencies, 0.99),
            max_ms: percentile(&latencies, 1.0),
            lost,
            duplicates,
            limited_per_s: recorder
                .subscribers
                .iter()
                .find_map(|s| s.arrival_rate(published.end_ns))
                .unwrap_or(f64::NAN),
            ..Default::default()
        }
    }

    pub fn line(&self) -> String {
        let mb = |b: &u64| format!("{:.1}", *b as f64 / 1048576.0);
        format!(
            "accepted {:.0}/s, delivered {:.0} ev/s ({:.0} deliveries/s), p50 {:.2} p95 {:.2} p99 {:.2} max {:.1} ms, \
             RSS {} MB (growth {} kB), {:.0} B/event, lost {}, dup {}, failed {}{}",
            self.accepted_per_s,
            self.events_delivered_per_s,
            self.deliveries_per_s,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.max_ms,
            self.peak_rss.iter().map(mb).collect::<Vec<_>>().join("/"),
            self.rss_growth.iter().map(|g| (g / 1024).to_string()).collect::<Vec<_>>().join("/"),
            self.db_bytes_per_event,
            self.lost,
            self.duplicates,
            self.failed,
            if self.limited_per_s.is_nan() { String::new() } else { format!(", limited {:.1}/s", self.limited_per_s) },
        )
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub struct Table {
    variants: Vec<String>,
    hub: BTreeMap<(String, usize), Vec<Figures>>,
    direct: BTreeMap<String, Vec<Figures>>,
}

impl Table {
    pub fn new(variants: &[String]) -> Self {
        Self { variants: variants.to_vec(), hub: BTreeMap::new(), direct: BTreeMap::new() }
    }

    pub fn add_hub(&mut self, scenario: &str, variant: usize, figures: Figures) {
        self.hub.entry((scenario.to_owned(), variant)).or_default().push(figures);
    }

    pub fn add_direct(&mut self, scenario: &str, figures: Figures) {
        self.direct.entry(scenario.to_owned()).or_default().push(figures);
    }

    fn med(runs: &[Figures], f: impl Fn(&Figures) -> f64) -> f64 {
        median(runs.iter().map(f).collect())
    }

    pub fn render(&self, scenarios: &[&str], limit: f64) -> String {
        let mut out = String::from(
            "| scenario | variant | accepted ev/s | delivered ev/s | deliveries/s | direct deliveries/s | hub ÷ direct \
             | p50 ms | p95 ms | p99 ms | max ms | peak RSS MB serve/spreader/deliver | DB bytes/event | lost | dup |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let mut p99 = BTreeMap::new();
        let mut limited = BTreeMap::new();
        for scenario in scenarios {
            let direct = self.direct.get(*scenario).map(|runs| Self::med(runs, |f| f.deliveries_per_s));
            for (v, label) in self.variants.iter().enumerate() {
                let Some(runs) = self.hub.get(&(scenario.to_string(), v)) else { continue };
                let m = |f: &dyn Fn(&Figures) -> f64| Self::med(runs, f);
                let deliveries = m(&|f| f.deliveries_per_s);
                let rss = (0..3)
                    .map(|i| format!("{:.1}", m(&|f| f.peak_rss.get(i).copied().unwrap_or(0) as f64) / 1048576.0))
                    .collect::<Vec<_>>()
                    .join(" / ");
                let lost: u64 = runs.iter().map(|f| f.lost).max().unwrap_or(0);
                let dup: u64 = runs.iter().map(|f| f.duplicates).max().unwrap_or(0);
                p99.insert((scenario.to_string(), v), m(&|f| f.p99_ms));
                limited.insert((scenario.to_string(), v), m(&|f| f.limited_per_s));
                out.push_str(&format!(
                    "| {scenario} | {label} | {:.0} | {:.0} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {rss} | {:.0} | {lost} | {dup} |\n",
                    m(&|f| f.accepted_per_s),
                    m(&|f| f.events_delivered_per_s),
                    deliveries,
                    direct.map_or("–".into(), |d| format!("{d:.0}")),
                    direct.map_or("–".into(), |d| format!("{:.2}", deliveries / d)),
                    m(&|f| f.p50_ms),
                    m(&|f| f.p95_ms),
                    m(&|f| f.p99_ms),
                    m(&|f| f.max_ms),
                    m(&|f| f.db_bytes_per_event),
                ));
            }
        }
        for (v, label) in self.variants.iter().enumerate() {
            if let (Some(slow), Some(ten)) = (p99.get(&("slow".into(), v)), p99.get(&("ten".into(), v))) {
                out.push_str(&format!(
                    "\nslow subscriber{}: the other nine's p99 is {slow:.2} ms against {ten:.2} ms with none slow (Δ {:+.2} ms)\n",
                    if label.is_empty() { String::new() } else { format!(" ({label})") },
                    slow - ten
                ));
            }
        }
        for (v, label) in self.variants.iter().enumerate() {
            let (Some(rate), Some(others), Some(ten)) =
                (limited.get(&("limited".into(), v)), p99.get(&("limited".into(), v)), p99.get(&("ten".into(), v)))
            else {
                continue;
            };
            out.push_str(&format!(
                "\nrate-limited subscriber{}: received {rate:.1}/s against its limit of {limit}/s ({:+.1} %); with it and \
                 one slow, the other eight's p99 is {others:.2} ms against {ten:.2} ms for ten (Δ {:+.2} ms)\n",
                if label.is_empty() { String::new() } else { format!(" ({label})") },
                (rate / limit - 1.0) * 100.0,
                others - ten
            ));
        }
        out.push_str("\nlost and dup are the largest over the runs; every other figure is the median.\n");
        out
    }
}
