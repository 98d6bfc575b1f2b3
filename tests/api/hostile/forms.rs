//! Malformed, truncated, overlong and badly encoded hub requests (`POST /`).

use super::{assert_all_refused, encode, hostile_hub, Case, PUBLIC_CALLBACK, PUBLISH_TOKEN};

const TOPIC: &str = "https://example.com/feed";

fn subscribe_with(name: &str, topic: &str, callback: &str) -> Case {
    Case::form(name, &[("hub.mode", "subscribe"), ("hub.topic", topic), ("hub.callback", callback)])
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // Malformed and truncated forms.
    for (name, body) in [
        ("an empty body", ""),
        ("no hub.mode", "hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        ("an empty hub.mode", "hub.mode=&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        ("an unknown hub.mode", "hub.mode=steal&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        ("hub.mode in capitals", "hub.mode=SUBSCRIBE&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        ("a form cut after the mode", "hub.mode=subscribe"),
        ("a form cut inside the callback", "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F"),
        ("a form cut inside a percent escape", "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2"),
        ("a form cut after a key", "hub.mode=subscribe&hub.topic=a&hub.callback"),
        ("a form of separators", "&&&=&="),
        ("JSON sent as a form", "{\"hub.mode\":\"subscribe\"}"),
        ("a mode given twice, differently", "hub.mode=subscribe&hub.mode=unsubscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        ("a callback given twice, differently", "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fa&hub.callback=http%3A%2F%2F93.184.216.34%2Fb"),
        ("a topic given twice, differently", "hub.mode=subscribe&hub.topic=a&hub.topic=b&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        ("a negative lease", "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb&hub.lease_seconds=-1"),
        ("a fractional lease", "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb&hub.lease_seconds=1.5"),
        ("a lease beyond u64", "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb&hub.lease_seconds=99999999999999999999999"),
        ("a lease in words", "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb&hub.lease_seconds=forever"),
        ("a thin ping without a URL", "hub.mode=publish"),
    ] {
        let mut case = Case::form_raw(name, body);
        if body.contains("publish") {
            case = case.header("authorization", format!("Bearer {PUBLISH_TOKEN}"));
        }
        cases.push(case);
    }
    // Invalid percent-encoding and invalid UTF-8, in every value.
    for (name, body) in [
        ("a bad escape in the mode", "hub.mode=sub%ZZscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        ("a bad escape in the topic", "hub.mode=subscribe&hub.topic=a%G1&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        ("a lone percent in the topic", "hub.mode=subscribe&hub.topic=a%&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb"),
        (
            "a bad escape in the callback",
            "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2F%ZZ",
        ),
        (
            "a double-decoded escape in the callback",
            "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2F%25zz",
        ),
        (
            "a bad escape in the secret",
            "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb&hub.secret=%Q0",
        ),
        (
            "invalid UTF-8 in the topic",
            "hub.mode=subscribe&hub.topic=%FF%FE&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb",
        ),
        (
            "an overlong UTF-8 slash in the topic",
            "hub.mode=subscribe&hub.topic=a%C0%AFb&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb",
        ),
        (
            "a UTF-16 surrogate in the topic",
            "hub.mode=subscribe&hub.topic=a%ED%A0%80&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb",
        ),
        (
            "invalid UTF-8 in the callback",
            "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2F%FF",
        ),
        (
            "invalid UTF-8 in the secret",
            "hub.mode=subscribe&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb&hub.secret=%80%80",
        ),
        (
            "invalid UTF-8 in a key",
            "hub.mode=subscribe&hub.%FFtopic=a&hub.topic=a&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb",
        ),
    ] {
        cases.push(Case::form_raw(name, body));
    }
    cases.push(Case::form_raw(
        "raw invalid UTF-8 bytes in the body",
        b"hub.mode=subscribe&hub.topic=\xff\xfe&hub.callback=http%3A%2F%2F93.184.216.34%2Fcb".to_vec(),
    ));
    // Malformed callbacks.
    for callback in [
        "",
        "not a url",
        "/relative/callback",
        "//93.184.216.34/cb",
        "http://",
        "http:///cb",
        "http://[::1",
        "http://93.184.216.34:99999/cb",
        "http://93.184.216.34:-1/cb",
        "http://a b.example/cb",
        "ftp://93.184.216.34/cb",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "data:text/plain,hello",
        "gopher://93.184.216.34:25/",
        "http://user:pass@93.184.216.34/cb",
        "http://user@93.184.216.34/cb",
        "http://93.184.216.34/cb#fragment",
        "http://93.184.216.34/cb\r\nX-Injected: yes",
        "http://93.184.216.34/cb\nX-Injected: yes",
        "http://93.184.216.34/cb\0",
        "http://93.184.216.34/c b",
        "http://93.184.216.34/cb\t",
        " http://93.184.216.34/cb",
        "http://93.184.216.34/cb?x=\r\n",
    ] {
        cases.push(subscribe_with(&format!("the callback {callback:?}"), TOPIC, callback));
    }
    // Malformed topics.
    for topic in ["", " ", "a b", "a\r\nb", "a\nLink: <x>", "a\0b", "a\tb", "\u{7f}", "a\u{85}b", "a\u{2028}b"] {
        cases.push(subscribe_with(&format!("the topic {topic:?}"), topic, PUBLIC_CALLBACK));
    }
    // Overlong values.
    cases.push(subscribe_with("a topic of 1025 bytes", &"t".repeat(1025), PUBLIC_CALLBACK));
    cases.push(subscribe_with("a topic of 1 MB", &"t".repeat(1_000_000), PUBLIC_CALLBACK));
    cases.push(subscribe_with(
        "a callback of 2049 bytes",
        TOPIC,
        &format!("http://93.184.216.34/{}", "c".repeat(2049)),
    ));
    cases.push(subscribe_with("a callback of 100 kB", TOPIC, &format!("http://93.184.216.34/{}", "c".repeat(100_000))));
    for (name, secret) in [
        ("a secret of 200 bytes", "s".repeat(200)),
        ("a secret of 10 kB", "s".repeat(10_000)),
        ("a secret of 100 two-byte characters", "é".repeat(100)),
        ("a secret with CR LF", "secret\r\nX-Injected: yes".into()),
        ("a secret with NUL", "sec\0ret".into()),
    ] {
        cases.push(Case::form(
            name,
            &[
                ("hub.mode", "subscribe"),
                ("hub.topic", TOPIC),
                ("hub.callback", PUBLIC_CALLBACK),
                ("hub.secret", &secret),
            ],
        ));
    }
    // CR, LF and NUL in the mode and in a thin ping's URL.
    cases.push(Case::form(
        "a mode with CR LF",
        &[("hub.mode", "subscribe\r\n"), ("hub.topic", TOPIC), ("hub.callback", PUBLIC_CALLBACK)],
    ));
    cases.push(Case::form(
        "a mode with NUL",
        &[("hub.mode", "subscribe\0"), ("hub.topic", TOPIC), ("hub.callback", PUBLIC_CALLBACK)],
    ));
    for url in [
        "http://93.184.216.34/feed\r\nX-Injected: yes",
        "http://93.184.216.34/feed\0",
        "not a url",
        "ftp://93.184.216.34/",
    ] {
        cases.push(
            Case::form(format!("a thin ping for {url:?}"), &[("hub.mode", "publish"), ("hub.url", url)])
                .header("authorization", format!("Bearer {PUBLISH_TOKEN}")),
        );
    }
    let many: Vec<String> = (0..101).map(|i| format!("http://93.184.216.34/feed/{i}")).collect();
    let pairs: Vec<(&str, &str)> =
        std::iter::once(("hub.mode", "publish")).chain(many.iter().map(|u| ("hub.url", u.as_str()))).collect();
    cases.push(
        Case::form("a thin ping for 101 URLs", &pairs).header("authorization", format!("Bearer {PUBLISH_TOKEN}")),
    );
    // Wrong content types.
    let good = encode(&[("hub.mode", "subscribe"), ("hub.topic", TOPIC), ("hub.callback", PUBLIC_CALLBACK)]);
    for content_type in [
        None,
        Some("application/json"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        Some("application/x-www-form-urlencodedx"),
        Some("application/x-www-form"),
        Some("form"),
    ] {
        let mut case = Case::new(format!("a subscription sent as {content_type:?}"), reqwest::Method::POST, "/")
            .body(good.clone());
        if let Some(content_type) = content_type {
            case = case.header("content-type", content_type);
        }
        cases.push(case);
    }
    // A body over the limit (1 MiB by default).
    let mut huge = good.clone().into_bytes();
    huge.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    cases.push(Case::form_raw("a form of 2 MiB", huge));
    cases
}

#[tokio::test]
async fn malformed_truncated_overlong_and_badly_encoded_hub_requests_are_refused_and_store_nothing() {
    let app = hostile_hub().await;
    assert_all_refused(&app, cases()).await;
    app.stop().await;
}
