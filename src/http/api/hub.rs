//! The WebSub hub endpoint, `POST /` with a form-encoded body: `hub.mode=subscribe|unsubscribe` (W3C WebSub 5.1)
//! and `hub.mode=publish` (thin ping: the hub fetches each named topic URL). Unknown parameters are ignored;
//! every refusal is a 4xx with a plain-text reason and writes nothing.

use actix_web::{http::header, web, HttpRequest, HttpResponse};

use crate::http::{ApiError, AppState};
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
        decode_form(body).map(Self).map_err(ApiError::BadRequest)
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

/// Decodes `application/x-www-form-urlencoded` strictly: every `%` must start a `%HH` escape and every name and
/// value must decode to UTF-8. (A lenient decoder keeps `%ZZ` as it is and turns invalid UTF-8 into U+FFFD, so
/// what would be stored is not what was sent.)
pub fn decode_form(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let at = pair.iter().position(|b| *b == b'=').unwrap_or(pair.len());
            let (name, value) = (&pair[..at], pair.get(at + 1..).unwrap_or_default());
            let name = decode_component(name).map_err(|e| format!("the form is not valid: {e}"))?;
            let value = decode_component(value)
                .map_err(|e| format!("the form is not valid: {e} (in `{}`)", truncate(&name)))?;
            Ok((name, value))
        })
        .collect()
}

fn decode_component(raw: &[u8]) -> Result<String, &'static str> {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = raw.get(i + 1..i + 3).ok_or("a `%` does not start a percent-encoded byte")?;
                let hex = std::str::from_utf8(hex).map_err(|_| "a `%` does not start a percent-encoded byte")?;
                let byte = u8::from_str_radix(hex, 16).map_err(|_| "a `%` does not start a percent-encoded byte")?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("a `%` does not start a percent-encoded byte");
                }
                bytes.push(byte);
                i += 2;
            }
            other => bytes.push(other),
        }
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| "a name or value is not UTF-8")
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

#[tracing::instrument(skip_all, fields(mode))]
pub async fn hub(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> Result<HttpResponse, ApiError> {
    let form = Form::parse(&req, &body)?;
    let mode = form.one("hub.mode")?.ok_or_else(|| ApiError::bad_request("hub.mode is required"))?;
    tracing::Span::current().record("mode", mode);
    match mode {
        "publish" => {
            super::auth::require_publisher(&state.config.http, &req, &body)?;
            publish(&state, &form).await
        }
        "subscribe" | "unsubscribe" => super::subscriptions::request(&state, &req, &form, mode).await,

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

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(raw: &str) -> Vec<(String, String)> {
        decode_form(raw.as_bytes()).unwrap()
    }

    #[test]
    fn a_form_decodes_escapes_pluses_and_repeated_keys_in_order() {
        assert_eq!(
            pairs("hub.mode=subscribe&hub.topic=a%2Fb+c&&x&hub.topic=%C3%A9"),
            [("hub.mode", "subscribe"), ("hub.topic", "a/b c"), ("x", ""), ("hub.topic", "é")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn broken_escapes_and_invalid_utf8_are_refused_not_replaced() {
        for raw in [&b"a=%ZZ"[..], b"a=%", b"a=%4", b"a=%+1", b"%FF=1", b"a=%C0%AF", b"a=%ED%A0%80", b"a=\xff"] {
            assert!(decode_form(raw).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }
}
