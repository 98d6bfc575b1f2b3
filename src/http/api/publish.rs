//! Fat-ping publishing: JSON events (one or a batch of up to 1,000, all or none) and raw bodies with their own
//! content type. Everything is validated before anything is written.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::Deserialize;
use uuid::Uuid;

use crate::http::{ApiError, AppState};
use crate::{
    events::{self, AppendError, Appended, NewEvent},
    topic::{Topic, RESERVED_PREFIX},
};

pub const MAX_BATCH: usize = 1000;

/// One event as a publisher sends it in JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventInput {
    topic: String,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default)]
    body_base64: Option<String>,
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    group_id: Option<String>,
}

/// Reads one event (an object) or a batch (`{"events": [...]}` or an array), with a precise message on error.
fn parse_input(body: &[u8]) -> Result<(Vec<EventInput>, bool), String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    let (list, batch) = match value {
        serde_json::Value::Array(items) => (items, true),
        serde_json::Value::Object(mut map) if map.contains_key("events") => match map.remove("events") {
            Some(serde_json::Value::Array(items)) if map.is_empty() => (items, true),
            _ => return Err("a batch is {\"events\": [...]} with nothing beside it".into()),
        },
        one @ serde_json::Value::Object(_) => (vec![one], false),
        _ => return Err("the body must be an event object, an array of events, or {\"events\": [...]}".into()),
    };
    if list.len() > MAX_BATCH {
        return Err(format!("a batch holds at most {MAX_BATCH} events, not {}", list.len()));
    }
    let events = list
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| if batch { format!("event {i}: {e}") } else { e.to_string() })
        })
        .collect::<Result<Vec<EventInput>, _>>()?;
    Ok((events, batch))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

impl EventInput {
    fn into_event(self, index: Option<usize>) -> Result<NewEvent, String> {
        let at = |msg: String| match index {
            Some(i) => format!("event {i}: {msg}"),
            None => msg,
        };
        let topic = Topic::parse(&self.topic).map_err(|e| at(format!("topic: {e}")))?;
        if topic.is_pattern() {
            return Err(at("topic: a pattern (ending in `.*`) can be subscribed to, not published to".into()));
        }
        let content_type = events::validate_content_type(self.content_type.as_deref().unwrap_or("application/json"))
            .map_err(|e| at(format!("content_type: {e}")))?;
        let body = match (self.body, self.body_base64) {
            (Some(_), Some(_)) => return Err(at("give either body or body_base64, not both".into())),
            (None, None) => return Err(at("body (or body_base64) is required".into())),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| at("body_base64 is not valid base64".into()))?,
            (Some(value), None) if is_json(&content_type) => {
                serde_json::to_vec(&value).map_err(|e| at(e.to_string()))?
            }
            (Some(serde_json::Value::String(text)), None) => text.into_bytes(),
            (Some(_), None) => {
                return Err(at(format!("body must be a string for content type {content_type} (or use body_base64)")))
            }
        };
        events::validate_labels(&self.tags, self.group_id.as_deref()).map_err(|e| at(e.to_string()))?;
        Ok(NewEvent {
            id_from_publisher: self.id.is_some(),
            id: self.id.unwrap_or_else(Uuid::now_v7),
            topic,
            content_type,
            body,
            tags: self.tags,
            group_id: self.group_id,
        })
    }
}

/// One event in the JSON publishers send (a sample for a dry run): checked like a publish, written nowhere.
pub fn parse_sample(body: &[u8]) -> Result<NewEvent, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let input: EventInput = serde_json::from_value(value).map_err(|e| ApiError::bad_request(e.to_string()))?;
    input.into_event(None).map_err(ApiError::BadRequest)
}

/// `POST /events`: one event (an object) or a batch (`{"events": [...]}` or an array).
#[tracing::instrument(skip_all)]
pub async fn publish_json(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    super::auth::require_publisher(&state.config.http, &req, &body)?;
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !is_json(content_type) {
        return Err(ApiError::UnsupportedMediaType(
            "POST /events takes application/json; use POST /events/raw?topic=... for other content".into(),
        ));
    }
    let (inputs, batch) = parse_input(&body).map_err(ApiError::BadRequest)?;
    if inputs.is_empty() {
        return Err(ApiError::bad_request("the batch is empty"));
    }
    let events = inputs
        .into_iter()
        .enumerate()
        .map(|(i, e)| e.into_event(batch.then_some(i)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::BadRequest)?;
    let appended = append(&state, events, "json").await?;
    let replayed = appended.iter().all(|a| a.replayed);
    let mut response = if replayed { HttpResponse::Ok() } else { HttpResponse::Created() };
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(if batch { response.json(serde_json::json!({ "events": appended })) } else { response.json(&appended[0]) })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuery {
    topic: Option<String>,
    id: Option<String>,
    group_id: Option<String>,
}

/// `POST /events/raw?topic=...`: the body, byte for byte, with its own `Content-Type`.
#[tracing::instrument(skip_all)]
pub async fn publish_raw(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    super::auth::require_publisher(&state.config.http, &req, &body)?;
    let pairs = super::hub::decode_form(req.query_string().as_bytes()).map_err(ApiError::BadRequest)?;
    if let Some((key, _)) = pairs
        .iter()
        .enumerate()
        .find_map(|(i, (k, _))| (k != "tag" && pairs[..i].iter().any(|(seen, _)| seen == k)).then_some((k, i)))
    {
        return Err(ApiError::bad_request(format!("query: {key} is given more than once")));
    }
    let query: RawQuery = serde_json::from_value(serde_json::Value::Object(
        pairs.iter().filter(|(k, _)| k != "tag").map(|(k, v)| (k.clone(), v.clone().into())).collect(),
    ))
    .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let topic =
        Topic::parse(query.topic.as_deref().unwrap_or("")).map_err(|e| ApiError::bad_request(format!("topic: {e}")))?;
    if topic.is_pattern() {
        return Err(ApiError::bad_request("topic: a pattern can be subscribed to, not published to"));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .ok_or_else(|| ApiError::bad_request("a Content-Type header is required"))?
        .to_str()
        .map_err(|_| ApiError::bad_request("the Content-Type header is not valid text"))?;
    let content_type = events::validate_content_type(content_type).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (id, id_from_publisher) =
        match query.id.as_deref().or_else(|| req.headers().get("idempotency-key").and_then(|v| v.to_str().ok())) {
            Some(raw) => (Uuid::parse_str(raw).map_err(|_| ApiError::bad_request("id must be a UUID"))?, true),
            None => (Uuid::now_v7(), false),
        };
    let tags: Vec<String> = pairs.into_iter().filter(|(k, _)| k == "tag").map(|(_, v)| v).collect();
    events::validate_labels(&tags, query.group_id.as_deref()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let event =
        NewEvent { id, id_from_publisher, topic, content_type, body: body.to_vec(), tags, group_id: query.group_id };
    let appended = append(&state, vec![event], "raw").await?;
    let mut response = if appended[0].replayed { HttpResponse::Ok() } else { HttpResponse::Created() };
    if appended[0].replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(&appended[0]))
}

/// Checks the topic policies, appends (in a group commit with concurrent publishes), and counts what was written.
async fn append(state: &AppState, events: Vec<NewEvent>, source: &str) -> Result<Vec<Appended>, ApiError> {
    if let Some((i, event)) = events.iter().enumerate().find(|(_, e)| e.topic.is_reserved()) {
        let which = if events.len() > 1 { format!("event {i}: ") } else { String::new() };
        return Err(ApiError::Forbidden(format!(
            "{which}topic `{}`: topics starting with `{RESERVED_PREFIX}` are the hub's own and cannot be published to",
            event.topic
        )));
    }
    let timer = state.metrics.publish_seconds.start_timer();
    state.policies.check(&events).await?;
    let appended = state.ingest.append(events).await.map_err(|e| match e {
        AppendError::Conflict(id) => {
            ApiError::Conflict(format!("event {id} was already published with different content"))
        }
        AppendError::Database(e) => e.into(),
    })?;
    timer.observe_duration();
    let written = appended.iter().filter(|a| !a.replayed).count() as u64;
    state.metrics.events_appended.with_label_values(&[source]).inc_by(written);
    Ok(appended)
}
