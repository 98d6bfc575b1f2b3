//! Property tests for the parsers at the edge and for topic matching: the parsers never panic, what they accept
//! is well-formed, and matching agrees with a simple model of the rules in the README.

use std::net::IpAddr;

use proptest::prelude::*;
use tidings::{callback::CallbackUrl, http::api::hub::decode_form, topic::Topic};
use url::Host;

/// The model: a pattern `p1.p2.*` matches a topic whose dot-separated elements start with p1, p2 (ignoring case)
/// and go on with something more; `*` matches everything; any other topic matches itself, byte for byte.
fn model_matches(subscription: &str, topic: &str) -> bool {
    if subscription == "*" {
        return true;
    }
    match subscription.strip_suffix(".*") {
        None => subscription == topic,
        Some(prefix) => {
            let wanted: Vec<String> = prefix.split('.').map(str::to_lowercase).collect();
            let elements: Vec<String> = topic.split('.').map(str::to_lowercase).collect();
            let rest = elements.get(wanted.len()..).map(|r| r.join(".")).unwrap_or_default();
            elements.len() > wanted.len() && elements[..wanted.len()] == wanted[..] && !rest.is_empty()
        }
    }
}

/// Topics built from a small alphabet, so that prefixes, dots and case differences collide often.
fn topic_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[aAbB.xé]{1,12}").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn topic_parsing_never_panics_and_accepts_only_clean_bounded_topics(raw in any::<String>()) {
        if let Ok(topic) = Topic::parse(&raw) {
            prop_assert!(!raw.is_empty() && raw.len() <= tidings::topic::MAX_TOPIC_BYTES);
            prop_assert!(!raw.chars().any(|c| c.is_whitespace() || c.is_control()));
            prop_assert_eq!(topic.as_str(), raw.as_str());
        }
    }

    #[test]
    fn pattern_matching_agrees_with_the_model(pattern in topic_text(), star in any::<bool>(), topic in topic_text()) {
        let subscription = if star { format!("{pattern}.*") } else { pattern };
        let parsed = Topic::parse(&subscription).unwrap();
        prop_assert_eq!(parsed.matches(&topic), model_matches(&subscription, &topic), "{} vs {}", subscription, topic);
    }

    #[test]
    fn the_match_all_pattern_matches_every_topic(topic in topic_text()) {
        prop_assert!(Topic::parse("*").unwrap().matches(&topic));
    }

    #[test]
    fn callback_parsing_never_panics_and_accepts_only_clean_http_urls(raw in any::<String>()) {
        if let Ok(url) = CallbackUrl::parse(&raw) {
            let url = url.as_url();
            prop_assert!(matches!(url.scheme(), "http" | "https"));
            prop_assert!(url.host().is_some() && url.username().is_empty() && url.password().is_none());
            prop_assert!(url.fragment().is_none());
            prop_assert!(!raw.chars().any(|c| c.is_whitespace() || c.is_control()));
        }
    }

    #[test]
    fn callback_parsing_never_panics_on_url_shaped_input(
        host in "[0-9a-fx.:\\[\\]]{0,40}",
        path in "[a-z/%0-9?=&#@ ]{0,20}",
        scheme in prop::sample::select(vec!["http", "https", "HTTP", "ftp", ""]),
    ) {
        let _ = CallbackUrl::parse(&format!("{scheme}://{host}/{path}"));
    }

    /// Any IPv4 address, in every spelling the URL parser normalises (dotted, decimal, hex, octal) and embedded
    /// in IPv6, is classified the same way, and the classifier refuses every private or special address.
    #[test]
    fn an_accepted_callback_address_is_never_private(bits in any::<u32>(), v6 in any::<u128>()) {
        let v4 = std::net::Ipv4Addr::from(bits);
        let spellings = [
            format!("http://{v4}/cb"),
            format!("http://{bits}/cb"),
            format!("http://{bits:#x}/cb"),
            format!("http://0{bits:o}/cb"),
            format!("http://[::ffff:{v4}]/cb"),
        ];
        let public = tidings::callback::is_public(IpAddr::V4(v4));
        for raw in &spellings {
            let url = CallbackUrl::parse(raw).unwrap();
            let ip = match url.as_url().host().unwrap() {
                Host::Ipv4(ip) => IpAddr::V4(ip),
                Host::Ipv6(ip) => IpAddr::V6(ip),
                Host::Domain(d) => panic!("{raw} parsed as the name {d}"),
            };
            prop_assert_eq!(tidings::callback::is_public(ip), public, "{}", raw);
        }
        if public {
            prop_assert!(!(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
                || v4.is_broadcast() || v4.is_multicast() || v4.octets()[0] == 0
                || (v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]))));
        }
        let v6 = std::net::Ipv6Addr::from(v6);
        if tidings::callback::is_public(IpAddr::V6(v6)) {
            prop_assert!(!(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast()));
            prop_assert!((v6.segments()[0] & 0xfe00) != 0xfc00 && (v6.segments()[0] & 0xffc0) != 0xfe80);
            if let Some(v4) = v6.to_ipv4_mapped() {
                prop_assert!(tidings::callback::is_public(IpAddr::V4(v4)));
            }
        }
    }

    #[test]
    fn form_decoding_never_panics_and_round_trips_what_was_encoded(
        pairs in proptest::collection::vec((any::<String>(), any::<String>()), 0..6),
        garbage in any::<Vec<u8>>(),
    ) {
        let _ = decode_form(&garbage);
        let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let decoded = decode_form(encoded.as_bytes()).unwrap();
        prop_assert_eq!(decoded, pairs);
    }

    #[test]
    fn form_decoding_refuses_every_broken_escape(prefix in "[a-z=]{0,5}", bad in "%([^0-9a-fA-F].?|[0-9a-fA-F][^0-9a-fA-F]|)") {
        let body = format!("{prefix}{bad}");
        prop_assert!(decode_form(body.as_bytes()).is_err(), "{}", body);
    }
}
