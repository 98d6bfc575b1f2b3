//! The operations side of the admin API: group progress, statistics, replay and bulk redelivery, ending a
//! subscription, its rate limit, custom headers and secret, and topic policies. The actions themselves are [`crate::operations`].

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::http::{ApiError, AppState};
use crate::{
    config::MAX_SECRET_GRACE,
    operations::{self, ReplayFrom},
    policies::{self, Policy},
    stats,
    subscriptions::{filter::Filter, headers::CustomHeaders, rate::RateLimit, request::HubSecret},
};

fn query<T>(q: Result<web::Query<T>, actix_web::Error>) -> Result<T, ApiError> {
    q.map(web::Query::into_inner).map_err(|e| ApiError::bad_request(format!("query: {e}")))
}

/// A JSON body; an empty body means every field takes its default.
fn body<T: serde::de::DeserializeOwned + Default>(raw: &[u8]) -> Result<T, ApiError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(raw).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

fn subscription_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("the subscription id must be a UUID"))
}

/// `GET /groups/{group_id}/progress`
pub async fn group_progress(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(stats::group_progress(&state.read_pool, &path).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    topic: Option<String>,
    subscription_id: Option<Uuid>,
}

/// `GET /stats?since=&until=&topic=&subscription_id=`: per topic and per subscription (default: the last 24 h).
pub async fn stats(
    state: web::Data<AppState>,
    q: Result<web::Query<StatsQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    let until = q.until.unwrap_or_else(Utc::now);
    let since = q.since.unwrap_or(until - Duration::hours(24));
    if since >= until {
        return Err(ApiError::bad_request("since must be before until"));
    }
    let rows = stats::delivery_stats(&state.read_pool, since, until, q.topic.as_deref(), q.subscription_id).await?;
    let (by_topic, by_subscription): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.topic.is_some());
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "since": since, "until": until, "by_topic": by_topic, "by_subscription": by_subscription,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    #[serde(default)]
    from_position: i64,
    from_time: Option<DateTime<Utc>>,
    limit: Option<i64>,
}

/// `POST /subscriptions/{id}/replay`: new jobs for the events it matched from a position or time.
pub async fn replay(
    state: web::Data<AppState>,
    path: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    let r: ReplayRequest = body(&raw)?;
    let from = ReplayFrom { position: r.from_position, time: r.from_time, limit: r.limit.unwrap_or(10_000) };
    Ok(HttpResponse::Ok().json(operations::replay(&state.pool, id, from).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRequest {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

/// `POST /subscriptions/{id}/redeliver-dead`: every dead delivery in the range goes back in the queue.
pub async fn redeliver_dead(
    state: web::Data<AppState>,
    path: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    let r: RangeRequest = body(&raw)?;
    let redelivered = operations::redeliver_dead(&state.pool, id, r.since, r.until).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "redelivered": redelivered })))
}

/// `POST /subscriptions/{id}/end`: an operator ends an active subscription (recorded in its history).
pub async fn end_subscription(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    Ok(HttpResponse::Ok().json(operations::end_subscription(&state.pool, id).await?))
}

/// `POST /subscriptions/{id}/enable`: an operator enables a disabled subscription (recorded in its history).
pub async fn enable_subscription(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    Ok(HttpResponse::Ok().json(operations::enable_subscription(&state.pool, id).await?))
}

/// `PUT /subscriptions/{id}/rate` with `{"per_second": 50, "burst": 10}`: sets the subscription's rate limit.
pub async fn set_rate(
    state: web::Data<AppState>,
    path: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    let rate: RateLimit = serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    Ok(HttpResponse::Ok().json(operations::set_rate(&state.pool, id, Some(rate)).await?))
}

/// `DELETE /subscriptions/{id}/rate`: removes the subscription's rate limit.
pub async fn remove_rate(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    Ok(HttpResponse::Ok().json(operations::set_rate(&state.pool, id, None).await?))
}

/// `PUT /subscriptions/{id}/headers`: replaces the subscription's custom headers with a JSON object of name to
/// value.
pub async fn set_headers(
    state: web::Data<AppState>,
    path: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    let headers: CustomHeaders =
        serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    Ok(HttpResponse::Ok().json(operations::set_headers(&state.pool, id, &headers).await?))
}

/// `DELETE /subscriptions/{id}/headers`: removes the subscription's custom headers.
pub async fn remove_headers(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    Ok(HttpResponse::Ok().json(operations::set_headers(&state.pool, id, &CustomHeaders::default()).await?))
}

/// `PUT /subscriptions/{id}/filter`: sets the subscription's content filter (the body is the filter).
pub async fn set_filter(
    state: web::Data<AppState>,
    path: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    let text = std::str::from_utf8(&raw).map_err(|_| ApiError::bad_request("body: the filter is not UTF-8"))?;
    let filter = Filter::parse(text).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    Ok(HttpResponse::Ok().json(operations::set_filter(&state.pool, id, Some(&filter)).await?))
}

/// `DELETE /subscriptions/{id}/filter`: removes the subscription's content filter.
pub async fn remove_filter(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    Ok(HttpResponse::Ok().json(operations::set_filter(&state.pool, id, None).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    secret: Option<String>,
    grace_seconds: Option<u64>,
}

/// `PUT /subscriptions/{id}/secret`: replaces the subscription's secret; the replaced one keeps signing beside it
/// for `grace_seconds` (default `TIDINGS_SECRET_GRACE`).
pub async fn set_secret(
    state: web::Data<AppState>,
    path: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = subscription_id(&path)?;
    let body: SecretBody = serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let secret = match body.secret.as_deref() {
        Some(raw) => HubSecret::parse(raw).map_err(|e| ApiError::bad_request(format!("secret: {e}")))?,
        None => None,
    };
    let grace = match body.grace_seconds {
        None => state.config.delivery.secret_grace,
        Some(s) if s <= MAX_SECRET_GRACE.as_secs() => std::time::Duration::from_secs(s),
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "grace_seconds: at most {} (30 days)",
                MAX_SECRET_GRACE.as_secs()
            )))
        }
    };
    Ok(HttpResponse::Ok().json(operations::set_secret(&state.pool, id, secret.as_ref(), grace).await?))
}

/// `GET /policies`
pub async fn list_policies(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(serde_json::json!({ "policies": policies::list(&state.pool).await? })))
}

/// `PUT /policies`: creates or replaces the policy of a topic or pattern.
pub async fn put_policy(state: web::Data<AppState>, raw: web::Bytes) -> Result<HttpResponse, ApiError> {
    let policy: Policy = serde_json::from_slice(&raw).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let stored = state.policies.put(policy).await?;
    Ok(HttpResponse::Ok().json(stored))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicQuery {
    topic: String,
}

/// `DELETE /policies?topic=`
pub async fn delete_policy(
    state: web::Data<AppState>,
    q: Result<web::Query<TopicQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = query(q)?;
    if state.policies.delete(&q.topic).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound(format!("no policy for {}", q.topic)))
    }
}
