//! The operator's actions, written once: replaying a subscription, redelivering one delivery or a subscription's
//! dead ones, ending or enabling a subscription and setting its rate limit, custom headers or secret. The JSON API and the console call these and map
//! [`OperationError`] each to its own answer; neither checks a precondition itself.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    outbox::{self, Replayed, MAX_BULK},
    subscriptions::{
        filter::Filter,
        headers::CustomHeaders,
        rate::RateLimit,
        request::HubSecret,
        state::{State, Transition},
        store::{self, Subscription},
    },
};

/// Why an action was not carried out; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error("no subscription {0}")]
    NoSubscription(Uuid),
    #[error("subscription {id} is {state}, not active")]
    NotActive { id: Uuid, state: String },
    #[error("subscription {id} is {state}, not disabled")]
    NotDisabled { id: Uuid, state: String },
    #[error("no delivery {0}")]
    NoDelivery(i64),
    #[error("delivery {0} is still pending or is not an event delivery")]
    NotRedeliverable(i64),
    #[error("limit must be between 1 and {MAX_BULK}")]
    Limit,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What to replay: the events a subscription matched from a log position or a publish time, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct ReplayFrom {
    pub position: i64,
    pub time: Option<DateTime<Utc>>,
    pub limit: i64,
}

async fn active(pool: &PgPool, id: Uuid) -> Result<Subscription, OperationError> {
    let subscription = store::get(pool, id).await?.ok_or(OperationError::NoSubscription(id))?;
    if subscription.state != State::Active.as_str() {
        return Err(OperationError::NotActive { id, state: subscription.state });
    }
    Ok(subscription)
}

/// New jobs for the events an active subscription matched from `from` on.
#[tracing::instrument(skip(pool))]
pub async fn replay(pool: &PgPool, id: Uuid, from: ReplayFrom) -> Result<Replayed, OperationError> {
    if !(1..=MAX_BULK).contains(&from.limit) {
        return Err(OperationError::Limit);
    }
    active(pool, id).await?;
    let replayed = outbox::replay(pool, id, from.position, from.time, from.limit).await?;
    tracing::info!(subscription_id = %id, created = replayed.created, "replayed a subscription");
    Ok(replayed)
}

/// Puts an active subscription's dead deliveries created in [since, until) back in the queue. Returns how many.
#[tracing::instrument(skip(pool))]
pub async fn redeliver_dead(
    pool: &PgPool,
    id: Uuid,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<i64, OperationError> {
    active(pool, id).await?;
    let redelivered = outbox::redeliver_dead(pool, id, since, until).await?;
    tracing::info!(subscription_id = %id, redelivered, "redelivered dead deliveries");
    Ok(redelivered)
}

/// Puts one finished delivery back in the queue with a fresh retry schedule.
#[tracing::instrument(skip(pool))]
pub async fn redeliver(pool: &PgPool, id: i64) -> Result<(), OperationError> {
    if outbox::get(pool, id).await?.is_none() {
        return Err(OperationError::NoDelivery(id));
    }
    if !outbox::redeliver(pool, id).await? {
        return Err(OperationError::NotRedeliverable(id));
    }
    tracing::info!(delivery_id = id, "redelivered");
    Ok(())
}

/// An operator ends an active subscription; the transition is in its history with the reason.
#[tracing::instrument(skip(pool))]
pub async fn end_subscription(pool: &PgPool, id: Uuid) -> Result<Subscription, OperationError> {
    active(pool, id).await?;
    let mut tx = pool.begin().await?;
    store::transition_in(&mut tx, id, Transition::Unsubscribed, Some("ended by an operator")).await?;
    tx.commit().await?;
    tracing::info!(subscription_id = %id, "ended a subscription");
    store::get(pool, id).await?.ok_or(OperationError::NoSubscription(id))
}

/// An operator enables a disabled subscription: it gets new events again, and its dead deliveries can be
/// redelivered.
#[tracing::instrument(skip(pool))]
pub async fn enable_subscription(pool: &PgPool, id: Uuid) -> Result<Subscription, OperationError> {
    match store::enable(pool, id).await? {
        store::Enable::Enabled => {}
        store::Enable::NoSubscription => return Err(OperationError::NoSubscription(id)),
        store::Enable::NotDisabled(state) => {
            return Err(OperationError::NotDisabled { id, state: state.as_str().to_owned() })
        }
    }
    tracing::info!(subscription_id = %id, "enabled a subscription");
    store::get(pool, id).await?.ok_or(OperationError::NoSubscription(id))
}

/// Sets (or with None removes) a subscription's rate limit, whatever its state.
#[tracing::instrument(skip(pool))]
pub async fn set_rate(pool: &PgPool, id: Uuid, rate: Option<RateLimit>) -> Result<Subscription, OperationError> {
    let updated = store::set_rate(pool, id, rate).await?.ok_or(OperationError::NoSubscription(id))?;
    tracing::info!(subscription_id = %id, ?rate, "set a rate limit");
    Ok(updated)
}

/// Sets (or with None removes) a subscription's content filter, whatever its state.
#[tracing::instrument(skip(pool, filter))]
pub async fn set_filter(pool: &PgPool, id: Uuid, filter: Option<&Filter>) -> Result<Subscription, OperationError> {
    let updated = store::set_filter(pool, id, filter).await?.ok_or(OperationError::NoSubscription(id))?;
    tracing::info!(subscription_id = %id, filtered = filter.is_some(), "set a content filter");
    Ok(updated)
}

/// Replaces a subscription's custom headers (empty clears them), whatever its state.
#[tracing::instrument(skip(pool, headers))]
pub async fn set_headers(pool: &PgPool, id: Uuid, headers: &CustomHeaders) -> Result<Subscription, OperationError> {
    let updated = store::set_headers(pool, id, headers).await?.ok_or(OperationError::NoSubscription(id))?;
    let names: Vec<&str> = headers.iter().map(|(name, _)| name).collect();
    tracing::info!(subscription_id = %id, ?names, "set custom headers");
    Ok(updated)
}

/// Replaces a subscription's secret (none: deliveries are no longer signed); the replaced one keeps signing beside
/// it for `grace`.
#[tracing::instrument(skip(pool, secret))]
pub async fn set_secret(
    pool: &PgPool,
    id: Uuid,
    secret: Option<&HubSecret>,
    grace: std::time::Duration,
) -> Result<Subscription, OperationError> {
    let updated = store::set_secret(pool, id, secret, grace).await?.ok_or(OperationError::NoSubscription(id))?;
    tracing::info!(subscription_id = %id, signed = secret.is_some(), ?grace, "set a secret");
    Ok(updated)
}
