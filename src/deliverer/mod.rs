//! The callback deliverer: claims due outbox jobs and carries them out — deliveries (W3C WebSub 7), verifications
//! of intent (5.3) and denial notices (5.2) — with durable retries.
//!
//! Three layers: [`Deliverer::try_deliver_batch`] claims one batch and runs it to the end (what tests drive);
//! [`Deliverer::run_until_stopped`] claims continuously, waking on `NOTIFY tidings_outbox` with a timed fallback
//! for scheduled retries; and the binaries that call it.
//!
//! Isolation: a global semaphore caps requests in flight; a per-host semaphore caps each callback host, and
//! saturated hosts are left out of the next claim, so a slow subscriber never holds jobs meant for others.
//! Batching: a host counts as saturated once it has two batches' worth of jobs claimed (its in-flight limit
//! running, as many waiting in memory), and the loop claims again when a host is down to one batch or a good
//! share of the global cap is free — so jobs are claimed many at a time instead of one per finished request.
//! Failure policy: a database error backs off and retries; an outcome that cannot be recorded leaves its job
//! leased, and the lease running out brings it back (at-least-once). On shutdown no new job is claimed, jobs
//! claimed but not started are released, and in-flight requests get the grace period to finish.

pub mod jobs;
pub mod signature;
pub mod transport;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
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
    outbox::{self, Job, Next, Outcome},
    subscriptions::store::OUTBOX_CHANNEL,
    wakeup::Wakeup,
};
use jobs::Context;
use transport::Transport;

/// The longest the deliverer sleeps without looking for due jobs.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

pub struct Deliverer<T: Transport> {
    ctx: Arc<Context<T>>,
    config: DeliveryConfig,
    global: Arc<Semaphore>,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// Woken by every finished job (the loop waits on it while the global cap is nearly used up).
    completed: Arc<Notify>,
    /// Woken when a host is down to one batch of claimed jobs (the loop waits on it while hosts are saturated).
    host_freed: Arc<Notify>,
}

/// One callback host: its in-flight limit and how many of its jobs are claimed and not yet finished.
struct Host {
    permits: Arc<Semaphore>,
    claimed: AtomicUsize,
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
            global: Arc::new(Semaphore::new(config.concurrency as usize)),
            hosts: Mutex::new(HashMap::new()),
            completed: Arc::new(Notify::new()),
            host_freed: Arc::new(Notify::new()),
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
                })
            })
            .clone()
    }

    /// Hosts with two batches' worth of jobs claimed and unfinished.
    fn saturated_hosts(&self) -> Vec<String> {
        let full = 2 * self.config.host_concurrency as usize;
        let hosts = self.hosts.lock().expect("host map lock");
        hosts.iter().filter(|(_, h)| h.claimed.load(Ordering::Relaxed) >= full).map(|(name, _)| name.clone()).collect()
    }

    async fn claim(&self, limit: usize) -> Result<Vec<Job>, sqlx::Error> {
        let per_host = self.config.host_concurrency as i64;
        outbox::claim(&self.ctx.pool, limit as i64, self.lease(), per_host, &self.saturated_hosts()).await
    }

    /// One step: claims a batch, carries every job out, records the outcomes. Returns how many jobs ran.
    pub async fn try_deliver_batch(&self) -> anyhow::Result<usize> {
        let jobs = self.claim(self.config.batch_size as usize).await?;
        let count = jobs.len();
        let runs = jobs.into_iter().map(|job| {
            let host = self.host(&job.callback_host).permits.clone();
            let ctx = self.ctx.clone();
            async move {
                let _permit = host.acquire_owned().await.expect("semaphores are never closed");
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
            let free = self.global.available_permits();
            let worth_claiming = (self.config.concurrency as usize / 8).clamp(1, self.config.batch_size as usize);
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
        let Ok(global) = self.global.clone().try_acquire_owned() else {
            let _ = outcomes.send(released(&job));
            return;
        };
        let host = self.host(&job.callback_host);
        host.claimed.fetch_add(1, Ordering::Relaxed);
        let one_batch = self.config.host_concurrency as usize;
        let ctx = self.ctx.clone();
        let (completed, host_freed) = (self.completed.clone(), self.host_freed.clone());
        tasks.spawn(async move {
            let finished = |host: &Host| {
                if host.claimed.fetch_sub(1, Ordering::Relaxed) == one_batch + 1 {
                    host_freed.notify_waiters();
                }
            };
            let permit = tokio::select! {
                permit = host.permits.clone().acquire_owned() => permit.expect("semaphores are never closed"),
                _ = token.cancelled() => {
                    let _ = outcomes.send(released(&job));
                    finished(&host);
                    return;
                }
            };
            let outcome = jobs::execute(&ctx, job).await;
            let _ = outcomes.send(outcome);
            drop((permit, global));
            finished(&host);
            completed.notify_waiters();
        });
    }

    /// Sleeps until a NOTIFY, the next scheduled job, a freed host (when some are saturated), or cancellation.
    async fn wait_for_work(&self, wakeup: &mut Wakeup, token: &CancellationToken) {
        let saturated = !self.saturated_hosts().is_empty();
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
