//! A subscription's settings, set by the operator from its page: the content filter, custom headers, rate limit
//! and secret (through the same operations as the admin API), and a portal link to hand to its subscriber.

use super::subscriptions::{acting_in_session, acting_on};
use super::*;
use crate::subscriptions::{filter::Filter, headers::CustomHeaders, rate::RateLimit, request::HubSecret};

/// Back to the subscription's page, with the notice of what was done.
fn back(id: Uuid, done: &str) -> Page {
    Err(ConsoleError::SeeOther(format!("/console/subscriptions/{id}?done={done}")))
}

#[derive(Debug, Deserialize)]
pub struct FilterForm {
    #[serde(default)]
    csrf: String,
    filter: Option<String>,
}

/// `POST /console/subscriptions/{id}/filter`: sets the filter; an empty one removes it.
pub async fn set_filter(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<FilterForm>,
) -> Page {
    let id = acting_on(&state, &req, &path, &form.csrf).await?;
    let filter = field(&form.filter)
        .map(|raw| Filter::parse(&raw).map_err(|e| ConsoleError::bad_request(format!("The content filter: {e}."))))
        .transpose()?;
    operations::set_filter(&state.pool, id, filter.as_ref()).await?;
    let done = if filter.is_some() { "filter-set" } else { "filter-removed" };
    back(id, done)
}

#[derive(Debug, Deserialize)]
pub struct HeadersForm {
    #[serde(default)]
    csrf: String,
    headers: Option<String>,
}

/// `POST /console/subscriptions/{id}/headers`: replaces every custom header with the lines given (`Name: value`);
/// none removes them all.
pub async fn set_headers(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<HeadersForm>,
) -> Page {
    let id = acting_on(&state, &req, &path, &form.csrf).await?;
    let text = form.headers.clone().unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.trim().is_empty()).collect();
    let headers = if lines.is_empty() {
        CustomHeaders::default()
    } else {
        CustomHeaders::parse_form(lines)
            .map_err(|e| ConsoleError::bad_request(format!("The custom headers: {e}.")))?
            .unwrap_or_default()
    };
    operations::set_headers(&state.pool, id, &headers).await?;
    let done = if headers.is_empty() { "headers-removed" } else { "headers-set" };
    back(id, done)
}

#[derive(Debug, Deserialize)]
pub struct RateForm {
    #[serde(default)]
    csrf: String,
    per_second: Option<String>,
    burst: Option<String>,
}

/// `POST /console/subscriptions/{id}/rate`: sets the rate limit; both fields empty removes it.
pub async fn set_rate(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<RateForm>,
) -> Page {
    let id = acting_on(&state, &req, &path, &form.csrf).await?;
    let rate = RateLimit::parse(field(&form.per_second).as_deref(), field(&form.burst).as_deref())
        .map_err(|e| ConsoleError::bad_request(format!("The rate limit: {e}.")))?;
    operations::set_rate(&state.pool, id, rate).await?;
    let done = if rate.is_some() { "rate-set" } else { "rate-removed" };
    back(id, done)
}

#[derive(Debug, Deserialize)]
pub struct SecretForm {
    #[serde(default)]
    csrf: String,
    secret: Option<String>,
    grace_hours: Option<String>,
}

/// `POST /console/subscriptions/{id}/secret`: rotates to a new secret; the replaced one keeps signing beside it
/// for the grace period (default `TIDINGS_SECRET_GRACE`). Removing a secret is for the admin API, on purpose.
pub async fn set_secret(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<SecretForm>,
) -> Page {
    let id = acting_on(&state, &req, &path, &form.csrf).await?;
    let raw = form.secret.clone().unwrap_or_default();
    let secret = HubSecret::parse(&raw)
        .map_err(|e| ConsoleError::bad_request(format!("The secret: {e}.")))?
        .ok_or_else(|| ConsoleError::bad_request("Type the new secret: an empty one would stop signing."))?;
    let max_hours = crate::config::MAX_SECRET_GRACE.as_secs() / 3600;
    let grace = match field(&form.grace_hours) {
        None => state.config.delivery.secret_grace,
        Some(h) => match h.parse::<u64>() {
            Ok(h) if h <= max_hours => std::time::Duration::from_secs(h * 3600),
            _ => {
                return Err(ConsoleError::bad_request(format!(
                    "The grace period is a whole number of hours from 0 to {max_hours}."
                )))
            }
        },
    };
    operations::set_secret(&state.pool, id, Some(&secret), grace).await?;
    back(id, "secret-set")
}

/// `POST /console/subscriptions/{id}/portal-link`: a page with a link to the subscription's own delivery log,
/// valid for the default 24 hours, for the operator to hand to its subscriber.
pub async fn portal_link(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    form: web::Form<CsrfForm>,
) -> Page {
    let (id, session) = acting_in_session(&state, &req, &path, &form.csrf).await?;
    let link = match crate::portal::issue_link(&state.pool, id, None).await {
        Ok(link) => link,
        Err(crate::portal::PortalError::NoSubscription(id)) => {
            return Err(ConsoleError::not_found(format!("There is no subscription {id}.")))
        }
        Err(e) => return Err(e.into()),
    };
    let url = link.url(&state.config.hub.hub_url).map_err(|e| anyhow::anyhow!("TIDINGS_HUB_URL: {e}"))?;
    render(views::PortalLinkPage {
        chrome: Chrome::new("Portal link", "subscriptions", &session.csrf_token),
        subscription_id: id.to_string(),
        url: url.into(),
        expires: link.expires_at.into(),
    })
}
