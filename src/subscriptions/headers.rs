//! A subscription's custom headers: sent with every delivery of an event to it (a tenant id, a static token the
//! subscriber's gateway checks). Asked for with the optional, repeatable `hub.x-header=Name: value` parameter of a
//! subscribe request (applied when its verification succeeds, like `hub.secret`) or set by the admin API.
//!
//! The hub's own headers are never replaceable: the content type, the `Link` header WebSub requires, every
//! signature and Standard Webhooks header, and anything that frames the HTTP message (hop-by-hop headers, `Host`,
//! `Content-Length`) are refused, so a subscription can neither forge a signature nor break the request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// At most this many custom headers per subscription.
pub const MAX_HEADERS: usize = 10;
/// A header name's length at most, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// A header value's length at most, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// All names and values together at most, in bytes.
pub const MAX_TOTAL_BYTES: usize = 4096;

/// Names (lower case) a subscription may not set: the hub's own headers and those that frame the message.
const REFUSED: [&str; 17] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "link",
    "x-hub-signature",
    "x-hub-signature-256",
];
/// A prefix no custom header may have: Standard Webhooks' `webhook-id`, `-timestamp`, `-signature` and any later.
const REFUSED_PREFIX: &str = "webhook-";

/// Validated custom headers, keyed by name as given (names are unique regardless of case).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>", into = "BTreeMap<String, String>")]
pub struct CustomHeaders(BTreeMap<String, String>);

/// Why headers were refused; the message names the header and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("each header is written `Name: value`, got {0:?}")]
    Form(String),
    #[error("{0:?} is not a valid header name (letters, digits and !#$%&'*+-.^_`|~, at most {MAX_NAME_BYTES} bytes)")]
    Name(String),
    #[error("the value of {0} must be printable ASCII, at most {MAX_VALUE_BYTES} bytes")]
    Value(String),
    #[error("{0} is set by the hub or frames the request, and cannot be a custom header")]
    Refused(String),
    #[error("{0} is given twice")]
    Duplicate(String),
    #[error("at most {MAX_HEADERS} headers of {MAX_TOTAL_BYTES} bytes in all")]
    TooMany,
}

impl TryFrom<BTreeMap<String, String>> for CustomHeaders {
    type Error = HeaderError;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, HeaderError> {
        Self::new(map)
    }
}

impl From<CustomHeaders> for BTreeMap<String, String> {
    fn from(headers: CustomHeaders) -> Self {
        headers.0
    }
}

impl CustomHeaders {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, HeaderError> {
        let mut map = BTreeMap::new();
        let mut lower_names = std::collections::HashSet::new();
        let mut total = 0;
        for (name, value) in pairs {
            let value = value.trim().to_owned();
            check_name(&name)?;
            if value.len() > MAX_VALUE_BYTES || !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
                return Err(HeaderError::Value(name));
            }
            let lower = name.to_ascii_lowercase();
            if REFUSED.contains(&lower.as_str()) || lower.starts_with(REFUSED_PREFIX) {
                return Err(HeaderError::Refused(name));
            }
            if !lower_names.insert(lower) {
                return Err(HeaderError::Duplicate(name));
            }
            total += name.len() + value.len();
            map.insert(name, value);
        }
        if map.len() > MAX_HEADERS || total > MAX_TOTAL_BYTES {
            return Err(HeaderError::TooMany);
        }
        Ok(Self(map))
    }

    /// From a form's `hub.x-header` values: None when none is given (a renewal keeps the current headers), no
    /// headers when the one value is empty (`hub.x-header=` clears them).
    pub fn parse_form<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Option<Self>, HeaderError> {
        let values: Vec<&str> = values.into_iter().collect();
        match values.as_slice() {
            [] => Ok(None),
            [only] if only.trim().is_empty() => Ok(Some(Self::default())),
            _ => {
                let pairs = values.iter().map(|raw| {
                    let (name, value) = raw.split_once(':').ok_or_else(|| HeaderError::Form((*raw).to_owned()))?;
                    Ok((name.trim().to_owned(), value.to_owned()))
                });
                Self::new(pairs.collect::<Result<Vec<_>, HeaderError>>()?).map(Some)
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An RFC 9110 token of at most [`MAX_NAME_BYTES`].
fn check_name(name: &str) -> Result<(), HeaderError> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || name.len() > MAX_NAME_BYTES || !name.bytes().all(token) {
        return Err(HeaderError::Name(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(values: &[&str]) -> Result<Option<CustomHeaders>, HeaderError> {
        CustomHeaders::parse_form(values.iter().copied())
    }

    #[test]
    fn headers_from_a_form_are_trimmed_and_kept() {
        let h = form(&["X-Tenant: acme", "Authorization:Bearer t0ken "]).unwrap().unwrap();
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("Authorization", "Bearer t0ken"), ("X-Tenant", "acme")]);
        assert_eq!(form(&[]).unwrap(), None, "no parameter keeps the current headers");
        assert_eq!(form(&[""]).unwrap(), Some(CustomHeaders::default()), "an empty one clears them");
    }

    #[test]
    fn the_hubs_own_and_framing_headers_are_refused_in_any_case() {
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "LINK",
            "X-Hub-Signature",
            "webhook-signature",
            "Webhook-Id",
            "webhook-anything",
            "Connection",
            "Content-Type",
        ] {
            assert_eq!(form(&[&format!("{name}: x")]), Err(HeaderError::Refused(name.to_owned())), "{name}");
        }
    }

    #[test]
    fn malformed_duplicate_or_oversized_headers_are_refused() {
        assert!(matches!(form(&["no colon"]), Err(HeaderError::Form(_))));
        assert!(matches!(form(&["Bad Name: x"]), Err(HeaderError::Name(_))));
        assert!(matches!(form(&[": x"]), Err(HeaderError::Name(_))));
        assert!(matches!(form(&["X-A: line\r\nX-B: injected"]), Err(HeaderError::Value(_))));
        assert!(matches!(form(&["X-A: é"]), Err(HeaderError::Value(_))));
        assert!(matches!(form(&["X-A: 1", "x-a: 2"]), Err(HeaderError::Duplicate(_))));
        let long = format!("X-A: {}", "v".repeat(MAX_VALUE_BYTES + 1));
        assert!(matches!(form(&[&long]), Err(HeaderError::Value(_))));
        let many: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
        assert_eq!(CustomHeaders::parse_form(many.iter().map(String::as_str)), Err(HeaderError::TooMany));
        let big: Vec<String> = (0..5).map(|i| format!("X-{i}: {}", "v".repeat(1000))).collect();
        assert_eq!(CustomHeaders::parse_form(big.iter().map(String::as_str)), Err(HeaderError::TooMany));
    }

    #[test]
    fn json_headers_are_validated_as_they_are_read() {
        let ok: CustomHeaders = serde_json::from_str(r#"{"X-Tenant": "acme"}"#).unwrap();
        assert_eq!(ok.iter().next(), Some(("X-Tenant", "acme")));
        let err = serde_json::from_str::<CustomHeaders>(r#"{"Host": "evil"}"#).unwrap_err().to_string();
        assert!(err.contains("Host is set by the hub"), "{err}");
    }
}
