//! The callback deliverer: claims due outbox jobs and carries them out — deliveries (W3C WebSub 7), verifications
//! of intent (5.3) and denial notices (5.2) — with durable retries.
//!
//! Three layers: [`Deliverer::try_deliver_batch`] claims one batch and runs it to the end (what tests drive);
//! [`Deliverer::run_until_stopped`] claims continuously, waking on `NOTIFY tidings_outbox` with a timed fallback
//! for scheduled retries; and the binaries that call it.
//!
//! Isolation and batching: [`admission`] (requests in flight in all and per host, jobs claimed per host).
//! A job still waiting for its host after half the lease is put back untouched (when a host turns slow), so no
//! claimed job starts once another deliverer could claim it.
//! Failure policy: a database error backs off and retries; an outcome that cannot be recorded leaves its job
//! leased, and the lease running out brings it back (at-least-once). On shutdown no new job is claimed, jobs
//! claimed but not started are released, and in-flight requests get the grace period to finish.

pub mod admission;
pub mod jobs;
pub mod signature;
pub mod sweep;
pub mod transport;

use std::{sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    config::DeliveryConfig,
    metrics::Metrics,
    outbox::{self, Claimed, Job, Next, Outcome, OUTBOX_CHANNEL},
    subscriptions::store::{self, DisablePolicy},
    wakeup::Wakeup,
};
use admission::{Admission, Limits, Ticket};
use jobs::Context;
use sweep::{After, Sweep};
use transport::Transport;

/// The longest the deliverer sleeps without looking for due jobs.
const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// While the claim cap is nearly used up the loop waits for a finished job, at most this long (a job that
/// finishes between the loop's check and its wait sends no wake-up it could see).
const RECHECK_AFTER: Duration = Duration::from_millis(20);

/// While hosts are saturated and jobs are due, the loop looks again this often even without a freed host (due
/// jobs of other hosts may sit behind the saturated ones).
const SATURATED_POLL: Duration = Duration::from_millis(200);

/// The longest a failing claim waits before the next try.
const CLAIM_BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Deliverer<T: Transport> {
    ctx: Arc<Context<T>>,
    config: DeliveryConfig,
    admission: Arc<Admission>,
    /// Where the last claim's walk over subscriptions stopped: the next one goes on from there.
    walked_to: std::sync::Mutex<Uuid>,
}

impl<T: Transport> Deliverer<T> {
    pub fn new(pool: PgPool, transport: T, hub_url: url::Url, config: DeliveryConfig) -> Self {
        let ctx = Context {
            pool,
            transport,
            hub_url,
            schedule: config.retry_schedule.clone(),
            retry_after_max: config.retry_after_max,
            secret_grace: config.secret_grace,
            metrics: Metrics::new(),
        };
        let limits = Limits::new(config.concurrency as usize, config.host_concurrency as usize, lease_for(&config));
        Self { ctx: Arc::new(ctx), admission: Admission::new(limits), config, walked_to: Default::default() }
    }

    /// Counts into these metrics instead of a private registry.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        Arc::get_mut(&mut self.ctx).expect("set before the deliverer runs").metrics = metrics;
        self
    }

    /// When a failing subscription is disabled (none: never).
    fn disable_policy(&self) -> Option<DisablePolicy> {
        self.config.disable_after.0.map(|after| DisablePolicy { after, dead_in_a_row: self.config.disable_after_dead })
    }

    /// Longer than any request can take, so a slow request is never claimed twice.
    pub fn lease(&self) -> Duration {
        lease_for(&self.config)
    }

    async fn claim(&self, limit: usize) -> Result<Claimed, sqlx::Error> {
        let from = *self.walked_to.lock().expect("cursor lock");
        let claimed = outbox::claim(&self.ctx.pool, limit as i64, self.lease(), &self.admission.rooms(), from).await?;
        *self.walked_to.lock().expect("cursor lock") = claimed.walked_to;
        self.ctx.metrics.delivery_throttled.inc_by(claimed.throttled as u64);
        Ok(claimed)
    }

    /// One step: claims a batch (within the claim cap), carries every job out, records the outcomes. Returns how
    /// many jobs ran.
    pub async fn try_deliver_batch(&self) -> anyhow::Result<usize> {
        let jobs = self.claim(self.admission.free().min(self.config.batch_size as usize)).await?.jobs;
        let count = jobs.len();
        let runs = jobs.into_iter().map(|job| async {
            let Some(ticket) = self.admission.admit(&job.callback_host) else {
                return released(&job);
            };
            let _permits = ticket.start().await;
            run(&self.ctx, &ticket, job).await
        });
        let outcomes = futures_util::future::join_all(runs).await;
        let died = outbox::record(&self.ctx.pool, &outcomes).await?;
        disable_failing(&self.ctx.pool, self.disable_policy(), &died).await;
        Ok(count)
    }

    /// Delivers until the token is cancelled, then drains in-flight requests within the grace period.
    pub async fn run_until_stopped(self, token: CancellationToken) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(record_outcomes(self.ctx.pool.clone(), self.disable_policy(), receiver));
        let mut wakeup = Wakeup::new(self.ctx.pool.clone(), OUTBOX_CHANNEL);
        let mut tasks = JoinSet::new();
        let mut backoff = claim_backoff();
        let mut sweep = Sweep::default();
        tracing::info!("callback deliverer started");
        while !token.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let batch = self.config.batch_size as usize;
            // Claim when a useful share of the cap is free (or nothing runs), not after every finished request.
            if self.admission.free() == 0 || (!self.admission.worth_claiming(batch) && !tasks.is_empty()) {
                tokio::select! {
                    _ = self.admission.until_finished(RECHECK_AFTER) => {}
                    _ = token.cancelled() => {}
                }
                continue;
            }
            let wanted = self.admission.free().min(batch);
            match self.claim(wanted).await {
                Ok(mut claimed) => {
                    backoff = claim_backoff();
                    let short = claimed.jobs.len() < wanted;
                    for job in std::mem::take(&mut claimed.jobs) {
                        self.spawn(&mut tasks, job, sender.clone(), token.clone());
                    }
                    // Fewer than asked: once the walks have visited every subscription with pending jobs, nothing
                    // more is due now (or only jobs of hosts at their limit), so wait for a notification or the
                    // next due job instead of a claim that would find nothing.
                    if !short {
                        sweep.reset();
                    } else if let After::Round(due) = sweep.after(&claimed) {
                        self.wait_for_work(&mut wakeup, &token, due).await;
                    }
                }
                Err(e) => {
                    let delay = backoff.next().unwrap_or(CLAIM_BACKOFF_MAX);
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
        let Some(ticket) = self.admission.admit(&job.callback_host) else {
            let _ = outcomes.send(released(&job));
            return;
        };
        let (ctx, wait_at_most) = (self.ctx.clone(), self.lease() / 2);
        tasks.spawn(async move {
            let permits = tokio::select! {
                permits = ticket.start() => permits,
                _ = tokio::time::sleep(wait_at_most) => {
                    tracing::debug!(job_id = job.id, host = job.callback_host, "put back: its host was too slow to reach it");
                    let _ = outcomes.send(released(&job));
                    return;
                }
                _ = token.cancelled() => {
                    let _ = outcomes.send(released(&job));
                    return;
                }
            };
            let outcome = run(&ctx, &ticket, job).await;
            let _ = outcomes.send(outcome);
            drop((permits, ticket));
        });
    }

    /// Sleeps until a NOTIFY, the next scheduled job (`due`), a freed host (when some are saturated), or
    /// cancellation.
    async fn wait_for_work(&self, wakeup: &mut Wakeup, token: &CancellationToken, due: Option<DateTime<Utc>>) {
        let saturated = !self.admission.rooms().saturated.is_empty();
        let until_due = match due {
            Some(at) => (at - Utc::now()).to_std().unwrap_or(Duration::ZERO),
            None => POLL_INTERVAL,
        };
        let nap = if saturated && until_due.is_zero() { SATURATED_POLL } else { until_due.min(POLL_INTERVAL) };
        if nap.is_zero() {
            return;
        }
        tokio::select! {
            _ = wakeup.wait(nap) => {}
            _ = self.admission.until_host_freed(), if saturated => {}
            _ = token.cancelled() => {}
        }
    }
}

/// Longer than any request can take, so a slow request is never claimed twice.
fn lease_for(config: &DeliveryConfig) -> Duration {
    config.request_timeout * 2 + Duration::from_secs(5)
}

fn claim_backoff() -> ExponentialBackoff {
    ExponentialBuilder::default().with_max_delay(CLAIM_BACKOFF_MAX).without_max_times().build()
}

/// Carries a started job out and counts its request's duration in its host's pace.
async fn run<T: Transport>(ctx: &Context<T>, ticket: &Ticket, job: Job) -> Outcome {
    let outcome = jobs::execute(ctx, job).await;
    if let Some(attempt) = &outcome.attempt {
        ticket.observe(attempt.duration);
    }
    outcome
}

fn released(job: &Job) -> Outcome {
    job.outcome(Next::Released, None, None)
}

/// Writes outcomes in batches. A batch that cannot be written is retried for a while, then given up: its jobs
/// stay leased and come back when the lease ends, so nothing is lost (a delivery may repeat).
/// Checks the auto-disable guard for each subscription whose dead count grew; a failure is logged and retried at
/// its next dead delivery.
async fn disable_failing(pool: &PgPool, policy: Option<DisablePolicy>, died: &[Uuid]) {
    let Some(policy) = policy else { return };
    for id in died {
        match store::disable_if_failing(pool, *id, policy).await {
            Ok(true) => tracing::warn!(subscription_id = %id, "disabled a subscription whose deliveries all failed"),
            Ok(false) => {}
            Err(e) => tracing::error!(subscription_id = %id, error = %e, "could not disable a failing subscription"),
        }
    }
}

async fn record_outcomes(pool: PgPool, policy: Option<DisablePolicy>, mut receiver: mpsc::UnboundedReceiver<Outcome>) {
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
                Ok(died) => {
                    disable_failing(&pool, policy, &died).await;
                    break;
                }
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
