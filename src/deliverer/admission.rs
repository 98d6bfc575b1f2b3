//! Admission: how many jobs the deliverer holds and runs at once, for all callback hosts and for each.
//!
//! Invariants it keeps:
//! - At most [`Limits::in_flight_total`] requests are in flight, and at most [`Limits::in_flight`] to one host. A
//!   job takes its host's permit first and the global one only then, just for its request, so jobs waiting for a
//!   slow host never hold the requests other hosts need.
//! - At most [`Limits::claimable`] jobs are claimed and not finished (memory, and leases that run while jobs
//!   wait): every claimed job holds a [`Ticket`], and a ticket's drop gives everything back, on every exit path.
//! - A host has jobs claimed beyond its in-flight limit, waiting for a permit, only as many as it gets through in
//!   a fraction ([`LEASE_FRACTION_AHEAD`]) of the lease at the pace of its recent requests: at least
//!   [`FLOOR_FACTOR`] times its in-flight limit, at most [`CEILING_FACTOR`] times, and never more than its share of
//!   the claim cap among the busy hosts and one more, so some is always left for a host with none claimed yet. At
//!   that number it is saturated: the next claim takes none of its jobs and does not read them.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::outbox;

/// Jobs claimed and not finished, at most, per request in flight: the jobs waiting for their host's permit.
pub const CLAIM_CAP_FACTOR: usize = 2;

/// The loop claims again once this fraction of the claim cap is free (or nothing runs), so jobs are claimed many
/// at a time instead of one per finished request.
pub const CLAIM_WHEN_FREE_DIVISOR: usize = 16;

/// A host may have claimed at once what it gets through in this fraction of the lease: the rest of the lease is
/// the margin before another deliverer could claim the same job.
pub const LEASE_FRACTION_AHEAD: u32 = 4;

/// A host's claim limit is at least this many times its in-flight limit (until its pace is known, exactly that)…
pub const FLOOR_FACTOR: usize = 2;

/// …and at most this many times.
pub const CEILING_FACTOR: usize = 8;

/// Beyond this many hosts remembered, those with nothing claimed are forgotten (their pace is relearnt).
const HOSTS_REMEMBERED: usize = 10_000;

/// What bounds admission.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Requests in flight, in all.
    pub in_flight_total: usize,
    /// Requests in flight to one host.
    pub in_flight: usize,
    /// Jobs claimed and not finished, in all.
    pub claimable: usize,
    pub lease: Duration,
}

impl Limits {
    pub fn new(in_flight_total: usize, in_flight: usize, lease: Duration) -> Self {
        Self { in_flight_total, in_flight, claimable: CLAIM_CAP_FACTOR * in_flight_total, lease }
    }
}

/// The deliverer's admission: shared by the claim loop and every job it runs.
pub struct Admission {
    limits: Limits,
    in_flight: Arc<Semaphore>,
    claimed: Arc<Semaphore>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// Hosts with jobs claimed.
    busy_hosts: AtomicUsize,
    /// Woken by every finished job (the loop waits on it while the claim cap is nearly used up).
    finished: Notify,
    /// Woken when a host is down to half its claim limit (the loop waits on it while hosts are saturated).
    host_freed: Notify,
}

/// One claimed job's place: while it lives, the job counts against the claim cap and its host's claim limit.
pub struct Ticket {
    admission: Arc<Admission>,
    host: Arc<Host>,
    claim: Option<OwnedSemaphorePermit>,
}

/// Held while a job's request is in flight: its host's permit and one of all the requests'.
pub struct Permits {
    _host: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

/// One callback host: its in-flight limit, how many of its jobs are claimed, and how long its requests take.
struct Host {
    permits: Arc<Semaphore>,
    claimed: AtomicUsize,
    /// Moving average of its requests' durations, in microseconds; 0 until one has finished.
    latency_us: AtomicU64,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            in_flight: Arc::new(Semaphore::new(limits.in_flight_total)),
            claimed: Arc::new(Semaphore::new(limits.claimable)),
            hosts: Mutex::new(HashMap::new()),
            busy_hosts: AtomicUsize::new(0),
            finished: Notify::new(),
            host_freed: Notify::new(),
        })
    }

    /// How many more jobs may be claimed now.
    pub fn free(&self) -> usize {
        self.claimed.available_permits()
    }

    /// Whether a claim is worth its round trip while jobs run: a useful share of the cap is free.
    pub fn worth_claiming(&self, batch_size: usize) -> bool {
        self.free() >= (self.limits.claimable / CLAIM_WHEN_FREE_DIVISOR).clamp(1, batch_size.max(1))
    }

    /// A claimed job's ticket, or None when the claim cap is used up (the job is then released untouched).
    pub fn admit(self: &Arc<Self>, host: &str) -> Option<Ticket> {
        let claim = self.claimed.clone().try_acquire_owned().ok()?;
        let host = self.host(host);
        if host.claimed.fetch_add(1, Ordering::Relaxed) == 0 {
            self.busy_hosts.fetch_add(1, Ordering::Relaxed);
        }
        Some(Ticket { admission: self.clone(), host, claim: Some(claim) })
    }

    /// Waits until some job finishes (or gives up after `at_most`, covering a finish just before the wait).
    pub async fn until_finished(&self, at_most: Duration) {
        tokio::select! {
            _ = self.finished.notified() => {}
            _ = tokio::time::sleep(at_most) => {}
        }
    }

    /// Waits until a saturated host is down to half its claim limit.
    pub async fn until_host_freed(&self) {
        self.host_freed.notified().await
    }

    /// How many more jobs the next claim may take of each host: hosts with jobs claimed get what their limit
    /// leaves (saturated at none), any other host one in-flight limit.
    pub fn rooms(&self) -> outbox::Rooms {
        let busy = self.busy_hosts.load(Ordering::Relaxed);
        let mut rooms = outbox::Rooms { per_host: self.limits.in_flight as i64, ..Default::default() };
        let hosts = self.hosts.lock().expect("host map lock");
        for (name, host) in hosts.iter() {
            let claimed = host.claimed.load(Ordering::Relaxed);
            if claimed == 0 {
                continue;
            }
            match host.claim_limit(self.limits, busy).saturating_sub(claimed) {
                0 => rooms.saturated.push(name.clone()),
                room => {
                    rooms.hosts.push(name.clone());
                    rooms.rooms.push(room as i64);
                }
            }
        }
        rooms
    }

    fn host(&self, name: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().expect("host map lock");
        if hosts.len() > HOSTS_REMEMBERED {
            hosts.retain(|_, h| h.claimed.load(Ordering::Relaxed) > 0);
        }
        hosts.entry(name.to_owned()).or_insert_with(|| Arc::new(Host::new(self.limits.in_flight))).clone()
    }
}

impl Ticket {
    /// Waits for the job's host permit, then for one of all the requests'.
    pub async fn start(&self) -> Permits {
        let host = self.host.permits.clone().acquire_owned().await.expect("semaphores are never closed");
        let global = self.admission.in_flight.clone().acquire_owned().await.expect("semaphores are never closed");
        Permits { _host: host, _global: global }
    }

    /// Counts a finished request's duration in its host's pace.
    pub fn observe(&self, took: Duration) {
        self.host.observe(took);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let admission = &self.admission;
        // The permit goes back before anyone is woken, so a woken claim loop sees it free.
        drop(self.claim.take());
        let left = self.host.claimed.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 {
            admission.busy_hosts.fetch_sub(1, Ordering::Relaxed);
        }
        let busy = admission.busy_hosts.load(Ordering::Relaxed);
        if left <= self.host.claim_limit(admission.limits, busy) / 2 {
            admission.host_freed.notify_waiters();
        }
        admission.finished.notify_waiters();
    }
}

impl Host {
    fn new(in_flight: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(in_flight)),
            claimed: AtomicUsize::new(0),
            latency_us: AtomicU64::new(0),
        }
    }

    /// How many of its jobs may be claimed at once while `busy` hosts (this one among them) have jobs claimed.
    fn claim_limit(&self, limits: Limits, busy: usize) -> usize {
        let share = (limits.claimable / (busy.max(1) + 1)).max(1);
        let floor = (FLOOR_FACTOR * limits.in_flight).min(share);
        let ceiling = (CEILING_FACTOR * limits.in_flight).min(share).max(floor);
        match self.latency_us.load(Ordering::Relaxed) {
            0 => floor,
            latency => {
                let ahead = limits.lease.as_micros() / LEASE_FRACTION_AHEAD as u128;
                let in_time = limits.in_flight as u128 * ahead / latency as u128;
                in_time.clamp(floor as u128, ceiling as u128) as usize
            }
        }
    }

    /// Counts one finished request in the moving average: a slower one weighs half, a faster one an eighth, so
    /// a host that turns slow loses its larger limit within a few requests and earns it back slowly.
    fn observe(&self, took: Duration) {
        let sample = (took.as_micros().min(u64::MAX as u128 / 2) as u64).max(1);
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = match old {
            0 => sample,
            _ if sample > old => old / 2 + sample / 2,
            _ => old - old / 8 + sample / 8,
        };
        self.latency_us.store(new.max(1), Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
