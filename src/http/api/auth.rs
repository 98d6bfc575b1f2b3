//! Who may call what. The admin/query API needs `Authorization: Bearer <TIDINGS_ADMIN_TOKEN>`. Publishing needs,
//! once `TIDINGS_PUBLISH_TOKENS` or `TIDINGS_PUBLISH_HMAC_KEY` is set, one of: a publish token (or the admin
//! token) as a bearer token, or an HMAC-SHA256 of `"{timestamp}.{body}"` under the shared key in
//! `X-Tidings-Signature: sha256=<hex>` with `X-Tidings-Timestamp: <unix seconds>` no more than five minutes off
//! (so a captured request cannot be replayed later). Every comparison is constant-time. WebSub subscription
//! requests stay open, as the specification intends: verification of intent protects them.

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web, HttpRequest, ResponseError,
};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{
    config::HttpConfig,
    http::{ApiError, AppState},
};

/// How far `X-Tidings-Timestamp` may be from the hub's clock.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

/// Compares the SHA-256 digests in constant time, so neither the contents nor the length of the expected value
/// shows in the timing (a plain slice comparison returns at once when the lengths differ).
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    bool::from(a.as_slice().ct_eq(b.as_slice()))
}

pub fn require_admin(config: &HttpConfig, req: &HttpRequest) -> Result<(), ApiError> {
    let Some(expected) = &config.admin_token else {
        return Err(ApiError::Unauthorized("the admin API is disabled: set TIDINGS_ADMIN_TOKEN".into()));
    };
    match bearer(req) {
        Some(given) if same(given, expected.expose()) => Ok(()),
        _ => Err(ApiError::Unauthorized("a valid admin token is required (Authorization: Bearer ...)".into())),
    }
}

/// The admin check as middleware (see `admin` in [`crate::http`]): refuses a request without the admin token
/// before its handler or any extractor runs.
pub async fn admin_only(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let allowed = match req.app_data::<web::Data<AppState>>() {
        Some(state) => require_admin(&state.config.http, req.request()),
        None => Err(ApiError::Unauthorized("the admin API is not configured".into())),
    };
    match allowed {
        Ok(()) => next.call(req).await.map(ServiceResponse::map_into_left_body),
        Err(refused) => Ok(req.into_response(refused.error_response()).map_into_right_body()),
    }
}

/// Whether publishing needs credentials at all.
pub fn publishing_is_restricted(config: &HttpConfig) -> bool {
    config.publish_tokens.is_some() || config.publish_hmac_key.is_some()
}

pub fn require_publisher(config: &HttpConfig, req: &HttpRequest, body: &[u8]) -> Result<(), ApiError> {
    if !publishing_is_restricted(config) {
        return Ok(());
    }
    if let Some(given) = bearer(req) {
        let publish = config.publish_tokens.iter().flat_map(|t| t.expose().split(',')).map(str::trim);
        let admin = config.admin_token.iter().map(|t| t.expose().as_str());
        // Compare against every token (no early exit), so timing does not tell which one nearly matched.
        let matched = publish.chain(admin).filter(|t| !t.is_empty()).fold(false, |found, t| found | same(given, t));
        if matched {
            return Ok(());
        }
        return Err(ApiError::Unauthorized("the publish token is not valid".into()));
    }
    let (Some(key), Some(signature)) = (&config.publish_hmac_key, req.headers().get("x-tidings-signature")) else {
        return Err(ApiError::Unauthorized(
            "publishing needs a token (Authorization: Bearer ...) or a signed body (X-Tidings-Signature)".into(),
        ));
    };
    let timestamp = req
        .headers()
        .get("x-tidings-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::Unauthorized("X-Tidings-Timestamp (unix seconds) is required with a signature".into())
        })?;
    // abs_diff: a timestamp near i64::MIN or i64::MAX must be refused, not overflow.
    if chrono::Utc::now().timestamp().abs_diff(timestamp) > SIGNATURE_TOLERANCE_SECONDS.unsigned_abs() {
        return Err(ApiError::Unauthorized("X-Tidings-Timestamp is more than five minutes off".into()));
    }
    let expected = publish_signature(key.expose(), timestamp, body);
    let given = signature.to_str().unwrap_or("");
    if same(given, &expected) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the body signature is not valid".into()))
    }
}

/// `sha256=<hex HMAC-SHA256 of "{timestamp}.{body}">`: what a publisher puts in `X-Tidings-Signature`.
pub fn publish_signature(key: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;
    use crate::config::{Config, Secret};

    fn restricted() -> HttpConfig {
        let mut config = Config::defaults().http;
        config.publish_hmac_key = Some(Secret("key".into()));
        config
    }

    #[test]
    fn a_signature_with_an_extreme_timestamp_is_refused_without_overflowing() {
        let body = b"{}";
        for timestamp in [i64::MIN, i64::MIN + 1, i64::MAX] {
            let req = TestRequest::default()
                .insert_header(("x-tidings-timestamp", timestamp.to_string()))
                .insert_header(("x-tidings-signature", publish_signature("key", timestamp, body)))
                .to_http_request();
            assert!(matches!(require_publisher(&restricted(), &req, body), Err(ApiError::Unauthorized(_))));
        }
    }

    #[test]
    fn tokens_match_only_when_identical_whatever_their_lengths() {
        assert!(same("token", "token"));
        for other in ["", "t", "toke", "tokens", "Token", "token\0"] {
            assert!(!same("token", other), "{other:?}");
        }
    }

    #[test]
    fn a_fresh_signature_is_accepted() {
        let body = b"{}";
        let timestamp = chrono::Utc::now().timestamp();
        let req = TestRequest::default()
            .insert_header(("x-tidings-timestamp", timestamp.to_string()))
            .insert_header(("x-tidings-signature", publish_signature("key", timestamp, body)))
            .to_http_request();
        assert!(require_publisher(&restricted(), &req, body).is_ok());
    }
}
