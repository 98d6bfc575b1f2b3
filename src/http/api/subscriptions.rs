//! HTTP for subscriptions: the subscribe/unsubscribe side of the hub endpoint (202 at once, verification
//! follows asynchronously) and the admin read API (secrets are never returned).

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::hub::Form;
use crate::{
    callback,
    http::{ApiError, AppState},
    subscriptions::{
        request::{LeasePolicy, Mode, SubscriptionRequest},
        store::{self, Submitted},
    },
    topic::RESERVED_PREFIX,
};

/// The reason sent with `hub.mode=denied` when a topic is not in `TIDINGS_TOPIC_ALLOW`.
pub const TOPIC_NOT_ALLOWED: &str = "the topic is not open for subscription on this hub";

/// `POST /` with `hub.mode=subscribe|unsubscribe`.
pub async fn request(state: &AppState, req: &HttpRequest, form: &Form, mode: &str) -> Result<HttpResponse, ApiError> {
    let mode = if mode == "subscribe" { Mode::Subscribe } else { Mode::Unsubscribe };
    let mut values = HashMap::new();
    for key in [
        "hub.callback",
        "hub.topic",
        "hub.lease_seconds",
        "hub.secret",
        "hub.x-rate",
        "hub.x-rate-burst",
        "hub.x-filter",
    ] {
        if let Some(value) = form.one(key)? {
            values.insert(key, value.to_owned());
        }
    }
    let leases = LeasePolicy::from_config(&state.config.hub);
    let request = SubscriptionRequest::parse(mode, |k| values.get(k).cloned(), form.all(&["hub.x-header"]), &leases)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    // The hub's own topics carry other subscribers' callbacks: only the operator subscribes to them, and the
    // admin token is their allow list.
    let reserved = request.topic.is_reserved();
    if reserved && super::auth::require_admin(&state.config.http, req).is_err() {
        return Err(ApiError::Forbidden(format!(
            "hub.topic `{}`: topics starting with `{RESERVED_PREFIX}` are the hub's own; subscribing to them needs \
             the admin token (Authorization: Bearer ...)",
            request.topic
        )));
    }
    // A callback the hub may not call is refused outright: not even a denial notice is sent to it.
    callback::check_destination(request.callback.as_url(), state.config.hub.callback_allow_private)
        .await
        .map_err(|e| ApiError::bad_request(format!("hub.callback: {e}")))?;
    let denial = (mode == Mode::Subscribe && !reserved && !state.topic_allow.allows(&request.topic))
        .then_some(TOPIC_NOT_ALLOWED);
    let submitted = store::submit(&state.pool, &request, denial).await?;
    let message = match submitted {
        Submitted::Queued(id) => format!("accepted: {} request {id}; verification of intent follows\n", mode.as_str()),
        Submitted::NothingToDo => "accepted: there is no such subscription\n".to_owned(),
    };
    Ok(HttpResponse::Accepted().content_type("text/plain; charset=utf-8").body(message))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    topic: Option<String>,
    state: Option<crate::subscriptions::state::State>,
    after: Option<Uuid>,
    limit: Option<i64>,
}

/// `GET /subscriptions?topic=&state=&after=&limit=`
pub async fn list(
    state: web::Data<AppState>,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let query = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let limit = super::page_limit(query.limit)?;
    let rows =
        store::list(&state.read_pool, query.topic.as_deref(), query.state.map(|s| s.as_str()), query.after, limit)
            .await?;
    let next_after = rows.last().map(|s| s.id);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "subscriptions": rows, "next_after": next_after })))
}

/// `GET /subscriptions/{id}`: the subscription, its requests and its lifecycle history.
pub async fn show(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::bad_request("the subscription id must be a UUID"))?;
    let subscription =
        store::get(&state.read_pool, id).await?.ok_or_else(|| ApiError::NotFound(format!("no subscription {id}")))?;
    let requests = store::requests(&state.read_pool, id).await?;
    let history: Vec<_> = store::history(&state.read_pool, id)
        .await?
        .into_iter()
        .map(|(position, at, change)| serde_json::json!({ "position": position, "at": at, "change": change }))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "subscription": subscription,
        "requests": requests,
        "history": history,
    })))
}
