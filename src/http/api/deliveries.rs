//! The admin API for deliveries: search, one delivery with its attempt history, and redelivery.

use actix_web::{web, HttpResponse};

use super::page_limit;
use crate::http::{ApiError, AppState};
use crate::outbox::{self, DeliveryFilter};

/// `GET /deliveries?subscription_id=&event_id=&state=&kind=&since=&until=&after=&limit=`
pub async fn list(
    state: web::Data<AppState>,
    query: Result<web::Query<DeliveryFilter>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let filter = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?.into_inner();
    let limit = page_limit(filter.limit)?;
    let rows = outbox::list(&state.read_pool, &filter, limit).await?;
    let next_after = rows.last().map(|d| d.id);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "deliveries": rows, "next_after": next_after })))
}

fn parse_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::bad_request("the delivery id must be a whole number"))
}

/// `GET /deliveries/{id}`: the delivery and every attempt.
pub async fn show(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    let delivery =
        outbox::get(&state.read_pool, id).await?.ok_or_else(|| ApiError::NotFound(format!("no delivery {id}")))?;
    let attempts = outbox::attempts(&state.read_pool, id).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "delivery": delivery, "attempts": attempts })))
}

/// `POST /deliveries/{id}/redeliver`: a finished delivery goes back in the queue with a fresh schedule.
pub async fn redeliver(state: web::Data<AppState>, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&path)?;
    crate::operations::redeliver(&state.pool, id).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({ "id": id, "state": "pending" })))
}
