//! Events: search the log, and one event with its deliveries.

use super::*;
use crate::events::Cursor;

#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    topic: Option<String>,
    tag: Option<String>,
    group_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    tz: Option<String>,
    before: Option<String>,
}

fn event_row(e: &crate::events::StoredEvent) -> views::EventRow {
    views::EventRow {
        position: e.position,
        id: e.id.to_string(),
        topic: e.topic.clone(),
        tags: e.tags.join(", "),
        group_id: e.group_id.clone().unwrap_or_default(),
        published: e.published_at.into(),
        size: format!("{} B", e.body.len()),
    }
}

/// `GET /console/events?topic=&tag=&group_id=&since=&until=&before=`: newest first.
pub async fn events(state: web::Data<AppState>, req: HttpRequest, q: web::Query<EventsQuery>) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let offset = tz(&q.tz);
    let search = crate::events::EventFilter {
        topic: text(&q.topic)?,
        tag: text(&q.tag)?,
        group_id: text(&q.group_id)?,
        since: field(&q.since).map(|t| parse_time(&t, offset)).transpose()?,
        until: field(&q.until).map(|t| parse_time(&t, offset)).transpose()?,
        ..Default::default()
    };
    let before = field(&q.before).and_then(|b| b.parse::<i64>().ok()).unwrap_or(i64::MAX);
    let rows = crate::events::search_page(&state.read_pool, &search, Cursor::Before(before), PAGE).await?;
    let shown = |v: &Option<String>| field(v).unwrap_or_default();
    let (topic, tag, group_id, since, until, tz_raw) =
        (shown(&q.topic), shown(&q.tag), shown(&q.group_id), shown(&q.since), shown(&q.until), shown(&q.tz));
    let filters = [
        ("topic", topic.as_str()),
        ("tag", tag.as_str()),
        ("group_id", group_id.as_str()),
        ("since", since.as_str()),
        ("until", until.as_str()),
        ("tz", tz_raw.as_str()),
    ];
    let next = next_page(&rows, "/console/events", &filters, "before", |e| e.position.to_string());
    render(views::EventsPage {
        chrome: Chrome::new("Events", "events", &s.csrf_token),
        rows: rows.iter().map(event_row).collect(),
        filtered: !(topic.is_empty() && tag.is_empty() && group_id.is_empty() && since.is_empty() && until.is_empty()),
        topic,
        tag,
        group_id,
        since,
        until,
        next,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct EventQuery {
    after: Option<String>,
}

/// The most of an event's body the page shows.
const BODY_SHOWN: usize = 64 * 1024;

/// `GET /console/events/{id}?after=`: one event and its deliveries.
pub async fn event(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<EventQuery>,
) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let id = parse_uuid(&path, "event id")?;
    let e = crate::events::get(&state.read_pool, id)
        .await?
        .ok_or_else(|| ConsoleError::not_found(format!("There is no event {id}.")))?;
    let after = field(&q.after).map(|a| parse_uuid(&a, "cursor")).transpose()?;
    let deliveries = queries::event_deliveries(&state.read_pool, e.position, after, PAGE).await?;
    let next =
        next_page(&deliveries, &format!("/console/events/{id}"), &[], "after", |d| d.subscription_id.to_string());
    let shown = &e.body[..e.body.len().min(BODY_SHOWN)];
    let body = match std::str::from_utf8(shown) {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(json) if e.content_type.contains("json") => serde_json::to_string_pretty(&json).unwrap_or_default(),
            _ => text.to_owned(),
        },
        Err(_) => String::from_utf8_lossy(shown).into_owned(),
    };
    render(views::EventPage {
        chrome: Chrome::new(format!("Event {}", e.position), "events", &s.csrf_token),
        event: event_row(&e),
        content_type: e.content_type.clone(),
        body,
        body_truncated: e.body.len() > BODY_SHOWN,
        deliveries: deliveries.into_iter().map(views::DeliveryRow::from).collect(),
        next,
    })
}
