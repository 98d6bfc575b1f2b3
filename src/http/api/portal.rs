//! The subscriber portal's JSON face: a subscriber obtains a link by proving its `hub.secret`, reads its own
//! subscription's deliveries and attempts, and redelivers its dead ones; the operator issues links through the
//! admin API. The credentials are [`crate::portal`]; the page twin is the console's `/console/subscriber`.

use actix_web::{http::header, web, HttpResponse};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::{ApiError, AppState};
use crate::portal::{self, Link, PortalError};

fn json_body<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// What a link is, as the API shows it.
#[derive(Debug, Serialize)]
struct LinkView {
    subscription_id: Uuid,
    url: String,
    token: String,
    expires_at: DateTime<Utc>,
}

fn link_view(state: &AppState, link: Link) -> Result<LinkView, ApiError> {
    let url = link
        .url(&state.config.hub.hub_url)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("TIDINGS_HUB_URL cannot hold the portal path: {e}")))?;
    Ok(LinkView {
        subscription_id: link.subscription_id,
        url: url.into(),
        token: link.token,
        expires_at: link.expires_at,
    })
}

/// Answers that carry a credential are never cached, and a page that links elsewhere never leaks them.
fn private(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((header::CACHE_CONTROL, "no-store")).insert_header(("Referrer-Policy", "no-referrer"));
    builder
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    expires_in_seconds: Option<i64>,
}

/// `POST /subscriptions/{id}/portal-link` with `{"expires_in_seconds": 86400}` (optional): the operator's link
/// to a subscription's delivery log, to hand to its subscriber.
pub async fn issue_link(
    state: web::Data<AppState>,
    path: web::Path<String>,
    raw: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::bad_request("the subscription id must be a UUID"))?;
    let r: IssueRequest =
        if raw.iter().all(u8::is_ascii_whitespace) { IssueRequest::default() } else { json_body(&raw)? };
    let lifetime = r.expires_in_seconds.map(|s| Duration::try_seconds(s).ok_or(PortalError::Lifetime)).transpose()?;
    let link = portal::issue_link(&state.pool, id, lifetime).await?;
    Ok(private(HttpResponse::Created()).json(link_view(&state, link)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NonceRequest {
    subscription_id: Uuid,
}

/// `POST /portal/nonce` with `{"subscription_id": ...}`: a nonce to answer with the HMAC of it under the
/// subscription's `hub.secret`. Issued for any id, so it tells nothing about which subscriptions exist.
pub async fn nonce(state: web::Data<AppState>, raw: web::Bytes) -> Result<HttpResponse, ApiError> {
    let r: NonceRequest = json_body(&raw)?;
    let n = portal::issue_nonce(&state.pool, r.subscription_id).await?;
    Ok(private(HttpResponse::Created()).json(serde_json::json!({ "nonce": n.nonce, "expires_at": n.expires_at })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeemRequest {
    nonce: String,
    proof: String,
}

/// `POST /portal/link` with `{"nonce": ..., "proof": hex HMAC-SHA256(hub.secret, nonce)}`: a link valid for an
/// hour to the subscription the nonce was issued for.
pub async fn redeem(state: web::Data<AppState>, raw: web::Bytes) -> Result<HttpResponse, ApiError> {
    let r: RedeemRequest = json_body(&raw)?;
    let link = portal::redeem(&state.pool, &r.nonce, &r.proof).await?;
    Ok(private(HttpResponse::Created()).json(link_view(&state, link)?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    token: String,
    before: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    token: String,
}

/// `GET /portal?token=&before=`: the subscription's recent deliveries and their attempts.
pub async fn log(
    state: web::Data<AppState>,
    q: Result<web::Query<LogQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = q.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let log = portal::log(&state.pool, &q.token, q.before.unwrap_or(i64::MAX), portal::PAGE).await?;
    Ok(private(HttpResponse::Ok()).json(log))
}

/// `POST /portal/redeliver-dead?token=`: every dead delivery of the subscription goes back in the queue.
pub async fn redeliver_dead(
    state: web::Data<AppState>,
    q: Result<web::Query<TokenQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let q = q.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let redelivered = portal::redeliver_dead(&state.pool, &q.token).await?;
    Ok(private(HttpResponse::Ok()).json(serde_json::json!({ "redelivered": redelivered })))
}
