//! A subscribe or unsubscribe request, parsed from the hub form (W3C WebSub 5.1) into validated parts.

use std::fmt;

use super::{
    filter::{Filter, FilterError},
    headers::{CustomHeaders, HeaderError},
    rate::{RateError, RateLimit},
};
use crate::{callback::CallbackUrl, config::HubConfig, topic::Topic};

/// `hub.secret` must be shorter than this many bytes (WebSub 5.1).
pub const MAX_SECRET_BYTES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Subscribe,
    Unsubscribe,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Subscribe => "subscribe",
            Mode::Unsubscribe => "unsubscribe",
        }
    }
}

/// The mode of a stored request (`subscription_requests.mode`): what the subscriber asked, or `Denied` when the
/// hub refused it and the job sends the denial notice instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum RequestMode {
    Subscribe,
    Unsubscribe,
    Denied,
}

impl RequestMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestMode::Subscribe => "subscribe",
            RequestMode::Unsubscribe => "unsubscribe",
            RequestMode::Denied => "denied",
        }
    }
}

impl From<Mode> for RequestMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Subscribe => RequestMode::Subscribe,
            Mode::Unsubscribe => RequestMode::Unsubscribe,
        }
    }
}

/// Where a stored request stands (`subscription_requests.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for its verification (or denial notice).
    Pending,
    Verified,
    Failed,
    /// The denial notice was sent.
    Notified,
    /// A newer request for the same subscription was verified first.
    Superseded,
}

/// Why a subscribe or unsubscribe request was refused; the message names the parameter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("hub.callback: {0}")]
    Callback(String),
    #[error("hub.topic: {0}")]
    Topic(String),
    #[error("hub.lease_seconds must be a whole number of seconds")]
    Lease,
    #[error("hub.secret {0}")]
    Secret(#[from] SecretError),
    #[error("hub.x-rate: {0}")]
    Rate(#[from] RateError),
    #[error("hub.x-header: {0}")]
    Header(#[from] HeaderError),
    #[error("hub.x-filter: {0}")]
    Filter(#[from] FilterError),
}

/// Why a `hub.secret` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("must be shorter than {MAX_SECRET_BYTES} bytes")]
    TooLong,
    #[error("must not contain control characters")]
    Control,
}

/// A subscriber's HMAC secret; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSecret(String);

impl HubSecret {
    pub fn parse(raw: &str) -> Result<Option<Self>, SecretError> {
        if raw.len() >= MAX_SECRET_BYTES {
            return Err(SecretError::TooLong);
        }
        // A NUL cannot be stored (PostgreSQL text) and no control character belongs in a shared secret.
        if raw.chars().any(char::is_control) {
            return Err(SecretError::Control);
        }
        Ok((!raw.is_empty()).then(|| Self(raw.to_owned())))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HubSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HubSecret([redacted])")
    }
}

/// The lease policy: default, minimum and maximum from configuration.
#[derive(Debug, Clone, Copy)]
pub struct LeasePolicy {
    pub default: u32,
    pub min: u32,
    pub max: u32,
}

impl LeasePolicy {
    pub fn from_config(hub: &HubConfig) -> Self {
        Self { default: hub.lease_default_seconds, min: hub.lease_min_seconds, max: hub.lease_max_seconds }
    }

    /// The lease granted for a requested one: the default when none was asked, else clamped to [min, max].
    pub fn grant(&self, requested: Option<u64>) -> u32 {
        match requested {
            None => self.default,
            Some(r) => r.clamp(self.min as u64, self.max as u64) as u32,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SubscriptionRequest {
    pub mode: Mode,
    pub topic: Topic,
    pub callback: CallbackUrl,
    pub lease_seconds: u32,
    pub secret: Option<HubSecret>,
    /// The optional rate limit (`hub.x-rate`, `hub.x-rate-burst`) a subscribe asks for; none means unlimited.
    pub rate: Option<RateLimit>,
    /// The custom headers (`hub.x-header`) a subscribe asks for; none keeps the current ones.
    pub headers: Option<CustomHeaders>,
    /// The content filter (`hub.x-filter`) a subscribe asks for: none keeps the current one, `Some(None)` (an
    /// empty value) removes it.
    pub filter: Option<Option<Filter>>,
}

impl SubscriptionRequest {
    /// Builds a request from the form's values; `get` returns a parameter's single value, `headers` the values of
    /// every `hub.x-header`.
    pub fn parse<'a>(
        mode: Mode,
        get: impl Fn(&str) -> Option<String>,
        headers: impl IntoIterator<Item = &'a str>,
        leases: &LeasePolicy,
    ) -> Result<Self, RequestError> {
        let callback = get("hub.callback").ok_or(RequestError::Missing("hub.callback"))?;
        let callback = CallbackUrl::parse(&callback).map_err(|e| RequestError::Callback(e.to_string()))?;
        let topic = get("hub.topic").ok_or(RequestError::Missing("hub.topic"))?;
        let topic = Topic::parse(&topic).map_err(|e| RequestError::Topic(e.to_string()))?;
        let requested = match get("hub.lease_seconds").filter(|l| !l.is_empty()) {
            None => None,
            Some(raw) => Some(raw.parse::<u64>().map_err(|_| RequestError::Lease)?),
        };
        let secret = match (mode, get("hub.secret")) {
            (Mode::Subscribe, Some(raw)) => HubSecret::parse(&raw)?,
            _ => None,
        };
        let rate = match mode {
            Mode::Subscribe => RateLimit::parse(get("hub.x-rate").as_deref(), get("hub.x-rate-burst").as_deref())?,
            Mode::Unsubscribe => None,
        };
        let headers = match mode {
            Mode::Subscribe => CustomHeaders::parse_form(headers)?,
            Mode::Unsubscribe => None,
        };
        let filter = match (mode, get("hub.x-filter")) {
            (Mode::Subscribe, Some(raw)) if raw.trim().is_empty() => Some(None),
            (Mode::Subscribe, Some(raw)) => Some(Some(Filter::parse(&raw)?)),
            _ => None,
        };
        Ok(Self { mode, topic, callback, lease_seconds: leases.grant(requested), secret, rate, headers, filter })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASES: LeasePolicy = LeasePolicy { default: 864_000, min: 3_600, max: 2_592_000 };

    fn form<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn leases_are_clamped_and_defaulted() {
        assert_eq!(LEASES.grant(None), 864_000);
        assert_eq!(LEASES.grant(Some(1)), 3_600);
        assert_eq!(LEASES.grant(Some(u64::MAX)), 2_592_000);
        assert_eq!(LEASES.grant(Some(7_200)), 7_200);
    }

    #[test]
    fn a_secret_of_200_bytes_is_refused_and_199_accepted() {
        assert!(HubSecret::parse(&"s".repeat(200)).is_err());
        assert!(HubSecret::parse(&"s".repeat(199)).unwrap().is_some());
        assert!(HubSecret::parse("").unwrap().is_none());
    }

    #[test]
    fn a_secret_with_a_nul_or_line_break_is_refused() {
        for raw in ["sec\0ret", "secret\r\nX: y", "\u{7f}"] {
            assert_eq!(HubSecret::parse(raw).unwrap_err(), SecretError::Control, "{raw:?}");
        }
        assert!(HubSecret::parse("a perfectly fine secret, with spaces: é").unwrap().is_some());
    }

    #[test]
    fn secrets_do_not_print() {
        let s = HubSecret::parse("hunter2").unwrap().unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn a_valid_subscribe_request_parses() {
        let pairs = [("hub.callback", "http://example.com/cb?x=1"), ("hub.topic", "a.b"), ("hub.lease_seconds", "60")];
        let r = SubscriptionRequest::parse(Mode::Subscribe, form(&pairs), [], &LEASES).unwrap();
        assert_eq!(r.lease_seconds, 3_600);
        assert_eq!(r.callback.as_str(), "http://example.com/cb?x=1");
    }

    #[test]
    fn missing_or_bad_parameters_name_the_parameter() {
        let no_callback = [("hub.topic", "a")];
        assert!(SubscriptionRequest::parse(Mode::Subscribe, form(&no_callback), [], &LEASES)
            .unwrap_err()
            .to_string()
            .contains("hub.callback"));
        let bad_lease = [("hub.callback", "http://e.com/"), ("hub.topic", "a"), ("hub.lease_seconds", "-5")];
        assert!(SubscriptionRequest::parse(Mode::Subscribe, form(&bad_lease), [], &LEASES)
            .unwrap_err()
            .to_string()
            .contains("lease"));
        let bad_rate = [("hub.callback", "http://e.com/"), ("hub.topic", "a"), ("hub.x-rate", "0")];
        assert!(SubscriptionRequest::parse(Mode::Subscribe, form(&bad_rate), [], &LEASES)
            .unwrap_err()
            .to_string()
            .starts_with("hub.x-rate: "));
        let no_topic = [("hub.callback", "http://e.com/")];
        assert!(SubscriptionRequest::parse(Mode::Unsubscribe, form(&no_topic), [], &LEASES)
            .unwrap_err()
            .to_string()
            .contains("hub.topic"));
    }
}
