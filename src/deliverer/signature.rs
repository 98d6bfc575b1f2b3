//! Signatures as pure functions: WebSub's `X-Hub-Signature` (HMAC-SHA256 of the raw body, hex) and Standard
//! Webhooks' `webhook-signature` (HMAC-SHA256 over `id.timestamp.body`, base64, `v1,` prefix).
//!
//! Keys: `X-Hub-Signature` uses the bytes of `hub.secret` as given (WebSub 7.1). For Standard Webhooks the key is
//! derived the way the official libraries derive it from the same secret string — an optional `whsec_` prefix
//! removed, then base64-decoded — so a subscriber passing its `hub.secret` to those libraries verifies out of the
//! box; a secret that is not base64 is used as raw bytes.

use base64::{
    alphabet,
    engine::{general_purpose::STANDARD, DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    Engine,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `sha256=<hex HMAC-SHA256 of the body>`, the value of `X-Hub-Signature`.
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac(secret.as_bytes(), &[body])))
}

/// The Standard Webhooks key for a secret string, derived as the official libraries do: drop `whsec_`, ignore
/// characters outside the base64 alphabet, decode with lenient padding. A secret that yields no key that way
/// (empty, or an impossible length) is used as raw bytes.
pub fn standard_webhooks_key(secret: &str) -> Vec<u8> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    let alphabet: String = encoded
        .split('=')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '+' || *c == '/')
        .collect();
    let lenient = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    match lenient.decode(alphabet) {
        Ok(key) if !key.is_empty() => key,
        _ => secret.as_bytes().to_vec(),
    }
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the value of `webhook-signature`.
pub fn standard_webhooks_signature(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = standard_webhooks_key(secret);
    let ts = timestamp.to_string();
    format!("v1,{}", STANDARD.encode(hmac(&key, &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hub_signature_is_the_hex_hmac_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            hub_signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_standard_webhooks_signature_matches_the_specification_example() {
        // The example from the Standard Webhooks specification.
        let sig = standard_webhooks_signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_secret_that_yields_no_key_is_used_as_raw_bytes() {
        assert_eq!(standard_webhooks_key("a"), b"a".to_vec());
        assert_eq!(standard_webhooks_key("!!!"), b"!!!".to_vec());
    }

    #[test]
    fn characters_outside_base64_are_ignored_like_the_official_libraries_do() {
        assert_eq!(standard_webhooks_key("plain-secret-123"), standard_webhooks_key("plainsecret123"));
    }
}
