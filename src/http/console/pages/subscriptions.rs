//! Subscriptions: the list, one subscription with its lifecycle history, and the actions on it.

use super::*;

const SUBSCRIPTION_STATES: &[&str] = &["active", "pending", "expired", "unsubscribed", "denied", "disabled"];

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
    let filters = [("topic", topic.as_str()), ("state", wanted.as_str())];
    let next = next_page(&subs, "/console/subscriptions", &filters, "after", |s| s.id.to_string());
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
    let entries = store::history_page(&state.read_pool, id, history_after, PAGE).await?;
    let history_next =
        next_page(&entries, &format!("/console/subscriptions/{id}"), &[], "history_after", |e| e.position.to_string());
    let history = entries
        .into_iter()
        .map(|e| {
            let body: serde_json::Value = serde_json::from_slice(&e.body).unwrap_or_default();
            let text = |key: &str| body.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            let state = text("to").or_else(|| text("state")).unwrap_or_else(|| "changed".into());
            // What changed and why; the subscription's own fields are on the page already.
            let mut detail: Vec<String> = Vec::new();
            if let Some(transition) = text("transition") {
                detail.push(match text("from") {
                    Some(from) => format!("{transition} (from {from})"),
                    None => transition,
                });
            }
            if let Some(lease) = body.get("lease_seconds").and_then(|v| v.as_i64()) {
                detail.push(format!("lease {lease} s"));
            }
            if let Some(reason) = text("reason") {
                detail.push(format!("reason: {reason}"));
            }
            let detail = detail.join(" · ");
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
        previous_secret_until: sub.previous_secret_until.map(Into::into),
        rate_limit: match (sub.rate_per_second, sub.rate_burst) {
            (Some(rate), Some(burst)) if burst > 1 => format!("{rate}/s, bursts of {burst}"),
            (Some(rate), _) => format!("{rate}/s"),
            _ => "none".to_owned(),
        },
        custom_headers: if sub.headers.is_empty() {
            "none".to_owned()
        } else {
            sub.headers.keys().map(String::as_str).collect::<Vec<_>>().join(", ")
        },
        filter: sub.filter.as_ref().map(|f| f.0.to_string()),
        created: sub.created_at.into(),
        updated: sub.updated_at.into(),
        active: sub.state == "active",
        disabled: sub.state == "disabled",
        history,
        history_next,
        history_first: history_after > 0,
        deliveries_link: link("/console/deliveries", &[("subscription_id", &sid)]),
        dead_link: link("/console/deliveries", &[("subscription_id", &sid), ("state", "dead")]),
    })
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    csrf: String,
    from: Option<String>,
    tz: Option<String>,
}

/// What every action on one subscription checks first: a session, its CSRF token, then the id in the path.
pub(super) async fn acting_on(
    state: &AppState,
    req: &HttpRequest,
    path: &str,
    csrf: &str,
) -> Result<Uuid, ConsoleError> {
    Ok(acting_in_session(state, req, path, csrf).await?.0)
}

/// [`acting_on`], also handing back the session, for an action that renders a page of its own.
pub(super) async fn acting_in_session(
    state: &AppState,
    req: &HttpRequest,
    path: &str,
    csrf: &str,
) -> Result<(Uuid, session::Session), ConsoleError> {
    let (_, session) = require_session(state, req).await?;
    check_csrf(&session, csrf)?;
    Ok((parse_uuid(path, "subscription id")?, session))
}

/// `POST /console/subscriptions/{id}/replay`: new deliveries for what it matched since a time.
pub async fn replay(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<ReplayForm>,
) -> Page {
    let id = acting_on(&state, &req, &path, &form.csrf).await?;
    let from = field(&form.from)
        .map(|f| parse_time(&f, tz(&form.tz)))
        .transpose()?
        .ok_or_else(|| ConsoleError::bad_request("Say from when to replay."))?;
    let from = ReplayFrom { position: 0, time: Some(from), limit: 10_000 };
    let replayed = operations::replay(&state.pool, id, from).await?;
    Err(ConsoleError::SeeOther(format!("/console/subscriptions/{id}?done=replayed&n={}", replayed.created)))
}

/// `POST /console/subscriptions/{id}/redeliver-dead`
pub async fn redeliver_dead(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Page {
    let id = acting_on(&state, &req, &path, &form.csrf).await?;
    let n = operations::redeliver_dead(&state.pool, id, None, None).await?;
    Err(ConsoleError::SeeOther(format!("/console/subscriptions/{id}?done=redelivered-dead&n={n}")))
}

/// `POST /console/subscriptions/{id}/end`
pub async fn end(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Page {
    let id = acting_on(&state, &req, &path, &form.csrf).await?;
    operations::end_subscription(&state.pool, id).await?;
    Err(ConsoleError::SeeOther(format!("/console/subscriptions/{id}?done=ended")))
}

/// `POST /console/subscriptions/{id}/enable`
pub async fn enable(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Page {
    let id = acting_on(&state, &req, &path, &form.csrf).await?;
    operations::enable_subscription(&state.pool, id).await?;
    Err(ConsoleError::SeeOther(format!("/console/subscriptions/{id}?done=enabled")))
}
