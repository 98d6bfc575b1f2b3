//! The callback deliverer: claims due outbox jobs and carries them out — deliveries (W3C WebSub 7), verifications
//! of intent (5.3) and denial notices (5.2) — with durable retries.
//!
//! Three layers: [`Deliverer::try_deliver_batch`] claims one batch and runs it to the end (what tests drive);
//! [`Deliverer::run_until_stopped`] claims continuously, waking on `NOTIFY tidings_outbox` with a timed fallback
//! for scheduled retries; and the binaries that call it.
//!
//! Isolation: a global semaphore caps requests in flight and a per-host semaphore each callback host's; a job
//! takes its global permit only once it has its host's, just for its request, so jobs waiting for a slow host
//! never take the requests others need. Saturated hosts are left out of the next claim, so a slow subscriber
//! never holds jobs meant for others. Jobs claimed and not finished are capped at twice the global cap (memory,
//! and leases that run while jobs wait).
//! Batching: a host may have jobs claimed beyond its in-flight limit, waiting in memory for a permit, as many as
//! it gets through in a quarter of the lease at the pace of its recent requests (at least twice its in-flight
//! limit, at most eight times, and never more than its share of the claim cap among the hosts with jobs claimed
//! and one more, so some is always left for a host with none claimed yet — a subscriber that was fast and turns
//! slow keeps its larger limit for a few requests); it counts as saturated at that number, and the loop claims
//! again when a host is down to half of it or a good share of the claim cap is free — so jobs are claimed many
//! at a time instead of one per finished request, and a fast subscriber's jobs come in batches several times
//! its in-flight limit. A job still waiting for its host after half the lease is put
//! back untouched (when a host turns slow), so no claimed job starts once another deliverer could claim it.
//! Failure policy: a database error backs off and retries; an outcome that cannot be recorded leaves its job
//! leased, and the lease running out brings it back (at-least-once). On shutdown no new job is claimed, jobs
//! claimed but not started are released, and in-flight requests get the grace period to finish.

pub mod jobs;
pub mod signature;
pub mod transport;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::PgPool;
use tokio::{
    sync::{mpsc, Notify, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::DeliveryConfig,
    metrics::Metrics,
    outbox::{self, Job, Next, Outcome, OUTBOX_CHANNEL},
    wakeup::Wakeup,
};
use jobs::Context;
use transport::Transport;

/// The longest the deliverer sleeps without looking for due jobs.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// A saturated host whose claimed jobs keep it busy at least this long has its due jobs pushed back to its
/// pace, so that claims meanwhile do not read past them; a host that is free again sooner keeps them due.
const PACE_AFTER: Duration = Duration::from_secs(1);

pub struct Deliverer<T: Transport> {
    ctx: Arc<Context<T>>,
    config: DeliveryConfig,
    /// Requests in flight (`TIDINGS_DELIVERY_CONCURRENCY`).
    in_flight: Arc<Semaphore>,
    /// Jobs claimed and not finished.
    claimed: Arc<Semaphore>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// Woken by every finished job (the loop waits on it while the claim cap is nearly used up).
    completed: Arc<Notify>,
    /// Woken when a host is down to half its limit of claimed jobs (the loop waits on it while hosts are
    /// saturated).
    host_freed: Arc<Notify>,
    /// Hosts with jobs claimed.
    busy_hosts: Arc<AtomicUsize>,
}

/// One callback host: its in-flight limit, how many of its jobs are claimed and not yet finished, and how long
/// its requests have taken lately.
struct Host {
    permits: Arc<Semaphore>,
    claimed: AtomicUsize,
    /// Moving average of its requests' durations, in microseconds; 0 until one has finished.
    latency_us: AtomicU64,
}

/// What bounds the jobs claimed of one host.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Requests in flight to one host.
    in_flight: usize,
    /// Jobs claimed and not finished, in all.
    claimable: usize,
    lease: Duration,
}

impl Host {
    /// How many of its jobs may be claimed at once while `busy` hosts (this one among them) have jobs claimed
    /// (see the module doc).
    fn claim_limit(&self, limits: Limits, busy: usize) -> usize {
        let share = (limits.claimable / (busy.max(1) + 1)).max(1);
        let floor = (2 * limits.in_flight).min(share);
        let ceiling = (8 * limits.in_flight).min(share).max(floor);
        match self.latency_us.load(Ordering::Relaxed) {
            0 => floor,
            latency => {
                let in_a_quarter_lease = limits.in_flight as u128 * limits.lease.as_micros() / (4 * latency as u128);
                in_a_quarter_lease.clamp(floor as u128, ceiling as u128) as usize
            }
        }
    }

    /// Where a saturated host's due jobs go while its claimed jobs keep it busy for at least [`PACE_AFTER`]:
    /// one every request duration over its in-flight limit, the first when it is down to half its claimed jobs
    /// (when the loop claims for it again). None for a host whose pace is not known yet or that is soon free.
    fn pace(&self, name: &str, claimed: usize, limits: Limits) -> Option<outbox::Pace> {
        let latency = self.latency_us.load(Ordering::Relaxed);
        if latency == 0 {
            return None;
        }
        let every = Duration::from_micros(latency) / limits.in_flight.max(1) as u32;
        let busy_for = every * claimed as u32;
        (busy_for >= PACE_AFTER).then(|| outbox::Pace { host: name.to_owned(), first: busy_for / 2, every })
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

impl<T: Transport> Deliverer<T> {
    pub fn new(pool: PgPool, transport: T, hub_url: url::Url, config: DeliveryConfig) -> Self {
        let ctx = Context {
            pool,
            transport,
            hub_url,
            schedule: config.retry_schedule.clone(),
            retry_after_max: config.retry_after_max,
            metrics: Metrics::new(),
        };
        Self {
            ctx: Arc::new(ctx),
            in_flight: Arc::new(Semaphore::new(config.concurrency as usize)),
            claimed: Arc::new(Semaphore::new(claim_cap(&config))),
            hosts: Mutex::new(HashMap::new()),
            completed: Arc::new(Notify::new()),
            host_freed: Arc::new(Notify::new()),
            busy_hosts: Arc::new(AtomicUsize::new(0)),
            config,
        }
    }

    /// Counts into these metrics instead of a private registry.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        Arc::get_mut(&mut self.ctx).expect("set before the deliverer runs").metrics = metrics;
        self
    }

    /// Longer than any request can take, so a slow request is never claimed twice.
    pub fn lease(&self) -> Duration {
        self.config.request_timeout * 2 + Duration::from_secs(5)
    }

    fn limits(&self) -> Limits {
        Limits {
            in_flight: self.config.host_concurrency as usize,
            claimable: claim_cap(&self.config),
            lease: self.lease(),
        }
    }

    fn host(&self, host: &str) -> Arc<Host> {
        let mut hosts = self.hosts.lock().expect("host map lock");
        if hosts.len() > 10_000 {
            hosts.retain(|_, h| h.claimed.load(Ordering::Relaxed) > 0);
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| {
                Arc::new(Host {
                    permits: Arc::new(Semaphore::new(self.config.host_concurrency as usize)),
                    claimed: AtomicUsize::new(0),
                    latency_us: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// How many more jobs the next claim may take of each host: hosts with jobs claimed get what their limit
    /// leaves (saturated at none), any other host one in-flight limit.
    fn rooms(&self) -> outbox::Rooms {
        let (limits, busy) = (self.limits(), self.busy_hosts.load(Ordering::Relaxed));
        let mut rooms = outbox::Rooms {
            per_host: self.config.host_concurrency as i64,
            pace_horizon: limits.lease / 4,
            ..Default::default()
        };
        let hosts = self.hosts.lock().expect("host map lock");
        for (name, host) in hosts.iter() {
            let claimed = host.claimed.load(Ordering::Relaxed);
            if claimed == 0 {
                continue;
            }
            match host.claim_limit(limits, busy).saturating_sub(claimed) {
                0 => {
                    if let Some(pace) = host.pace(name, claimed, limits) {
                        rooms.paced.push(pace);
                    }
                    rooms.saturated.push(name.clone())
                }
                room => {
                    rooms.hosts.push(name.clone());
                    rooms.rooms.push(room as i64);
                }
            }
        }
        rooms
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Job>, sqlx::Error> {
        outbox::claim(&self.ctx.pool, limit as i64, self.lease(), &self.rooms()).await
    }

    /// One step: claims a batch, carries every job out, records the outcomes. Returns how many jobs ran.
    pub async fn try_deliver_batch(&self) -> anyhow::Result<usize> {
        let jobs = self.claim(self.config.batch_size as usize).await?;
        let count = jobs.len();
        let runs = jobs.into_iter().map(|job| {
            let host = self.host(&job.callback_host).permits.clone();
            let (in_flight, ctx) = (self.in_flight.clone(), self.ctx.clone());
            async move {
                let _permits = acquire_both(host, in_flight).await;
                jobs::execute(&ctx, job).await
            }
        });
        let outcomes = futures_util::future::join_all(runs).await;
        outbox::record(&self.ctx.pool, &outcomes).await?;
        Ok(count)
    }

    /// Delivers until the token is cancelled, then drains in-flight requests within the grace period.
    pub async fn run_until_stopped(self, token: CancellationToken) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_outcomes(self.ctx.pool.clone(), receiver));
        let mut wakeup = Wakeup::new(self.ctx.pool.clone(), OUTBOX_CHANNEL);
        let mut tasks = JoinSet::new();
        let mut backoff =
            ExponentialBuilder::default().with_max_delay(Duration::from_secs(10)).without_max_times().build();
        tracing::info!("callback deliverer started");
        while !token.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            // Claim when a useful share of the cap is free (or nothing runs), not after every finished request.
            let free = self.claimed.available_permits();
            let worth_claiming = (claim_cap(&self.config) / 16).clamp(1, self.config.batch_size as usize);
            if free == 0 || (free < worth_claiming && !tasks.is_empty()) {
                // The timeout covers a finish between the check above and the wait.
                tokio::select! {
                    _ = self.completed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = token.cancelled() => {}
                }
                continue;
            }
            let wanted = free.min(self.config.batch_size as usize);
            match self.claim(wanted).await {
                Ok(jobs) if !jobs.is_empty() => {
                    backoff = ExponentialBuilder::default()
                        .with_max_delay(Duration::from_secs(10))
                        .without_max_times()
                        .build();
                    let short = jobs.len() < wanted;
                    for job in jobs {
                        self.spawn(&mut tasks, job, sender.clone(), token.clone());
                    }
                    // Fewer than asked: nothing more is due now (or only jobs of hosts at their limit), so wait
                    // for a notification or the next due job instead of a claim that would find nothing.
                    if short {
                        self.wait_for_work(&mut wakeup, &token).await;
                    }
                }
                Ok(_) => self.wait_for_work(&mut wakeup, &token).await,
                Err(e) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(10));
                    tracing::error!(error = %e, retry_in = ?delay, "claiming outbox jobs failed");
                    tokio::select! { _ = tokio::time::sleep(delay) => {}, _ = token.cancelled() => {} }
                }
            }
        }
        tracing::info!(in_flight = tasks.len(), "callback deliverer draining");
        let drained =
            tokio::time::timeout(self.config.shutdown_grace, async { while tasks.join_next().await.is_some() {} });
        if drained.await.is_err() {
            tracing::warn!(
                abandoned = tasks.len(),
                "grace period over; unfinished jobs will come back when their lease ends"
            );
            tasks.abort_all();
        }
        drop(sender);
        let _ = recorder.await;
        tracing::info!("callback deliverer stopped");
    }

    fn spawn(
        &self,
        tasks: &mut JoinSet<()>,
        job: Job,
        outcomes: mpsc::UnboundedSender<Outcome>,
        token: CancellationToken,
    ) {
        let Ok(claim) = self.claimed.clone().try_acquire_owned() else {
            let _ = outcomes.send(released(&job));
            return;
        };
        let host = self.host(&job.callback_host);
        if host.claimed.fetch_add(1, Ordering::Relaxed) == 0 {
            self.busy_hosts.fetch_add(1, Ordering::Relaxed);
        }
        let (limits, busy_hosts) = (self.limits(), self.busy_hosts.clone());
        let (ctx, in_flight) = (self.ctx.clone(), self.in_flight.clone());
        let (completed, host_freed) = (self.completed.clone(), self.host_freed.clone());
        tasks.spawn(async move {
            let finished = |host: &Host| {
                let left = host.claimed.fetch_sub(1, Ordering::Relaxed) - 1;
                if left == 0 {
                    busy_hosts.fetch_sub(1, Ordering::Relaxed);
                }
                if left <= host.claim_limit(limits, busy_hosts.load(Ordering::Relaxed)) / 2 {
                    host_freed.notify_waiters();
                }
            };
            let permits = tokio::select! {
                permits = acquire_both(host.permits.clone(), in_flight) => permits,
                _ = tokio::time::sleep(limits.lease / 2) => {
                    tracing::debug!(job_id = job.id, host = job.callback_host, "put back: its host was too slow to reach it");
                    let _ = outcomes.send(released(&job));
                    finished(&host);
                    return;
                }
                _ = token.cancelled() => {
                    let _ = outcomes.send(released(&job));
                    finished(&host);
                    return;
                }
            };
            let outcome = jobs::execute(&ctx, job).await;
            if let Some(attempt) = &outcome.attempt {
                host.observe(attempt.duration);
            }
            let _ = outcomes.send(outcome);
            drop((permits, claim));
            finished(&host);
            completed.notify_waiters();
        });
    }

    /// Sleeps until a NOTIFY, the next scheduled job, a freed host (when some are saturated), or cancellation.
    async fn wait_for_work(&self, wakeup: &mut Wakeup, token: &CancellationToken) {
        let saturated = !self.rooms().saturated.is_empty();
        let until_due = match outbox::next_due(&self.ctx.pool).await {
            Ok(Some(at)) => (at - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO),
            _ => POLL_INTERVAL,
        };
        let nap =
            if saturated && until_due.is_zero() { Duration::from_millis(200) } else { until_due.min(POLL_INTERVAL) };
        if nap.is_zero() {
            return;
        }
        tokio::select! {
            _ = wakeup.wait(nap) => {}
            _ = self.host_freed.notified(), if saturated => {}
            _ = token.cancelled() => {}
        }
    }
}

/// Jobs claimed and not finished, at most: twice the requests in flight.
fn claim_cap(config: &DeliveryConfig) -> usize {
    2 * config.concurrency as usize
}

/// A host's permit, then one of the requests in flight: a job waiting for its host holds no global permit.
async fn acquire_both(
    host: Arc<Semaphore>,
    in_flight: Arc<Semaphore>,
) -> (tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit) {
    let host = host.acquire_owned().await.expect("semaphores are never closed");
    let global = in_flight.acquire_owned().await.expect("semaphores are never closed");
    (host, global)
}

fn released(job: &Job) -> Outcome {
    job.outcome(Next::Released, None, None)
}

/// Writes outcomes in batches. A batch that cannot be written is retried for a while, then given up: its jobs
/// stay leased and come back when the lease ends, so nothing is lost (a delivery may repeat).
async fn record_outcomes(pool: PgPool, mut receiver: mpsc::UnboundedReceiver<Outcome>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        while batch.len() < 1000 {
            match receiver.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut delays = ExponentialBuilder::default().with_max_delay(Duration::from_secs(5)).with_max_times(8).build();
        loop {
            match outbox::record(&pool, &batch).await {
                Ok(()) => break,
                Err(e) => match delays.next() {
                    Some(delay) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "recording delivery outcomes failed");
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        tracing::error!(error = %e, jobs = batch.len(), "gave up recording outcomes; their leases will bring them back");
                        break;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host { permits: Arc::new(Semaphore::new(32)), claimed: AtomicUsize::new(0), latency_us: AtomicU64::new(0) }
    }

    /// A host whose one finished request took `took`.
    fn host_that_took(took: Duration) -> Host {
        let host = host();
        host.observe(took);
        host
    }

    const LIMITS: Limits = Limits { in_flight: 32, claimable: 512, lease: Duration::from_secs(35) };

    #[test]
    fn a_host_gets_twice_its_in_flight_limit_claimed_until_its_pace_is_known() {
        assert_eq!(host().claim_limit(LIMITS, 1), 64);
    }

    #[test]
    fn a_fast_host_alone_gets_up_to_eight_times_its_in_flight_limit_within_half_the_claim_cap_and_a_slow_one_twice() {
        let fast = host_that_took(Duration::from_millis(2));
        assert_eq!(fast.claim_limit(LIMITS, 1), 256, "eight times 32");
        assert_eq!(fast.claim_limit(Limits { claimable: 10_000, ..LIMITS }, 1), 256, "eight times 32");
        assert_eq!(fast.claim_limit(Limits { claimable: 200, ..LIMITS }, 1), 100, "half the cap");
        assert_eq!(fast.claim_limit(Limits { claimable: 100, ..LIMITS }, 1), 50, "half the cap, under twice 32");
        let slow = host_that_took(Duration::from_secs(5));
        assert_eq!(slow.claim_limit(LIMITS, 1), 64);
    }

    #[test]
    fn a_fast_host_among_busy_ones_gets_only_its_share_of_the_claim_cap_leaving_one_for_a_host_with_none_claimed() {
        let fast = host_that_took(Duration::from_millis(2));
        assert_eq!(fast.claim_limit(LIMITS, 2), 170, "a third of 512");
        assert_eq!(fast.claim_limit(LIMITS, 3), 128, "a quarter");
        assert_eq!(fast.claim_limit(LIMITS, 10), 46, "an eleventh, under twice 32");
    }

    #[test]
    fn a_host_claims_as_many_as_it_gets_through_in_a_quarter_of_the_lease() {
        let host = host_that_took(Duration::from_secs(3));
        // 32 at a time, 3 s each: 93 in 8.75 s (a quarter of 35 s).
        assert_eq!(host.claim_limit(LIMITS, 1), 93);
    }

    #[test]
    fn a_host_that_turns_slow_loses_its_larger_limit_within_a_few_requests() {
        let host = host_that_took(Duration::from_millis(1));
        assert_eq!(host.claim_limit(LIMITS, 1), 256);
        for _ in 0..3 {
            host.observe(Duration::from_secs(5));
        }
        assert_eq!(host.claim_limit(LIMITS, 1), 64);
        host.observe(Duration::from_millis(1));
        assert!(host.claim_limit(LIMITS, 1) < 80, "one fast answer does not undo it");
    }
}
