//! Carrying out one claimed job — a delivery, a verification of intent, or a denial notice — and deciding what
//! happens next. No transaction or lock is held while the subscriber is called.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use rand::{distributions::Alphanumeric, Rng};
use url::Url;

use super::{
    signature,
    transport::{Failure, Method, Request, Response, Transport},
};
use crate::{
    metrics::Metrics,
    outbox::{Attempt, Job, JobKind, Next, Outcome},
    retry::{parse_retry_after, RetrySchedule},
    subscriptions::{
        request::{RequestMode, RequestState},
        state::State,
        store,
    },
};

pub struct Context<T> {
    pub pool: sqlx::PgPool,
    pub transport: T,
    pub hub_url: Url,
    pub schedule: RetrySchedule,
    pub retry_after_max: Duration,
    /// How long a replaced secret still signs (applied when a subscribe with a new `hub.secret` is verified).
    pub secret_grace: Duration,
    pub metrics: Arc<Metrics>,
}

/// What a failed attempt leads to: a retry on the schedule (or after `Retry-After` for 429/503), or death.
pub fn after_failure(
    schedule: &RetrySchedule,
    attempts: u32,
    status: Option<u16>,
    retry_after: Option<&str>,
    retry_after_max: Duration,
) -> Next {
    let hint = match status {
        Some(429 | 503) => retry_after.and_then(parse_retry_after),
        _ => None,
    };
    match schedule.next_delay_with_hint(attempts, hint, retry_after_max, &mut rand::thread_rng()) {
        Some(delay) => Next::Retry(delay),
        None => Next::Dead,
    }
}

pub async fn execute<T: Transport>(ctx: &Context<T>, job: Job) -> Outcome {
    let kind = job.kind;
    let outcome = match kind {
        JobKind::Deliver => deliver(ctx, job).await,
        JobKind::Verify => verify(ctx, job).await,
        JobKind::Deny => deny(ctx, job).await,
    };
    count(&ctx.metrics, kind, &outcome);
    outcome
}

fn count(metrics: &Metrics, kind: JobKind, outcome: &Outcome) {
    let label = match (&outcome.attempt, &outcome.next) {
        (Some(attempt), _) => {
            metrics.attempt_seconds.with_label_values(&[kind.as_str()]).observe(attempt.duration.as_secs_f64());
            attempt.outcome
        }
        (None, Next::Cancelled) => "cancelled",
        (None, Next::Dead) => "dead",
        (None, _) => return,
    };
    let counter = match kind {
        JobKind::Deliver => &metrics.deliveries,
        JobKind::Verify | JobKind::Deny => &metrics.verifications,
    };
    counter.with_label_values(&[label]).inc();
}

fn settled(job: &Job, next: Next, error: impl Into<String>) -> Outcome {
    job.outcome(next, None, Some(error.into()))
}

struct Sent {
    started_at: chrono::DateTime<Utc>,
    duration: Duration,
    result: Result<Response, Failure>,
}

async fn send<T: Transport>(ctx: &Context<T>, request: Request) -> Sent {
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = ctx.transport.send(request).await;
    Sent { started_at, duration: clock.elapsed(), result }
}

impl Sent {
    fn attempt(&self, outcome: &'static str) -> Attempt {
        let (status_code, error_class, excerpt) = match &self.result {
            Ok(r) => (Some(r.status), None, Some(r.excerpt())),
            Err(f) => (None, Some(f.class.to_owned()), Some(f.message.chars().take(256).collect())),
        };
        Attempt { started_at: self.started_at, duration: self.duration, status_code, error_class, excerpt, outcome }
    }

    fn describe(&self) -> String {
        match &self.result {
            Ok(r) => format!("the callback answered HTTP {}", r.status),
            Err(f) => f.to_string(),
        }
    }

    /// The next step after an unsuccessful attempt, and its outcome label.
    fn failure_next<T>(&self, ctx: &Context<T>, job: &Job) -> (Next, &'static str) {
        let (status, retry_after) = match &self.result {
            Ok(r) => (Some(r.status), r.retry_after.as_deref()),
            Err(_) => (None, None),
        };
        let next = after_failure(&ctx.schedule, job.attempts.max(0) as u32, status, retry_after, ctx.retry_after_max);
        let label = if next == Next::Dead { "dead" } else { "retry" };
        (next, label)
    }
}

#[tracing::instrument(skip_all, fields(job_id = job.id, subscription_id = %job.subscription_id, event_id = ?job.event_id, attempt = job.attempts))]
async fn deliver<T: Transport>(ctx: &Context<T>, job: Job) -> Outcome {
    // A disabled subscription's waiting deliveries die rather than being cancelled, so that they can be redelivered
    // once it is enabled again.
    if job.subscription_state == State::Disabled {
        return settled(&job, Next::Dead, "the subscription is disabled: enable it, then redeliver");
    }
    if job.subscription_state != State::Active || job.expires_at.is_none_or(|at| at <= Utc::now()) {
        return settled(
            &job,
            Next::Cancelled,
            format!("the subscription is {} (or its lease ran out)", job.subscription_state),
        );
    }
    let (Some(event_id), Some(topic), Some(content_type), Some(body)) =
        (job.event_id, job.event_topic.as_deref(), job.content_type.as_deref(), job.body.as_deref())
    else {
        return settled(&job, Next::Dead, "the event is no longer in the log");
    };
    let Ok(url) = Url::parse(&job.callback) else {
        return settled(&job, Next::Dead, "the callback URL is invalid");
    };
    let msg_id = event_id.to_string();
    let timestamp = Utc::now().timestamp();
    // The store refuses the hub's own names as custom headers, so none of these repeats or replaces one of them.
    let mut headers: Vec<(Cow<'static, str>, String)> =
        job.headers.iter().map(|(name, value)| (Cow::Owned(name.clone()), value.clone())).collect();
    headers.extend([
        ("content-type".into(), content_type.to_owned()),
        ("link".into(), format!("<{}>; rel=\"hub\", <{}>; rel=\"self\"", ctx.hub_url, topic)),
        ("webhook-id".into(), msg_id.clone()),
        ("webhook-timestamp".into(), timestamp.to_string()),
    ]);
    if let Some(secret) = job.secret.as_deref() {
        headers.push(("x-hub-signature".into(), signature::hub_signature(secret, body)));
        // During a rotation's grace period the replaced secret signs too: Standard Webhooks verifiers accept any of
        // the space-separated signatures, so a subscriber can switch secrets at its own moment.
        let mut signatures = signature::standard_webhooks_signature(secret, &msg_id, timestamp, body);
        if let Some(previous) = job.previous_secret.as_deref() {
            signatures.push(' ');
            signatures.push_str(&signature::standard_webhooks_signature(previous, &msg_id, timestamp, body));
        }
        headers.push(("webhook-signature".into(), signatures));
    }
    let sent = send(ctx, Request { method: Method::Post, url, headers, body: body.to_vec() }).await;
    let (next, label, error) = match &sent.result {
        Ok(r) if (200..300).contains(&r.status) => (Next::Delivered, "delivered", None),
        Ok(r) if r.status == 410 => match store::end_gone(&ctx.pool, job.subscription_id).await {
            Ok(()) => (Next::Cancelled, "gone", Some("the callback answered 410 Gone; the subscription ended".into())),
            Err(e) => {
                tracing::error!(error = %e, "could not end a gone subscription");
                let (next, label) = sent.failure_next(ctx, &job);
                (next, label, Some(sent.describe()))
            }
        },
        _ => {
            let (next, label) = sent.failure_next(ctx, &job);
            (next, label, Some(sent.describe()))
        }
    };
    tracing::debug!(outcome = label, "delivery attempt");
    job.outcome(next, Some(sent.attempt(label)), error)
}

#[tracing::instrument(skip_all, fields(job_id = job.id, subscription_id = %job.subscription_id, request_id = ?job.request_id))]
async fn verify<T: Transport>(ctx: &Context<T>, job: Job) -> Outcome {
    let Some(request) = load_pending(ctx, &job).await else {
        return settled(&job, Next::Cancelled, "the request was already settled");
    };
    let challenge: String = rand::thread_rng().sample_iter(&Alphanumeric).take(43).map(char::from).collect();
    let Ok(mut url) = Url::parse(&request.callback) else {
        return settled(&job, Next::Dead, "the callback URL is invalid");
    };
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("hub.mode", request.mode.as_str()).append_pair("hub.topic", &request.topic);
        query.append_pair("hub.challenge", &challenge);
        if request.mode == RequestMode::Subscribe {
            query.append_pair("hub.lease_seconds", &request.lease_seconds.unwrap_or_default().to_string());
        }
    }
    let sent = send(ctx, Request { method: Method::Get, url, headers: Vec::new(), body: Vec::new() }).await;
    let confirmed = matches!(&sent.result, Ok(r) if (200..300).contains(&r.status) && r.body == challenge.as_bytes());
    let refused = matches!(&sent.result, Ok(r) if r.status < 500 && r.status != 429);
    let (next, label, error) = if confirmed {
        match store::apply_verified(&ctx.pool, request.id, ctx.secret_grace).await {
            Ok(_) => (Next::Delivered, "verified", None),
            Err(e) => {
                tracing::error!(error = %e, "could not apply a verified request");
                (Next::Retry(Duration::from_secs(1)), "retry", Some(format!("recording the verification failed: {e}")))
            }
        }
    } else {
        let reason = match &sent.result {
            Ok(r) if (200..300).contains(&r.status) => "the callback did not echo the challenge".to_owned(),
            _ => sent.describe(),
        };
        let (next, label) = if refused { (Next::Dead, "refused") } else { sent.failure_next(ctx, &job) };
        if next == Next::Dead {
            if let Err(e) = store::finish_unapplied(&ctx.pool, request.id, RequestState::Failed, Some(&reason)).await {
                tracing::error!(error = %e, "could not record a failed verification");
            }
        }
        (next, label, Some(reason))
    };
    tracing::info!(outcome = label, mode = request.mode.as_str(), "verification of intent");
    job.outcome(next, Some(sent.attempt(label)), error)
}

#[tracing::instrument(skip_all, fields(job_id = job.id, subscription_id = %job.subscription_id, request_id = ?job.request_id))]
async fn deny<T: Transport>(ctx: &Context<T>, job: Job) -> Outcome {
    let Some(request) = load_pending(ctx, &job).await else {
        return settled(&job, Next::Cancelled, "the request was already settled");
    };
    let Ok(mut url) = Url::parse(&request.callback) else {
        return settled(&job, Next::Dead, "the callback URL is invalid");
    };
    url.query_pairs_mut()
        .append_pair("hub.mode", "denied")
        .append_pair("hub.topic", &request.topic)
        .append_pair("hub.reason", request.reason.as_deref().unwrap_or("denied"));
    let sent = send(ctx, Request { method: Method::Get, url, headers: Vec::new(), body: Vec::new() }).await;
    let (next, label) = match &sent.result {
        Ok(_) => (Next::Delivered, "notified"),
        Err(_) => sent.failure_next(ctx, &job),
    };
    if !matches!(next, Next::Retry(_)) {
        let state = if next == Next::Delivered { RequestState::Notified } else { RequestState::Failed };
        if let Err(e) = store::finish_unapplied(&ctx.pool, request.id, state, None).await {
            tracing::error!(error = %e, "could not record a denial notice");
        }
    }
    let error = (next != Next::Delivered).then(|| sent.describe());
    job.outcome(next, Some(sent.attempt(label)), error)
}

async fn load_pending<T>(ctx: &Context<T>, job: &Job) -> Option<store::PendingRequest> {
    let id = job.request_id?;
    match store::load_request(&ctx.pool, id).await {
        Ok(Some(r)) if r.state == RequestState::Pending => Some(r),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(error = %e, request_id = %id, "could not load a subscription request");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RetrySchedule {
        "1s,2s".parse().unwrap()
    }

    #[test]
    fn a_failure_is_retried_until_the_schedule_runs_out() {
        let max = Duration::from_secs(60);
        assert!(matches!(after_failure(&schedule(), 1, Some(500), None, max), Next::Retry(_)));
        assert!(matches!(after_failure(&schedule(), 2, None, None, max), Next::Retry(_)));
        assert_eq!(after_failure(&schedule(), 3, Some(500), None, max), Next::Dead);
    }

    #[test]
    fn retry_after_counts_only_for_429_and_503() {
        let max = Duration::from_secs(60);
        assert_eq!(after_failure(&schedule(), 1, Some(429), Some("30"), max), Next::Retry(Duration::from_secs(30)));
        assert_eq!(after_failure(&schedule(), 1, Some(503), Some("9999"), max), Next::Retry(max));
        let Next::Retry(d) = after_failure(&schedule(), 1, Some(500), Some("30"), max) else { panic!() };
        assert!(d < Duration::from_secs(2));
    }
}
