//! Per-window bookkeeping for the soak, bounded whatever the length of the run: the run is cut into windows of
//! equal length (the last may be shorter); what the publisher sent and had accepted, and the latencies of
//! first deliveries, are counted by the window their event was *published* in, and first deliveries also by the
//! window they *arrived* in. Each window holds a [`Histogram`] (48 kB) and a few counters; the accepted events
//! are one bit each, for counting lost and duplicate deliveries exactly at the end.

use std::{
    sync::{Mutex, OnceLock},
    time::Duration,
};

use crate::{histogram::Histogram, publisher::Ledger};

/// Where the windows are, on the clock of [`crate::receiver::now_ns`].
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub origin_ns: u64,
    pub width_ns: u64,
    pub end_ns: u64,
    pub count: usize,
}

impl Clock {
    pub fn new(origin_ns: u64, width: Duration, duration: Duration) -> Self {
        let width_ns = (width.as_nanos() as u64).max(1);
        let length = duration.as_nanos() as u64;
        let count = length.div_ceil(width_ns).max(1) as usize;
        Self { origin_ns, width_ns, end_ns: origin_ns + length, count }
    }

    /// The window an event sent at `ns` belongs to; one sent just after the end (its request began before) counts
    /// in the last window.
    pub fn window(&self, ns: u64) -> usize {
        ((ns.saturating_sub(self.origin_ns) / self.width_ns) as usize).min(self.count - 1)
    }

    /// The window `ns` falls in, None after the end.
    pub fn during(&self, ns: u64) -> Option<usize> {
        (ns < self.end_ns).then(|| self.window(ns))
    }

    /// When window `k` ends.
    pub fn end_of(&self, k: usize) -> u64 {
        (self.origin_ns + (k as u64 + 1) * self.width_ns).min(self.end_ns)
    }

    /// How long window `k` is, in seconds.
    pub fn seconds(&self, k: usize) -> f64 {
        (self.end_of(k) - (self.origin_ns + k as u64 * self.width_ns)) as f64 / 1e9
    }
}

#[derive(Default, Clone)]
struct Arrivals {
    /// Latencies of first deliveries of events published in this window.
    latency: Histogram,
    /// First deliveries that arrived in this window.
    arrived: u64,
}

/// What the receivers saw, per window; inert until [`Deliveries::begin`].
#[derive(Default)]
pub struct Deliveries {
    clock: OnceLock<Clock>,
    windows: Mutex<Vec<Arrivals>>,
}

impl Deliveries {
    pub fn begin(&self, clock: Clock) {
        *self.windows.lock().expect("windows lock") = vec![Arrivals::default(); clock.count];
        let _ = self.clock.set(clock);
    }

    /// A first delivery to a measured subscriber of an event sent at `sent_ns`, arrived at `now_ns`.
    pub fn record(&self, sent_ns: u64, now_ns: u64, latency_us: u32) {
        let Some(clock) = self.clock.get() else { return };
        let mut windows = self.windows.lock().expect("windows lock");
        windows[clock.window(sent_ns)].latency.record(latency_us);
        if let Some(k) = clock.during(now_ns) {
            windows[k].arrived += 1;
        }
    }

    /// Over windows `range`: the merged latencies of the events published in them, and the first deliveries that
    /// arrived in them.
    pub fn over(&self, range: std::ops::Range<usize>) -> (Histogram, u64) {
        let windows = self.windows.lock().expect("windows lock");
        let mut latency = Histogram::default();
        let mut arrived = 0;
        for w in windows.get(range).unwrap_or_default() {
            latency.merge(&w.latency);
            arrived += w.arrived;
        }
        (latency, arrived)
    }
}

/// What the publisher sent in one window.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub in_flight: u64,
    pub accepted: u64,
    pub failed: u64,
}

/// The soak's publisher ledger: counts per window of send time, and the accepted events as a bit set.
pub struct Publishes {
    clock: Clock,
    state: Mutex<(Vec<Sent>, Vec<u64>)>,
}

impl Publishes {
    pub fn new(clock: Clock) -> Self {
        Self { clock, state: Mutex::new((vec![Sent::default(); clock.count], Vec::new())) }
    }

    pub fn window(&self, k: usize) -> Sent {
        self.state.lock().expect("publishes lock").0.get(k).copied().unwrap_or_default()
    }

    pub fn total(&self) -> Sent {
        let state = self.state.lock().expect("publishes lock");
        state.0.iter().fold(Sent::default(), |a, w| Sent {
            in_flight: a.in_flight + w.in_flight,
            accepted: a.accepted + w.accepted,
            failed: a.failed + w.failed,
        })
    }

    /// The sequence numbers of the accepted events, in order.
    pub fn accepted(&self) -> impl Iterator<Item = u64> {
        let bits = self.state.lock().expect("publishes lock").1.clone();
        bits.into_iter()
            .enumerate()
            .flat_map(|(i, word)| (0..64).filter(move |b| word & (1 << b) != 0).map(move |b| i as u64 * 64 + b))
    }
}

impl Ledger for Publishes {
    fn sent(&self, _seq: u64, sent_ns: u64) {
        self.state.lock().expect("publishes lock").0[self.clock.window(sent_ns)].in_flight += 1;
    }

    fn answered(&self, seq: u64, sent_ns: u64, accepted: bool) {
        let mut state = self.state.lock().expect("publishes lock");
        let (windows, bits) = &mut *state;
        let w = &mut windows[self.clock.window(sent_ns)];
        w.in_flight -= 1;
        if accepted {
            w.accepted += 1;
            let word = (seq / 64) as usize;
            if bits.len() <= word {
                bits.resize((word + 1).next_power_of_two(), 0);
            }
            bits[word] |= 1 << (seq % 64);
        } else {
            w.failed += 1;
        }
    }
}
