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
        decode_strictly(body).map(Self).map_err(ApiError::BadRequest)
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

/// Decodes `application/x-www-form-urlencoded` as the URL Standard does (`+` is a space, `%XX` a byte), except that
/// a `%` not followed by two hex digits, or a value that is not UTF-8 once decoded, is refused rather than passed on
/// literally or with replacement characters: the hub must act on exactly what the subscriber meant, or on nothing.
fn decode_strictly(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    fn decode(raw: &[u8]) -> Result<String, String> {
        let mut bytes = Vec::with_capacity(raw.len());
        let mut i = 0;
        while i < raw.len() {
            match raw[i] {
                b'+' => bytes.push(b' '),
                b'%' => {
                    let hex = raw.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                    let byte = hex
                        .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or("the form has a `%` that is not followed by two hex digits")?;
                    bytes.push(byte);
                    i += 2;
                }
                b => bytes.push(b),
            }
            i += 1;
        }
        String::from_utf8(bytes).map_err(|_| "the form is not UTF-8 once decoded".to_owned())
    }
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
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

#[cfg(test)]
mod form_tests {
    use super::decode_strictly;

    fn pairs(raw: &str) -> Result<Vec<(String, String)>, String> {
        decode_strictly(raw.as_bytes())
    }

    #[test]
    fn forms_decode_as_the_url_standard_says() {
        let decoded = pairs("hub.mode=subscribe&hub.topic=a%20b+c&empty=&flag&&x=%E2%9C%93").unwrap();
        let expected = [("hub.mode", "subscribe"), ("hub.topic", "a b c"), ("empty", ""), ("flag", ""), ("x", "✓")];
        assert_eq!(decoded, expected.map(|(k, v)| (k.to_owned(), v.to_owned())));
    }

    #[test]
    fn broken_escapes_and_invalid_utf8_are_refused() {
        for raw in ["a=%", "a=%4", "a=%ZZ", "a=%C3%28", "a=%E2%82", "%zz=1"] {
            assert!(pairs(raw).is_err(), "{raw}");
        }
        assert!(decode_strictly(b"a=\xff").is_err());
    }
}
