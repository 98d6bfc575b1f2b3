//! The admin/query API (bearer token): reading the log and the thin-ping fetches.

use actix_web::{web, HttpResponse};
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::{self, EventFilter, StoredEvent};
use crate::http::{ApiError, AppState};

pub const MAX_PAGE: i64 = 1000;

/// An event as the API shows it: the body as JSON when it is JSON, as text when it is UTF-8, else base64.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub position: i64,
    pub id: Uuid,
    pub topic: String,
    pub content_type: String,
    pub body: serde_json::Value,
    pub body_encoding: &'static str,
    pub tags: Vec<String>,
    pub group_id: Option<String>,
    pub published_at: DateTime<Utc>,
}

impl From<StoredEvent> for EventView {
    fn from(e: StoredEvent) -> Self {
        let (body, body_encoding) = match serde_json::from_slice::<serde_json::Value>(&e.body) {
            Ok(value) if e.content_type.contains("json") => (value, "json"),
            _ => match String::from_utf8(e.body) {
                Ok(text) => (text.into(), "text"),
                Err(raw) => (base64::engine::general_purpose::STANDARD.encode(raw.as_bytes()).into(), "base64"),
            },
        };
        Self {
            position: e.position,
            id: e.id,
            topic: e.topic,
            content_type: e.content_type,
            body,
            body_encoding,
            tags: e.tags,
            group_id: e.group_id,
            published_at: e.published_at,
        }
    }
}

pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit.unwrap_or(100) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_PAGE}, not {n}"))),
    }
}

/// `GET /events?after=&topic=&tag=&group_id=&since=&until=&limit=`: the log in position order, with the cursor
/// for the next page.
pub async fn list_events(
    state: web::Data<AppState>,
    query: Result<web::Query<EventFilter>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let query = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let limit = page_limit(query.limit)?;
    let rows = events::search(&state.read_pool, &query, limit).await?;
    let next_after = rows.last().map(|e| e.position).unwrap_or(query.after);
    let events: Vec<EventView> = rows.into_iter().map(EventView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "events": events, "next_after": next_after })))
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct FetchView {
    id: Uuid,
    topic: String,
    state: String,
    attempts: i32,
    requested_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    status_code: Option<i32>,
    error: Option<String>,
    event_id: Option<Uuid>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchesQuery {
    id: Option<Uuid>,
    topic: Option<String>,
    state: Option<FetchState>,
    limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchState {
    Pending,
    Fetched,
    Failed,
}

impl FetchState {
    fn as_str(self) -> &'static str {
        match self {
            FetchState::Pending => "pending",
            FetchState::Fetched => "fetched",
            FetchState::Failed => "failed",
        }
    }
}

/// `GET /fetches?id=&topic=&state=`: thin-ping fetches, newest first, with their outcome.
pub async fn list_fetches(
    state: web::Data<AppState>,
    query: Result<web::Query<FetchesQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let query = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let limit = page_limit(query.limit)?;
    let rows: Vec<FetchView> = sqlx::query_as(
        "SELECT id, topic, state, attempts, requested_at, finished_at, status_code, error, event_id
         FROM topic_fetches WHERE ($1::text IS NULL OR topic = $1) AND ($2::text IS NULL OR state = $2)
           AND ($4::uuid IS NULL OR id = $4)
         ORDER BY requested_at DESC, id DESC LIMIT $3",
    )
    .bind(query.topic.as_deref())
    .bind(query.state.map(FetchState::as_str))
    .bind(limit)
    .bind(query.id)
    .fetch_all(&state.read_pool)
    .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "fetches": rows })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DryRunQuery {
    topic: String,
}

/// `GET /dry-run?topic=`: which subscriptions an event on this topic would be delivered to now. Writes nothing.
pub async fn dry_run(
    state: web::Data<AppState>,
    query: Result<web::Query<DryRunQuery>, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let query = query.map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let topic = crate::topic::Topic::parse(&query.topic).map_err(|e| ApiError::bad_request(format!("topic: {e}")))?;
    dry_run_answer(&state, topic.as_str(), None).await
}

/// `POST /dry-run` with one event as `POST /events` takes it: which subscriptions it would be delivered to now,
/// content filters applied to its tags and body. Writes nothing.
pub async fn dry_run_sample(state: web::Data<AppState>, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let sample = super::publish::parse_sample(&body)?;
    dry_run_answer(&state, sample.topic.as_str(), Some(&sample)).await
}

async fn dry_run_answer(
    state: &AppState,
    topic: &str,
    sample: Option<&crate::events::NewEvent>,
) -> Result<HttpResponse, ApiError> {
    let ids = crate::spreader::dry_run(&state.pool, topic, sample).await?;
    let subscriptions = crate::subscriptions::store::get_many(&state.pool, &ids).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "topic": topic, "subscriptions": subscriptions })))
}

/// `GET /spreader`: the log's head, the spreader's cursor and the lag between them.
pub async fn spreader_lag(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(crate::spreader::lag(&state.read_pool).await?))
}
