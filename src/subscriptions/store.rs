//! SQL for `subscriptions` and `subscription_requests`. Every state change goes through [`transition_in`], which
//! asks the state machine, updates the row and appends the change to the event log in the caller's transaction:
//! once as the subscription's history, once as content on `tidings.subscription.<transition>` for the operator's
//! own subscriptions (so the caller wakes the spreader after its commit). These transactions commit durably
//! (synchronous commit): a verified subscription change is never lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{
    filter::Filter,
    headers::CustomHeaders,
    rate::RateLimit,
    request::{HubSecret, Mode, RequestMode, RequestState, SubscriptionRequest},
    state::{self, State, Transition},
};
use crate::{
    events::{self, EventKind, NewEvent},
    outbox::{self, JobKind},
    topic::{Topic, RESERVED_PREFIX},
};

/// A subscription as the API shows it (never its secret).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub id: Uuid,
    pub topic: String,
    pub callback: String,
    pub state: String,
    pub lease_seconds: Option<i32>,
    pub expires_at: Option<DateTime<Utc>>,
    pub has_secret: bool,
    /// Until when the secret this one replaced still signs deliveries (none when no rotation is in its grace).
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Deliveries a second at most, and the burst (both or neither).
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<i32>,
    /// Sent with every delivery; shown to the admin API only, like the rest of a subscription.
    pub headers: sqlx::types::Json<std::collections::BTreeMap<String, String>>,
    /// The content filter as the subscriber gave it; none delivers every event of the topic.
    pub filter: Option<sqlx::types::Json<serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const SUBSCRIPTION_COLUMNS: &str =
    "id, topic, callback, state, lease_seconds, expires_at, secret IS NOT NULL AS has_secret, \
     CASE WHEN previous_secret_until > now() THEN previous_secret_until END AS previous_secret_until, rate_per_second, \
     rate_burst, headers, filter, created_at, updated_at";

/// What happened to a submitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Stored, with a job to verify intent (or to notify a denial).
    Queued(Uuid),
    /// An unsubscribe for a pair the hub has never seen: nothing to verify or end.
    NothingToDo,
}

/// Stores a request and its verification job (or, when `denial` is given, applies the denial and queues its
/// notice) in one durable transaction, and wakes the deliverer once it has committed.
#[tracing::instrument(skip_all, fields(topic = %request.topic, callback = %request.callback, mode = request.mode.as_str()))]
pub async fn submit(
    pool: &PgPool,
    request: &SubscriptionRequest,
    denial: Option<&str>,
) -> Result<Submitted, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let subscription_id = if request.mode == Mode::Unsubscribe && denial.is_none() {
        let existing: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM subscriptions WHERE topic = $1 AND callback = $2")
                .bind(request.topic.as_str())
                .bind(request.callback.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        match existing {
            Some(id) => id,
            None => return Ok(Submitted::NothingToDo),
        }
    } else {
        sqlx::query_scalar(
            "INSERT INTO subscriptions (id, topic, callback, pattern_prefix, callback_host) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (topic, callback) DO UPDATE SET updated_at = subscriptions.updated_at
             RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(request.topic.as_str())
        .bind(request.callback.as_str())
        .bind(request.topic.pattern_prefix())
        .bind(request.callback.host_key())
        .fetch_one(&mut *tx)
        .await?
    };
    let request_id = Uuid::now_v7();
    let mode = if denial.is_some() { RequestMode::Denied } else { RequestMode::from(request.mode) };
    sqlx::query(
        "INSERT INTO subscription_requests
             (id, subscription_id, mode, lease_seconds, secret, reason, rate_per_second, rate_burst, headers, filter,
              filter_path)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonpath)",
    )
    .bind(request_id)
    .bind(subscription_id)
    .bind(mode)
    .bind(request.lease_seconds as i32)
    .bind(request.secret.as_ref().map(|s| s.expose()))
    .bind(denial)
    .bind(request.rate.map(|r| r.per_second()))
    .bind(request.rate.map(|r| r.burst()))
    .bind(request.headers.as_ref().map(sqlx::types::Json))
    .bind(
        request
            .filter
            .as_ref()
            .map(|f| sqlx::types::Json(f.as_ref().map_or(serde_json::Value::Null, |f| f.source().clone()))),
    )
    .bind(request.filter.as_ref().and_then(|f| f.as_ref().map(|f| f.jsonpath().to_owned())))
    .execute(&mut *tx)
    .await?;
    if let Some(reason) = denial {
        let current = current_state(&mut tx, subscription_id).await?;
        if state::next(current, Transition::Denied).is_ok() {
            transition_in(&mut tx, subscription_id, Transition::Denied, Some(reason)).await?;
        }
    }
    let kind = if denial.is_some() { JobKind::Deny } else { JobKind::Verify };
    outbox::enqueue_request(&mut tx, kind, subscription_id, request_id).await?;
    tx.commit().await?;
    outbox::wake(pool).await;
    if denial.is_some() {
        events::wake(pool).await;
    }
    Ok(Submitted::Queued(request_id))
}

async fn current_state(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> Result<State, sqlx::Error> {
    let raw: String = sqlx::query_scalar("SELECT state FROM subscriptions WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    State::parse(&raw).ok_or_else(|| sqlx::Error::Decode(format!("unknown subscription state {raw}").into()))
}

#[derive(sqlx::FromRow)]
struct LifecycleRow {
    topic: String,
    callback: String,
    state: String,
    lease_seconds: Option<i32>,
    expires_at: Option<DateTime<Utc>>,
}

/// Applies a transition the state machine allows, and appends it to the log. The row must be locked by the caller
/// (or is locked here). Fields already updated by the caller (lease, secret) are read back for the log entry.
pub async fn transition_in(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    transition: Transition,
    reason: Option<&str>,
) -> Result<State, sqlx::Error> {
    let from = current_state(tx, id).await?;
    let to = state::next(from, transition).map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    // Becoming active again starts the failure count afresh: what failed before it was disabled or ended is not
    // held against it.
    let reactivated = to == State::Active && from != State::Active;
    let row: LifecycleRow = sqlx::query_as(
        "UPDATE subscriptions SET state = $2, updated_at = now(),
                failing_since = CASE WHEN $3 THEN NULL ELSE failing_since END,
                dead_in_a_row = CASE WHEN $3 THEN 0 ELSE dead_in_a_row END
         WHERE id = $1
         RETURNING topic, callback, state, lease_seconds, expires_at",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(reactivated)
    .fetch_one(&mut **tx)
    .await?;
    let body = serde_json::json!({
        "subscription_id": id,
        "transition": transition,
        "from": from,
        "to": to,
        "topic": row.topic,
        "callback": row.callback,
        "lease_seconds": row.lease_seconds,
        "expires_at": row.expires_at,
        "reason": reason,
    });
    let topic = |raw: &str| Topic::parse(raw).map_err(|e| sqlx::Error::Protocol(e.to_string()));
    let history = NewEvent {
        id: Uuid::now_v7(),
        id_from_publisher: false,
        topic: topic(&row.topic)?,
        content_type: "application/json".into(),
        body: serde_json::to_vec(&body).expect("JSON serialises"),
        tags: vec![format!("subscription.{transition}")],
        group_id: Some(id.to_string()),
    };
    // The same change, published on the hub's own topic for operators' subscriptions (alerts).
    let notice = NewEvent {
        id: Uuid::now_v7(),
        topic: topic(&format!("{RESERVED_PREFIX}subscription.{transition}"))?,
        ..history.clone()
    };
    append_one(tx, EventKind::Subscription, &history).await?;
    append_one(tx, EventKind::Content, &notice).await?;
    tracing::info!(subscription_id = %id, %transition, %from, %to, state = row.state, "subscription transition");
    Ok(to)
}

/// Appends one event the hub wrote itself (a fresh id, so never a conflict) in the caller's transaction.
async fn append_one(tx: &mut Transaction<'_, Postgres>, kind: EventKind, event: &NewEvent) -> Result<(), sqlx::Error> {
    events::append_in(tx, kind, std::slice::from_ref(event)).await.map(drop).map_err(|e| match e {
        events::AppendError::Database(e) => e,
        other => sqlx::Error::Protocol(other.to_string()),
    })
}

/// A pending request and what verifying it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingRequest {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub mode: RequestMode,
    pub lease_seconds: Option<i32>,
    pub reason: Option<String>,
    pub state: RequestState,
    pub topic: String,
    pub callback: String,
}

pub async fn load_request(pool: &PgPool, request_id: Uuid) -> Result<Option<PendingRequest>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.id, r.subscription_id, r.mode, r.lease_seconds, r.reason, r.state, s.topic, s.callback
         FROM subscription_requests r JOIN subscriptions s ON s.id = r.subscription_id WHERE r.id = $1",
    )
    .bind(request_id)
    .fetch_optional(pool)
    .await
}

/// Applies a request whose verification of intent succeeded. A request older than one already verified for the
/// same subscription is marked superseded instead, so late answers never roll a subscription back.
#[tracing::instrument(skip(pool))]
pub async fn apply_verified(pool: &PgPool, request_id: Uuid, grace: Duration) -> Result<Option<State>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some((subscription_id, mode, created_at, req_state)): Option<(Uuid, RequestMode, DateTime<Utc>, RequestState)> =
        sqlx::query_as(
            "SELECT subscription_id, mode, created_at, state FROM subscription_requests WHERE id = $1 FOR UPDATE",
        )
        .bind(request_id)
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    if req_state != RequestState::Pending {
        return Ok(None);
    }
    let current = current_state(&mut tx, subscription_id).await?;
    let newer_verified: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM subscription_requests
                        WHERE subscription_id = $1 AND state = 'verified' AND created_at > $2)",
    )
    .bind(subscription_id)
    .bind(created_at)
    .fetch_one(&mut *tx)
    .await?;
    let outcome = if newer_verified {
        finish_request(&mut tx, request_id, RequestState::Superseded, None).await?;
        None
    } else if mode == RequestMode::Subscribe {
        sqlx::query(&format!(
            "UPDATE subscriptions s SET lease_seconds = r.lease_seconds, {ROTATE_SECRET_TO_REQUESTED},
                    rate_per_second = coalesce(r.rate_per_second, s.rate_per_second),
                    rate_burst = coalesce(r.rate_burst, s.rate_burst), headers = coalesce(r.headers, s.headers),
                    filter = CASE WHEN r.filter IS NULL THEN s.filter WHEN r.filter = 'null' THEN NULL ELSE r.filter END,
                    filter_path = CASE WHEN r.filter IS NULL THEN s.filter_path ELSE r.filter_path END,
                    expires_at = now() + make_interval(secs => r.lease_seconds)
             FROM subscription_requests r WHERE r.id = $1 AND s.id = r.subscription_id"
        ))
        .bind(request_id)
        .bind(grace.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        let to = transition_in(&mut tx, subscription_id, state::on_subscribe_verified(current), None).await?;
        finish_request(&mut tx, request_id, RequestState::Verified, None).await?;
        Some(to)
    } else {
        let to = if matches!(current, State::Active | State::Disabled) {
            Some(transition_in(&mut tx, subscription_id, Transition::Unsubscribed, None).await?)
        } else {
            None
        };
        finish_request(&mut tx, request_id, RequestState::Verified, None).await?;
        to
    };
    tx.commit().await?;
    if outcome.is_some() {
        events::wake(pool).await;
    }
    Ok(outcome)
}

async fn finish_request(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    state: RequestState,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE subscription_requests SET state = $2, error = $3, finished_at = now() WHERE id = $1")
        .bind(id)
        .bind(state)
        .bind(error)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records a failed verification (or a sent denial notice): the subscription itself is left exactly as it was.
pub async fn finish_unapplied(
    pool: &PgPool,
    id: Uuid,
    state: RequestState,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    finish_request(&mut tx, id, state, error).await?;
    tx.commit().await
}

/// Ends an active subscription whose callback answered 410 Gone.
pub async fn end_gone(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    if current_state(&mut tx, id).await? == State::Active {
        transition_in(&mut tx, id, Transition::Gone, Some("the callback answered 410 Gone")).await?;
    }
    tx.commit().await?;
    events::wake(pool).await;
    Ok(())
}

/// When a failing subscription is disabled: every delivery failed for `after`, with at least `dead_in_a_row` dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisablePolicy {
    pub after: Duration,
    pub dead_in_a_row: u32,
}

/// Disables an active subscription whose deliveries have all failed since at least `policy.after` ago, with at
/// least `policy.dead_in_a_row` dead in a row: the guard of the `disabled` transition, checked under the row's
/// lock. Returns whether it disabled it.
#[tracing::instrument(skip(pool))]
pub async fn disable_if_failing(pool: &PgPool, id: Uuid, policy: DisablePolicy) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let failing: Option<(DateTime<Utc>, i32)> = sqlx::query_as(
        "SELECT failing_since, dead_in_a_row FROM subscriptions
         WHERE id = $1 AND state = 'active' AND failing_since <= now() - make_interval(secs => $2)
           AND dead_in_a_row >= $3
         FOR UPDATE",
    )
    .bind(id)
    .bind(policy.after.as_secs_f64())
    .bind(policy.dead_in_a_row.min(i32::MAX as u32) as i32)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((since, dead)) = failing else {
        return Ok(false);
    };
    let reason = format!(
        "every delivery has failed since {} and {dead} died in a row",
        since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    transition_in(&mut tx, id, Transition::Disabled, Some(&reason)).await?;
    tx.commit().await?;
    events::wake(pool).await;
    Ok(true)
}

/// What [`enable`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enable {
    Enabled,
    NoSubscription,
    NotDisabled(State),
}

/// An operator enables a disabled subscription again (the `enabled` transition, in its history).
#[tracing::instrument(skip(pool))]
pub async fn enable(pool: &PgPool, id: Uuid) -> Result<Enable, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM subscriptions WHERE id = $1)")
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    if !exists {
        return Ok(Enable::NoSubscription);
    }
    let current = current_state(&mut tx, id).await?;
    if current != State::Disabled {
        return Ok(Enable::NotDisabled(current));
    }
    transition_in(&mut tx, id, Transition::Enabled, Some("enabled by an operator")).await?;
    tx.commit().await?;
    events::wake(pool).await;
    Ok(Enable::Enabled)
}

/// Moves every active subscription whose lease has run out to `expired`. Returns how many expired. (Called by the
/// spreader, which spreads right after it: no wake-up needed.)
pub async fn expire_due(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let due: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM subscriptions WHERE state = 'active' AND expires_at <= now()
         ORDER BY expires_at LIMIT 500 FOR UPDATE SKIP LOCKED",
    )
    .fetch_all(&mut *tx)
    .await?;
    for id in &due {
        transition_in(&mut tx, *id, Transition::Expired, Some("the lease ran out")).await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

pub async fn list(
    pool: &PgPool,
    topic: Option<&str>,
    state: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
         WHERE ($1::text IS NULL OR topic = $1) AND ($2::text IS NULL OR state = $2) AND ($3::uuid IS NULL OR id > $3)
         ORDER BY id LIMIT $4"
    ))
    .bind(topic)
    .bind(state)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Sets or (with None) removes a subscription's rate limit; None when there is no such subscription. Deliveries
/// the old limit held back are due again at once, so the new limit applies to them from the next claim.
#[tracing::instrument(skip(pool))]
pub async fn set_rate(pool: &PgPool, id: Uuid, rate: Option<RateLimit>) -> Result<Option<Subscription>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let updated: Option<Subscription> = sqlx::query_as(&format!(
        "UPDATE subscriptions SET rate_per_second = $2, rate_burst = $3, updated_at = now() WHERE id = $1
         RETURNING {SUBSCRIPTION_COLUMNS}"
    ))
    .bind(id)
    .bind(rate.map(|r| r.per_second()))
    .bind(rate.map(|r| r.burst()))
    .fetch_optional(&mut *tx)
    .await?;
    if updated.is_none() {
        return Ok(None);
    }
    let released = outbox::release_held(&mut tx, id).await?;
    tx.commit().await?;
    if released > 0 {
        outbox::wake(pool).await;
    }
    Ok(updated)
}

/// The assignments that replace the subscription's secret with `$new` (an SQL expression; the table is `s`, the
/// grace period `$2` seconds): the secret replaced keeps signing until the grace ends, unless the new one is the
/// same (nothing changes) or none (nothing is signed any more).
macro_rules! rotate_secret_to {
    ($new:literal) => {
        concat!(
            "previous_secret = CASE WHEN ",
            $new,
            " IS NULL THEN NULL
                                    WHEN s.secret IS NOT DISTINCT FROM ",
            $new,
            " THEN s.previous_secret
                                    WHEN s.secret IS NOT NULL AND $2 > 0 THEN s.secret END,
             previous_secret_until = CASE WHEN ",
            $new,
            " IS NULL THEN NULL
                                          WHEN s.secret IS NOT DISTINCT FROM ",
            $new,
            " THEN s.previous_secret_until
                                          WHEN s.secret IS NOT NULL AND $2 > 0
                                              THEN now() + make_interval(secs => $2) END,
             secret = ",
            $new
        )
    };
}
/// To the secret of the verified request `r`.
const ROTATE_SECRET_TO_REQUESTED: &str = rotate_secret_to!("r.secret");
/// To the secret bound as `$3`.
const ROTATE_SECRET_TO_GIVEN: &str = rotate_secret_to!("$3::text");

/// Replaces a subscription's secret (none: deliveries are no longer signed); the secret it replaces keeps signing
/// beside it for `grace`. None when there is no such subscription.
#[tracing::instrument(skip(pool, secret))]
pub async fn set_secret(
    pool: &PgPool,
    id: Uuid,
    secret: Option<&HubSecret>,
    grace: Duration,
) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE subscriptions s SET {ROTATE_SECRET_TO_GIVEN}, updated_at = now() WHERE s.id = $1
         RETURNING {SUBSCRIPTION_COLUMNS}"
    ))
    .bind(id)
    .bind(grace.as_secs_f64())
    .bind(secret.map(HubSecret::expose))
    .fetch_optional(pool)
    .await
}

/// Sets or (with None) removes a subscription's content filter; None when there is no such subscription. The
/// spreader applies it to the events it spreads from then on; jobs already written stay.
#[tracing::instrument(skip(pool, filter))]
pub async fn set_filter(pool: &PgPool, id: Uuid, filter: Option<&Filter>) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE subscriptions SET filter = $2, filter_path = $3::jsonpath, updated_at = now() WHERE id = $1
         RETURNING {SUBSCRIPTION_COLUMNS}"
    ))
    .bind(id)
    .bind(filter.map(|f| sqlx::types::Json(f.source())))
    .bind(filter.map(Filter::jsonpath))
    .fetch_optional(pool)
    .await
}

/// Replaces a subscription's custom headers (none clears them); None when there is no such subscription. Jobs
/// read them at their claim, so the next delivery carries the new set.
#[tracing::instrument(skip(pool, headers))]
pub async fn set_headers(
    pool: &PgPool,
    id: Uuid,
    headers: &CustomHeaders,
) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!(
        "UPDATE subscriptions SET headers = $2, updated_at = now() WHERE id = $1 RETURNING {SUBSCRIPTION_COLUMNS}"
    ))
    .bind(id)
    .bind(sqlx::types::Json(headers))
    .fetch_optional(pool)
    .await
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// The subscription's current `hub.secret`, for checking a subscriber's proof that it holds it (outer None: no
/// such subscription; inner None: it has no secret). Never shown by any API.
pub async fn current_secret(pool: &PgPool, id: Uuid) -> Result<Option<Option<String>>, sqlx::Error> {
    sqlx::query_scalar("SELECT secret FROM subscriptions WHERE id = $1").bind(id).fetch_optional(pool).await
}

pub async fn get_many(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Subscription>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ANY($1) ORDER BY id"))
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// The lifecycle of one subscription, as appended to the log, oldest first.
pub async fn history(pool: &PgPool, id: Uuid) -> Result<Vec<(i64, DateTime<Utc>, serde_json::Value)>, sqlx::Error> {
    let rows = history_page(pool, id, 0, i64::MAX).await?;
    Ok(rows
        .into_iter()
        .map(|h| (h.position, h.published_at, serde_json::from_slice(&h.body).unwrap_or_default()))
        .collect())
}

/// One entry of a subscription's lifecycle, as appended to the log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryEntry {
    pub position: i64,
    pub published_at: DateTime<Utc>,
    pub body: Vec<u8>,
}

/// A page of a subscription's lifecycle history, oldest first, after position `after`.
pub async fn history_page(pool: &PgPool, id: Uuid, after: i64, limit: i64) -> Result<Vec<HistoryEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, published_at, body FROM events
         WHERE kind = 'subscription' AND group_id = $1 AND position > $2 ORDER BY position LIMIT $3",
    )
    .bind(id.to_string())
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RequestView {
    pub id: Uuid,
    pub mode: String,
    pub lease_seconds: Option<i32>,
    pub state: String,
    pub reason: Option<String>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn requests(pool: &PgPool, id: Uuid) -> Result<Vec<RequestView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, mode, lease_seconds, state, reason, error, created_at, finished_at
         FROM subscription_requests WHERE subscription_id = $1 ORDER BY created_at, id",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}
