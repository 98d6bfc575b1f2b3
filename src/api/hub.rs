//! The WebSub hub endpoint, `POST /` with a form-encoded body: `hub.mode=subscribe|unsubscribe` (W3C WebSub 5.1)
//! and `hub.mode=publish` (thin ping: the hub fetches each named topic URL). Unknown parameters are ignored;
//! every refusal is a 4xx with a plain-text reason and writes nothing.

use actix_web::{http::header, web, HttpRequest, HttpResponse};

use super::{ApiError, AppState};
use crate::{callback, fetcher};

/// At most this many topic URLs in one thin ping.
pub const MAX_PUBLISH_URLS: usize = 100;

/// The decoded form: every pair, in order (keys may repeat).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn parse(req: &HttpRequest, body: &[u8]) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(ApiError::UnsupportedMediaType(
                "the hub endpoint takes application/x-www-form-urlencoded".into(),
            ));
        }
        Ok(Self(url::form_urlencoded::parse(body).into_owned().collect()))
    }

    /// The single value of a parameter; a parameter given twice with different values is refused.
    pub fn one(&self, key: &str) -> Result<Option<&str>, ApiError> {
        let mut values = self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let first = values.next();
        if values.any(|v| Some(v) != first) {
            return Err(ApiError::bad_request(format!("{key} is given more than once")));
        }
        Ok(first)
    }

    pub fn all<'a>(&'a self, keys: &'a [&str]) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(|(k, _)| keys.contains(&k.as_str())).map(|(_, v)| v.as_str())
    }
}

#[tracing::instrument(skip_all, fields(mode))]
pub async fn hub(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let form = Form::parse(&req, &body)?;
    let mode = form.one("hub.mode")?.ok_or_else(|| ApiError::bad_request("hub.mode is required"))?;
    tracing::Span::current().record("mode", mode);
    match mode {
        "publish" => {
            state.require_publisher(&req, &body)?;
            publish(&state, &form).await
        }
        "subscribe" | "unsubscribe" => crate::subscriptions::api::request(&state, &form, mode).await,

        other => Err(ApiError::bad_request(format!(
            "unsupported hub.mode `{}`: use subscribe, unsubscribe or publish",
            other.chars().take(32).collect::<String>()
        ))),
    }
}

/// Thin ping: queue a fetch of every named topic URL, answer 202 at once.
async fn publish(state: &AppState, form: &Form) -> Result<HttpResponse, ApiError> {
    let mut urls: Vec<callback::CallbackUrl> = Vec::new();
    for raw in form.all(&["hub.url", "hub.url[]", "hub.topic"]) {
        let url =
            callback::CallbackUrl::parse(raw).map_err(|e| ApiError::bad_request(format!("hub.url `{raw}`: {e}")))?;
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    if urls.is_empty() {
        return Err(ApiError::bad_request("hub.mode=publish needs at least one hub.url (or hub.topic)"));
    }
    if urls.len() > MAX_PUBLISH_URLS {
        return Err(ApiError::bad_request(format!("at most {MAX_PUBLISH_URLS} topic URLs per publish")));
    }
    for url in &urls {
        callback::check_destination(url.as_url(), state.config.hub.callback_allow_private)
            .await
            .map_err(|e| ApiError::bad_request(format!("hub.url {url}: {e}")))?;
    }
    let ids = fetcher::enqueue(&state.pool, &urls).await?;
    state.fetch_wakeup.notify_one();
    let listing: String = ids.iter().map(|id| format!("/fetches?id={id}\n")).collect();
    Ok(HttpResponse::Accepted()
        .content_type("text/plain; charset=utf-8")
        .body(format!("accepted: {} topic fetch(es) queued\n{listing}", ids.len())))
}
