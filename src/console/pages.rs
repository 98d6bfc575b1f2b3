//! The console's handlers: one per page or action.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use askama::Template;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    check_csrf, html, queries, require_session, secure, see_other, session, session_cookie_header,
    views::{self, Chrome},
    ConsoleError, PAGE,
};
use crate::{
    api::AppState,
    events, outbox, spreader, stats,
    subscriptions::{state::Transition, store},
};

type Page = Result<HttpResponse, ConsoleError>;

fn render(page: impl Template) -> Page {
    Ok(html(StatusCode::OK, page.render()?))
}

/// A query-string or form field: absent and blank are the same.
fn field(v: &Option<String>) -> Option<String> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A text filter compared with stored text: PostgreSQL text never holds a NUL, so one is refused up front.
fn text(v: &Option<String>) -> Result<Option<String>, ConsoleError> {
    match field(v) {
        Some(t) if t.contains('\0') => Err(ConsoleError::bad_request("A search field cannot contain a NUL character.")),
        other => Ok(other),
    }
}

fn parse_uuid(raw: &str, what: &str) -> Result<Uuid, ConsoleError> {
    Uuid::parse_str(raw.trim()).map_err(|_| ConsoleError::bad_request(format!("The {what} must be a UUID.")))
}

/// A time typed into a form: RFC 3339, or a `datetime-local` value in the viewer's zone (`tz`: minutes east of
/// UTC, filled in by the page's script; UTC without it).
fn parse_time(raw: &str, tz_minutes: i64) -> Result<DateTime<Utc>, ConsoleError> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .map(|t| t.and_utc() - Duration::minutes(tz_minutes))
        .ok_or_else(|| ConsoleError::bad_request(format!("“{raw}” is not a time: use YYYY-MM-DDTHH:MM.")))
}

fn tz(raw: &Option<String>) -> i64 {
    field(raw).and_then(|t| t.parse().ok()).filter(|m: &i64| m.abs() <= 24 * 60).unwrap_or(0)
}

/// A link to `path` with these query parameters (blank ones left out).
fn link(path: &str, params: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    let q = q.finish();
    if q.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{q}")
    }
}

/// The notice shown after an action, from the fixed set the actions redirect with.
fn flash(done: &Option<String>, n: &Option<String>) -> Option<String> {
    let n = field(n).and_then(|n| n.parse::<i64>().ok()).unwrap_or(0);
    Some(match done.as_deref()? {
        "redelivered" => "The delivery is back in the queue; it is attempted again now.".to_owned(),
        "redelivered-dead" => format!("{n} dead deliveries are back in the queue."),
        "replayed" => format!("Replay created {n} new deliveries."),
        "ended" => "The subscription is ended; it receives nothing more.".to_owned(),
        _ => return None,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
    n: Option<String>,
}

// ---------------------------------------------------------------------------------------------- login, logout

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
}

/// `GET /console/login`
pub async fn login_form(q: web::Query<LoginQuery>) -> Page {
    let message = q.expired.as_ref().map(|_| "Your session has ended. Log in again.".to_owned());
    render(views::LoginPage { chrome: Chrome::new("Log in", "", ""), message })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /console/login`: the admin token for a session cookie.
pub async fn login(state: web::Data<AppState>, req: HttpRequest, form: web::Form<LoginForm>) -> Page {
    let Some(expected) = &state.config.http.admin_token else {
        return Err(ConsoleError::Page(
            StatusCode::UNAUTHORIZED,
            "The console is disabled: set TIDINGS_ADMIN_TOKEN to use it.".into(),
        ));
    };
    let given = form.token.trim();
    if given.is_empty() || !session::same(given, expected.expose()) {
        tracing::warn!("console login refused: wrong admin token");
        let page = views::LoginPage {
            chrome: Chrome::new("Log in", "", ""),
            message: Some("That is not the admin token. Check TIDINGS_ADMIN_TOKEN and try again.".into()),
        };
        return Ok(html(StatusCode::UNAUTHORIZED, page.render()?));
    }
    let id = session::create(&state.pool).await?;
    let cookie = session_cookie_header(&id, session::SESSION_HOURS * 3600, secure(&state, &req));
    Ok(HttpResponse::SeeOther().insert_header(("Location", "/console")).insert_header(("Set-Cookie", cookie)).finish())
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`: revokes the session server-side and clears the cookie.
pub async fn logout(state: web::Data<AppState>, req: HttpRequest, form: web::Form<CsrfForm>) -> Page {
    let (id, s) = require_session(&state, &req).await?;
    check_csrf(&s, &form.csrf)?;
    session::revoke(&state.pool, &id).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header(("Location", "/console/login"))
        .insert_header(("Set-Cookie", session_cookie_header("", 0, secure(&state, &req))))
        .finish())
}

// ---------------------------------------------------------------------------------------------- overview

/// `GET /console`
pub async fn overview(state: web::Data<AppState>, req: HttpRequest) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let pool = &state.read_pool;
    let minutes = queries::per_minute(pool, 60).await?;
    let outcomes = queries::outcomes_last_hour(pool).await?;
    let (pending, due_now) = queries::outbox_depth(pool).await?;
    let oldest_due = outbox::next_due(pool).await?;
    let lag = spreader::lag(pool).await?;

    let events_series: Vec<_> = minutes.iter().map(|m| (m.minute, m.events, 0)).collect();
    let delivery_series: Vec<_> = minutes.iter().map(|m| (m.minute, m.delivered, m.failed)).collect();
    let widest = outcomes.iter().map(|(_, n)| *n).max().unwrap_or(1).max(1);
    let spread_percent = if lag.head_position == 0 {
        100.0
    } else {
        (lag.cursor_position as f64 / lag.head_position as f64 * 100.0).clamp(0.0, 100.0)
    };
    render(views::OverviewPage {
        chrome: Chrome::new("Overview", "overview", &s.csrf_token),
        events: views::Chart::new(&events_series, |n, _| format!("{n} events")),
        deliveries: views::Chart::new(&delivery_series, |ok, failed| format!("{ok} delivered, {failed} failed")),
        outcomes: outcomes
            .into_iter()
            .map(|(name, count)| views::Share {
                class: views::outcome_class(&name),
                width: count as f64 / widest as f64 * 100.0,
                name,
                count,
            })
            .collect(),
        pending: views::capped(pending, queries::COUNT_CAP),
        due_now: views::capped(due_now, queries::COUNT_CAP),
        oldest_due_ago: oldest_due.map(views::ago).unwrap_or_default(),
        oldest_due: views::when(oldest_due),
        head: lag.head_position,
        cursor: lag.cursor_position,
        behind: lag.behind_events,
        spread_percent,
        oldest_unspread: views::when(lag.oldest_unspread_at),
    })
}

// ---------------------------------------------------------------------------------------------- topics

#[derive(Debug, Default, Deserialize)]
pub struct TopicsQuery {
    after: Option<String>,
}

/// `GET /console/topics?after=`
pub async fn topics(state: web::Data<AppState>, req: HttpRequest, q: web::Query<TopicsQuery>) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let after = text(&q.after)?.unwrap_or_default();
    let rows = queries::topics(&state.read_pool, &after, PAGE).await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| link("/console/topics", &[("after", &r.topic)])))
        .flatten();
    render(views::TopicsPage {
        chrome: Chrome::new("Topics", "topics", &s.csrf_token),
        rows: rows
            .into_iter()
            .map(|r| views::TopicRow {
                events_link: link("/console/events", &[("topic", &r.topic)]),
                subscriptions_link: link("/console/subscriptions", &[("topic", &r.topic)]),
                subscribers: views::capped(r.subscribers, 1001),
                last_published: r.last_published_at.into(),
                last_position: r.last_position,
                topic: r.topic,
            })
            .collect(),
        next,
    })
}

// ---------------------------------------------------------------------------------------------- subscriptions

const SUBSCRIPTION_STATES: &[&str] = &["active", "pending", "expired", "unsubscribed", "denied"];

#[derive(Debug, Default, Deserialize)]
pub struct SubscriptionsQuery {
    topic: Option<String>,
    state: Option<String>,
    after: Option<String>,
}

fn subscription_row(s: &store::Subscription, h: Option<&queries::Health>) -> views::SubscriptionRow {
    views::SubscriptionRow {
        id: s.id.to_string(),
        topic: s.topic.clone(),
        callback: s.callback.clone(),
        state: s.state.clone(),
        state_class: views::outcome_class(&s.state),
        expires: views::when(s.expires_at),
        success_rate: views::percent(h.and_then(|h| h.success_rate)),
        dead: h.map(|h| h.dead).unwrap_or(0),
        last_attempt: views::when(h.and_then(|h| h.last_attempt_at)),
        last_outcome: h
            .and_then(|h| {
                h.last_outcome.as_ref().map(|o| match h.last_status {
                    Some(status) => format!("{o} ({status})"),
                    None => o.clone(),
                })
            })
            .unwrap_or_default(),
    }
}

/// `GET /console/subscriptions?topic=&state=&after=`
pub async fn subscriptions(state: web::Data<AppState>, req: HttpRequest, q: web::Query<SubscriptionsQuery>) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let topic = text(&q.topic)?;
    let wanted = field(&q.state).filter(|st| SUBSCRIPTION_STATES.contains(&st.as_str()));
    let after = field(&q.after).map(|a| parse_uuid(&a, "cursor")).transpose()?;
    let subs = store::list(&state.read_pool, topic.as_deref(), wanted.as_deref(), after, PAGE).await?;
    let ids: Vec<Uuid> = subs.iter().map(|s| s.id).collect();
    let health = queries::health(&state.read_pool, &ids).await?;
    let topic = topic.unwrap_or_default();
    let wanted = wanted.unwrap_or_default();
    let next = (subs.len() as i64 == PAGE)
        .then(|| {
            subs.last().map(|last| {
                link(
                    "/console/subscriptions",
                    &[("topic", &topic), ("state", &wanted), ("after", &last.id.to_string())],
                )
            })
        })
        .flatten();
    render(views::SubscriptionsPage {
        chrome: Chrome::new("Subscriptions", "subscriptions", &s.csrf_token),
        rows: subs
            .iter()
            .map(|sub| subscription_row(sub, health.iter().find(|h| h.subscription_id == sub.id)))
            .collect(),
        topic,
        state: wanted,
        states: SUBSCRIPTION_STATES,
        next,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct SubscriptionQuery {
    history_after: Option<String>,
    done: Option<String>,
    n: Option<String>,
}

/// `GET /console/subscriptions/{id}?history_after=`
pub async fn subscription(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<SubscriptionQuery>,
) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let id = parse_uuid(&path, "subscription id")?;
    let sub = store::get(&state.read_pool, id)
        .await?
        .ok_or_else(|| ConsoleError::not_found(format!("There is no subscription {id}.")))?;
    let health = queries::health(&state.read_pool, &[id]).await?;
    let history_after = field(&q.history_after).and_then(|a| a.parse::<i64>().ok()).unwrap_or(0);
    let entries = queries::history(&state.read_pool, id, history_after, PAGE).await?;
    let history_next = (entries.len() as i64 == PAGE)
        .then(|| {
            entries
                .last()
                .map(|e| link(&format!("/console/subscriptions/{id}"), &[("history_after", &e.position.to_string())]))
        })
        .flatten();
    let history = entries
        .into_iter()
        .map(|e| {
            let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap_or_default();
            let state = body.get("state").and_then(|v| v.as_str()).unwrap_or("changed").to_owned();
            let detail = match &body {
                serde_json::Value::Object(map) => map
                    .iter()
                    .filter(|(k, v)| k.as_str() != "state" && !v.is_null())
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => format!("{k}: {s}"),
                        other => format!("{k}: {other}"),
                    })
                    .collect::<Vec<_>>()
                    .join(" · "),
                _ => String::new(),
            };
            views::HistoryRow {
                position: e.position,
                at: e.published_at.into(),
                state_class: views::outcome_class(&state),
                state,
                detail,
            }
        })
        .collect();
    let sid = id.to_string();
    render(views::SubscriptionPage {
        chrome: Chrome::new(format!("Subscription {}", sub.topic), "subscriptions", &s.csrf_token)
            .with_flash(flash(&q.done, &q.n)),
        row: subscription_row(&sub, health.first()),
        lease_seconds: sub.lease_seconds.map(|l| format!("{l} s")).unwrap_or_else(|| "—".into()),
        has_secret: sub.has_secret,
        created: sub.created_at.into(),
        updated: sub.updated_at.into(),
        active: sub.state == "active",
        history,
        history_next,
        history_first: history_after > 0,
        deliveries_link: link("/console/deliveries", &[("subscription_id", &sid)]),
        dead_link: link("/console/deliveries", &[("subscription_id", &sid), ("state", "dead")]),
    })
}

async fn active_subscription(state: &AppState, raw: &str) -> Result<Uuid, ConsoleError> {
    let id = parse_uuid(raw, "subscription id")?;
    let sub = store::get(&state.pool, id)
        .await?
        .ok_or_else(|| ConsoleError::not_found(format!("There is no subscription {id}.")))?;
    if sub.state != "active" {
        return Err(ConsoleError::conflict(format!("Subscription {id} is {}, not active.", sub.state)));
    }
    Ok(id)
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    csrf: String,
    from: Option<String>,
    tz: Option<String>,
}

/// `POST /console/subscriptions/{id}/replay`: new deliveries for what it matched since a time.
pub async fn replay(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<ReplayForm>,
) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    check_csrf(&s, &form.csrf)?;
    let from = field(&form.from)
        .map(|f| parse_time(&f, tz(&form.tz)))
        .transpose()?
        .ok_or_else(|| ConsoleError::bad_request("Say from when to replay."))?;
    let id = active_subscription(&state, &path).await?;
    let replayed = stats::replay(&state.pool, id, 0, Some(from), 10_000).await?;
    tracing::info!(subscription_id = %id, created = replayed.created, "replayed a subscription from the console");
    Err(ConsoleError::SeeOther(format!("/console/subscriptions/{id}?done=replayed&n={}", replayed.created)))
}

/// `POST /console/subscriptions/{id}/redeliver-dead`
pub async fn redeliver_dead(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    check_csrf(&s, &form.csrf)?;
    let id = active_subscription(&state, &path).await?;
    let n = stats::redeliver_dead(&state.pool, id, None, None).await?;
    tracing::info!(subscription_id = %id, redelivered = n, "redelivered dead deliveries from the console");
    Err(ConsoleError::SeeOther(format!("/console/subscriptions/{id}?done=redelivered-dead&n={n}")))
}

/// `POST /console/subscriptions/{id}/end`
pub async fn end(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    check_csrf(&s, &form.csrf)?;
    let id = active_subscription(&state, &path).await?;
    let mut tx = state.pool.begin().await?;
    store::transition_in(&mut tx, id, Transition::Unsubscribed, Some("ended by an operator")).await?;
    tx.commit().await?;
    tracing::info!(subscription_id = %id, "ended a subscription from the console");
    Err(ConsoleError::SeeOther(format!("/console/subscriptions/{id}?done=ended")))
}

// ---------------------------------------------------------------------------------------------- events

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

fn event_row(e: &events::StoredEvent) -> views::EventRow {
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
    let search = queries::EventSearch {
        topic: text(&q.topic)?,
        tag: text(&q.tag)?,
        group_id: text(&q.group_id)?,
        since: field(&q.since).map(|t| parse_time(&t, offset)).transpose()?,
        until: field(&q.until).map(|t| parse_time(&t, offset)).transpose()?,
    };
    let before = field(&q.before).and_then(|b| b.parse::<i64>().ok()).unwrap_or(i64::MAX);
    let rows = queries::events(&state.read_pool, &search, before, PAGE).await?;
    let shown = |v: &Option<String>| field(v).unwrap_or_default();
    let (topic, tag, group_id, since, until, tz_raw) =
        (shown(&q.topic), shown(&q.tag), shown(&q.group_id), shown(&q.since), shown(&q.until), shown(&q.tz));
    let next = (rows.len() as i64 == PAGE)
        .then(|| {
            rows.last().map(|e| {
                link(
                    "/console/events",
                    &[
                        ("topic", &topic),
                        ("tag", &tag),
                        ("group_id", &group_id),
                        ("since", &since),
                        ("until", &until),
                        ("tz", &tz_raw),
                        ("before", &e.position.to_string()),
                    ],
                )
            })
        })
        .flatten();
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
    let e = queries::event(&state.read_pool, id)
        .await?
        .ok_or_else(|| ConsoleError::not_found(format!("There is no event {id}.")))?;
    let after = field(&q.after).map(|a| parse_uuid(&a, "cursor")).transpose()?;
    let deliveries = queries::event_deliveries(&state.read_pool, e.position, after, PAGE).await?;
    let next = (deliveries.len() as i64 == PAGE)
        .then(|| {
            deliveries
                .last()
                .map(|d| link(&format!("/console/events/{id}"), &[("after", &d.subscription_id.to_string())]))
        })
        .flatten();
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

// ---------------------------------------------------------------------------------------------- deliveries

const DELIVERY_STATES: &[&str] = &["pending", "delivered", "dead", "cancelled"];

#[derive(Debug, Default, Deserialize)]
pub struct DeliveriesQuery {
    state: Option<String>,
    subscription_id: Option<String>,
    before: Option<String>,
}

/// `GET /console/deliveries?state=&subscription_id=&before=`: newest first.
pub async fn deliveries(state: web::Data<AppState>, req: HttpRequest, q: web::Query<DeliveriesQuery>) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let wanted = field(&q.state).filter(|st| DELIVERY_STATES.contains(&st.as_str()));
    let subscription = field(&q.subscription_id).map(|id| parse_uuid(&id, "subscription id")).transpose()?;
    let before = field(&q.before).and_then(|b| b.parse::<i64>().ok()).unwrap_or(i64::MAX);
    let rows = queries::deliveries(&state.read_pool, wanted.as_deref(), subscription, before, PAGE).await?;
    let wanted = wanted.unwrap_or_default();
    let subscription_id = subscription.map(|s| s.to_string()).unwrap_or_default();
    let next = (rows.len() as i64 == PAGE)
        .then(|| {
            rows.last().map(|d| {
                link(
                    "/console/deliveries",
                    &[("state", &wanted), ("subscription_id", &subscription_id), ("before", &d.id.to_string())],
                )
            })
        })
        .flatten();
    render(views::DeliveriesPage {
        chrome: Chrome::new("Deliveries", "deliveries", &s.csrf_token),
        rows: rows.into_iter().map(views::DeliveryRow::from).collect(),
        state: wanted,
        states: DELIVERY_STATES,
        subscription_id,
        next,
    })
}

fn delivery_id(raw: &str) -> Result<i64, ConsoleError> {
    raw.trim().parse().map_err(|_| ConsoleError::bad_request("The delivery id must be a whole number."))
}

/// `GET /console/deliveries/{id}`: one delivery with every attempt.
pub async fn delivery(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: web::Query<Notice>,
) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    let id = delivery_id(&path)?;
    let d = outbox::get(&state.read_pool, id)
        .await?
        .ok_or_else(|| ConsoleError::not_found(format!("There is no delivery {id}.")))?;
    let attempts = outbox::attempts(&state.read_pool, id).await?;
    let sub = store::get(&state.read_pool, d.subscription_id).await?;
    let can_redeliver = d.kind == "deliver" && d.state != "pending";
    render(views::DeliveryPage {
        chrome: Chrome::new(format!("Delivery {id}"), "deliveries", &s.csrf_token).with_flash(flash(&q.done, &q.n)),
        callback: sub.as_ref().map(|s| s.callback.clone()).unwrap_or_default(),
        topic: sub.map(|s| s.topic).unwrap_or_default(),
        delivery: d.into(),
        can_redeliver,
        attempts: attempts.into_iter().map(views::AttemptRow::from).collect(),
    })
}

/// `POST /console/deliveries/{id}/redeliver`
pub async fn redeliver(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Page {
    let (_, s) = require_session(&state, &req).await?;
    check_csrf(&s, &form.csrf)?;
    let id = delivery_id(&path)?;
    if outbox::get(&state.pool, id).await?.is_none() {
        return Err(ConsoleError::not_found(format!("There is no delivery {id}.")));
    }
    if !outbox::redeliver(&state.pool, id).await? {
        return Err(ConsoleError::conflict(format!(
            "Delivery {id} is still pending, or it is not an event delivery: there is nothing to redeliver."
        )));
    }
    tracing::info!(delivery_id = id, "redelivered from the console");
    Ok(see_other(&format!("/console/deliveries/{id}?done=redelivered")))
}
