//! Deliveries: the list by state or subscription, one delivery with every attempt, and redelivery.

use super::*;

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
    let filters = [("state", wanted.as_str()), ("subscription_id", subscription_id.as_str())];
    let next = next_page(&rows, "/console/deliveries", &filters, "before", |d| d.id.to_string());
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
    operations::redeliver(&state.pool, id).await?;
    Ok(see_other(&format!("/console/deliveries/{id}?done=redelivered")))
}
