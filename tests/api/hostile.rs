//! The hostile-input corpus: requests an attacker or a broken client sends. Every case must be answered with a
//! 4xx that carries a message, and must store nothing: the row counts of every table stay as they were.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tidings::{app::Roles, config::Secret};

use crate::{
    helpers::{spawn_app_with, test_config, TestApp, ADMIN_TOKEN},
    receiver::{Receiver, VerifyReply},
};

const PUBLISH_TOKEN: &str = "corpus-publish-token";
const HMAC_KEY: &str = "corpus-hmac-key";
const FORM: &str = "application/x-www-form-urlencoded";
const PUBLIC_CALLBACK: &str = "https://93.184.215.14/hook";

struct Case {
    name: String,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn case(name: impl Into<String>, method: &'static str, path: impl Into<String>) -> Case {
    Case { name: name.into(), method, path: path.into(), headers: Vec::new(), body: Vec::new() }
}

impl Case {
    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    fn form(self, body: impl Into<Vec<u8>>) -> Self {
        self.header("content-type", FORM).body(body)
    }
    fn json(self, body: impl Into<Vec<u8>>) -> Self {
        self.header("content-type", "application/json").body(body)
    }
}

fn enc(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn subscribe(topic: &str, callback: &str) -> String {
    format!("hub.mode=subscribe&hub.topic={}&hub.callback={}", enc(topic), enc(callback))
}

/// Callbacks that point inside the hub's network, in every spelling.
fn private_callbacks() -> Vec<&'static str> {
    vec![
        "http://127.0.0.1/cb",
        "http://127.0.0.1:8080/cb",
        "https://127.0.0.1/cb",
        "http://127.1/cb",
        "http://127.0.1/cb",
        "http://127.255.255.254/cb",
        "http://2130706433/cb",
        "http://0x7f000001/cb",
        "http://0x7f.1/cb",
        "http://0177.0.0.1/cb",
        "http://0177.1/cb",
        "http://017700000001/cb",
        "http://0x7F.0x00.0x00.0x01/cb",
        "http://10.0.0.1/cb",
        "http://10.255.255.255/cb",
        "http://012.0.0.1/cb",
        "http://167772161/cb",
        "http://172.16.0.1/cb",
        "http://172.31.255.254/cb",
        "http://192.168.0.1/cb",
        "http://192.168.255.254/cb",
        "http://169.254.169.254/latest/meta-data/",
        "http://169.254.0.1/cb",
        "http://2852039166/latest/meta-data/",
        "http://100.64.0.1/cb",
        "http://100.127.255.254/cb",
        "http://0.0.0.0/cb",
        "http://0/cb",
        "http://[::1]/cb",
        "http://[0:0:0:0:0:0:0:1]/cb",
        "http://[::]/cb",
        "http://[::ffff:127.0.0.1]/cb",
        "http://[::ffff:7f00:1]/cb",
        "http://[::ffff:10.0.0.1]/cb",
        "http://[::ffff:192.168.1.1]/cb",
        "http://[::ffff:169.254.169.254]/cb",
        "http://[::127.0.0.1]/cb",
        "http://[fe80::1]/cb",
        "http://[fc00::1]/cb",
        "http://[fd12:3456::1]/cb",
        "http://localhost/cb",
        "http://LOCALHOST/cb",
        "http://localhost:8080/cb",
        "http://localhost./cb",
        "http://api.localhost/cb",
        "http://user:password@127.0.0.1/cb",
        "http://example.com@127.0.0.1/cb",
        "http://224.0.0.1/cb",
        "http://255.255.255.255/cb",
        "http://240.0.0.1/cb",
    ]
}

/// Callbacks that are not usable URLs at all.
fn bad_callbacks() -> Vec<String> {
    vec![
        String::new(),
        "/relative/callback".into(),
        "callback".into(),
        "http://".into(),
        "http:///path".into(),
        "ftp://93.184.215.14/cb".into(),
        "file:///etc/passwd".into(),
        "gopher://93.184.215.14/".into(),
        "javascript:alert(1)".into(),
        "data:text/plain,hello".into(),
        "mailto:someone@example.com".into(),
        "http://93.184.215.14 /cb".into(),
        "http://93.184.215.14/a\r\nX-Injected:1".into(),
        "http://93.184.215.14/a\nX-Injected:1".into(),
        "http://93.184.215.14/\0".into(),
        "http://93.184.215.14:99999/cb".into(),
        format!("http://93.184.215.14/{}", "a".repeat(2100)),
    ]
}

/// Topics the hub must refuse.
fn bad_topics() -> Vec<String> {
    vec![
        String::new(),
        " ".into(),
        "has space".into(),
        "line\nbreak".into(),
        "carriage\rreturn".into(),
        "header\r\nX-Injected: 1".into(),
        "nul\0byte".into(),
        "tab\there".into(),
        "\u{7f}delete".into(),
        "a".repeat(1025),
        format!("https://example.com/{}", "x".repeat(1100)),
    ]
}

fn forms() -> Vec<(String, Vec<u8>)> {
    let ok_topic = "https://shop.example/orders";
    // A public address literal: valid without DNS, so each case is refused for its own fault and nothing else.
    let ok_callback = PUBLIC_CALLBACK;
    let mut forms: Vec<(String, Vec<u8>)> = vec![
        ("an empty form".into(), b"".to_vec()),
        ("no hub.mode".into(), format!("hub.topic={}&hub.callback={}", enc(ok_topic), enc(ok_callback)).into()),
        ("an unknown hub.mode".into(), subscribe(ok_topic, ok_callback).replace("subscribe", "subscrib").into()),
        ("hub.mode in capitals".into(), subscribe(ok_topic, ok_callback).replace("subscribe", "SUBSCRIBE").into()),
        ("no hub.topic".into(), format!("hub.mode=subscribe&hub.callback={}", enc(ok_callback)).into()),
        ("no hub.callback".into(), format!("hub.mode=subscribe&hub.topic={}", enc(ok_topic)).into()),
        ("a truncated form".into(), b"hub.mode=subscribe&hub.topic".to_vec()),
        ("a form cut inside a value".into(), b"hub.mode=subscribe&hub.topic=https%3A%2F%2Fshop.exa".to_vec()),
        ("only separators".into(), b"&&&===&".to_vec()),
        (
            "a lone percent sign".into(),
            format!("hub.mode=subscribe&hub.topic=%&hub.callback={}", enc(ok_callback)).into(),
        ),
        (
            "an invalid percent escape".into(),
            format!("hub.mode=subscribe&hub.topic=%ZZ&hub.callback={}", enc(ok_callback)).into(),
        ),
        (
            "a percent escape cut short".into(),
            format!("hub.mode=subscribe&hub.topic=%4&hub.callback={}", enc(ok_callback)).into(),
        ),
        (
            "percent-encoded invalid UTF-8".into(),
            format!("hub.mode=subscribe&hub.topic=%C3%28&hub.callback={}", enc(ok_callback)).into(),
        ),
        (
            "a truncated UTF-8 sequence".into(),
            format!("hub.mode=subscribe&hub.topic=%E2%82&hub.callback={}", enc(ok_callback)).into(),
        ),
        (
            "raw invalid UTF-8 bytes".into(),
            [
                b"hub.mode=subscribe&hub.topic=".as_slice(),
                &[0xff, 0xfe, 0xfd],
                format!("&hub.callback={}", enc(ok_callback)).as_bytes(),
            ]
            .concat(),
        ),
        (
            "two different hub.mode values".into(),
            format!(
                "hub.mode=subscribe&hub.mode=unsubscribe&hub.topic={}&hub.callback={}",
                enc(ok_topic),
                enc(ok_callback)
            )
            .into(),
        ),
        ("two different topics".into(), format!("{}&hub.topic=other", subscribe(ok_topic, ok_callback)).into()),
        (
            "two different callbacks".into(),
            format!("{}&hub.callback={}", subscribe(ok_topic, ok_callback), enc("https://93.184.215.15/other")).into(),
        ),
        ("a negative lease".into(), format!("{}&hub.lease_seconds=-5", subscribe(ok_topic, ok_callback)).into()),
        (
            "a lease that is not a number".into(),
            format!("{}&hub.lease_seconds=ten", subscribe(ok_topic, ok_callback)).into(),
        ),
        ("a fractional lease".into(), format!("{}&hub.lease_seconds=1.5", subscribe(ok_topic, ok_callback)).into()),
        (
            "a lease beyond any integer".into(),
            format!("{}&hub.lease_seconds=99999999999999999999999", subscribe(ok_topic, ok_callback)).into(),
        ),
        (
            "a secret of 200 bytes".into(),
            format!("{}&hub.secret={}", subscribe(ok_topic, ok_callback), "s".repeat(200)).into(),
        ),
        (
            "a secret of 10,000 bytes".into(),
            format!("{}&hub.secret={}", subscribe(ok_topic, ok_callback), "s".repeat(10_000)).into(),
        ),
        (
            "a secret of 200 bytes in multibyte characters".into(),
            format!("{}&hub.secret={}", subscribe(ok_topic, ok_callback), enc(&"é".repeat(100))).into(),
        ),
    ];
    for callback in private_callbacks() {
        forms.push((format!("a private callback {callback}"), subscribe(ok_topic, callback).into()));
        if forms.len().is_multiple_of(5) {
            let unsubscribe = subscribe(ok_topic, callback).replace("hub.mode=subscribe", "hub.mode=unsubscribe");
            forms.push((format!("unsubscribing a private callback {callback}"), unsubscribe.into()));
        }
    }
    for callback in bad_callbacks() {
        forms.push((format!("a bad callback {:?}", truncate(&callback)), subscribe(ok_topic, &callback).into()));
    }
    for topic in bad_topics() {
        forms.push((format!("a bad topic {:?}", truncate(&topic)), subscribe(&topic, ok_callback).into()));
    }
    forms
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn hmac_hex(key: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn publish_cases(max_body: usize) -> Vec<Case> {
    let event = br#"{"topic":"https://shop.example/orders","body":{"n":1}}"#.to_vec();
    let mut cases = vec![
        case("a publish as text/plain", "POST", "/events").header("content-type", "text/plain").body(event.clone()),
        case("a publish as a form", "POST", "/events").form(event.clone()),
        case("a publish without a content type", "POST", "/events").body(event.clone()),
        case("a publish as application/xml", "POST", "/events").header("content-type", "application/xml").body(event.clone()),
        case("an empty JSON body", "POST", "/events").json(""),
        case("invalid JSON", "POST", "/events").json("{\"topic\": "),
        case("JSON that is not an object", "POST", "/events").json("[1,2,3]"),
        case("JSON null", "POST", "/events").json("null"),
        case("no topic", "POST", "/events").json(r#"{"body":1}"#),
        case("a topic that is a number", "POST", "/events").json(r#"{"topic":5,"body":1}"#),
        case("an empty topic", "POST", "/events").json(r#"{"topic":"","body":1}"#),
        case("a topic with CR/LF", "POST", "/events").json(r#"{"topic":"a\r\nX-Injected: 1","body":1}"#),
        case("a topic with a NUL", "POST", "/events").json(r#"{"topic":"a\u0000b","body":1}"#),
        case("an overlong topic", "POST", "/events").json(format!(r#"{{"topic":"{}","body":1}}"#, "t".repeat(1025))),
        case("an id that is not a UUID", "POST", "/events").json(r#"{"topic":"t","id":"not-a-uuid","body":1}"#),
        case("a content type with CR/LF", "POST", "/events").json(r#"{"topic":"t","content_type":"text/plain\r\nX-Injected: 1","body":"x"}"#),
        case("a content type that is not one", "POST", "/events").json(r#"{"topic":"t","content_type":"nonsense","body":"x"}"#),
        case("an overlong content type", "POST", "/events").json(format!(r#"{{"topic":"t","content_type":"text/{}","body":"x"}}"#, "p".repeat(300))),
        case("a non-string body for a text content type", "POST", "/events").json(r#"{"topic":"t","content_type":"text/plain","body":{"a":1}}"#),
        case("invalid base64", "POST", "/events").json(r#"{"topic":"t","content_type":"application/octet-stream","body_base64":"***"}"#),
        case("tags that are not a list", "POST", "/events").json(r#"{"topic":"t","body":1,"tags":"a"}"#),
        case("an empty tag", "POST", "/events").json(r#"{"topic":"t","body":1,"tags":[""]}"#),
        case("a tag with a newline", "POST", "/events").json(r#"{"topic":"t","body":1,"tags":["a\nb"]}"#),
        case("too many tags", "POST", "/events").json(format!(r#"{{"topic":"t","body":1,"tags":[{}]}}"#, (0..65).map(|i| format!("\"t{i}\"")).collect::<Vec<_>>().join(","))),
        case("an overlong group id", "POST", "/events").json(format!(r#"{{"topic":"t","body":1,"group_id":"{}"}}"#, "g".repeat(300))),
        case("an empty batch", "POST", "/events").json(r#"{"events":[]}"#),
        case("a batch that is not a list", "POST", "/events").json(r#"{"events":{"topic":"t"}}"#),
        case("a batch with one bad event among good ones", "POST", "/events").json(r#"{"events":[{"topic":"t","body":1},{"topic":"","body":2},{"topic":"t","body":3}]}"#),
        case("a batch with the same id twice", "POST", "/events").json(r#"{"events":[{"topic":"t","id":"0190c0de-0000-7000-8000-000000000001","body":1},{"topic":"t","id":"0190c0de-0000-7000-8000-000000000001","body":2}]}"#),
        case("an oversized batch", "POST", "/events").json(format!(r#"{{"events":[{}]}}"#, vec![r#"{"topic":"t","body":1}"#; 1001].join(","))),
        case("a body over the limit", "POST", "/events").json(format!(r#"{{"topic":"t","body":"{}"}}"#, "x".repeat(max_body + 10))),
        case("a raw publish without a topic", "POST", "/events/raw").header("content-type", "text/plain").body("hello"),
        case("a raw publish with an empty topic", "POST", "/events/raw?topic=").header("content-type", "text/plain").body("hello"),
        case("a raw publish with a CR/LF topic", "POST", "/events/raw?topic=a%0D%0AX-Injected:%201").header("content-type", "text/plain").body("hello"),
        case("a raw publish without a content type", "POST", "/events/raw?topic=t").body("hello"),
        case("a raw publish with a bad content type", "POST", "/events/raw?topic=t").header("content-type", "nonsense").body("hello"),
        case("a raw publish with a bad id", "POST", "/events/raw?topic=t&id=nope").header("content-type", "text/plain").body("hello"),
        case("a raw publish over the limit", "POST", "/events/raw?topic=t").header("content-type", "application/octet-stream").body(vec![b'x'; max_body + 10]),
        case("a thin ping for a private topic URL", "POST", "/").form("hub.mode=publish&hub.url=http%3A%2F%2F127.0.0.1%2Ffeed"),
        case("a thin ping for a metadata URL", "POST", "/").form("hub.mode=publish&hub.url=http%3A%2F%2F169.254.169.254%2Flatest"),
        case("a thin ping without a URL", "POST", "/").form("hub.mode=publish"),
        case("a thin ping with too many URLs", "POST", "/").form((0..101).map(|i| format!("hub.url=https%3A%2F%2Fexample.com%2F{i}")).collect::<Vec<_>>().join("&") + "&hub.mode=publish"),
    ];
    // Every publish above is also refused by the content checks before any credential is looked at; the cases
    // below carry a valid event and forged credentials.
    let body = event.clone();
    let ts = now();
    let good = hmac_hex(HMAC_KEY, ts, &body);
    let signed = |name: &str, timestamp: String, signature: String| {
        case(name, "POST", "/events")
            .json(body.clone())
            .header("x-tidings-timestamp", timestamp)
            .header("x-tidings-signature", signature)
    };
    cases.extend([
        case("a publish without credentials", "POST", "/events").json(body.clone()),
        case("a wrong publish token", "POST", "/events")
            .json(body.clone())
            .header("authorization", "Bearer not-the-token"),
        case("a publish token with a suffix", "POST", "/events")
            .json(body.clone())
            .header("authorization", format!("Bearer {PUBLISH_TOKEN}x")),
        case("a publish token prefix", "POST", "/events")
            .json(body.clone())
            .header("authorization", format!("Bearer {}", &PUBLISH_TOKEN[..5])),
        case("a publish token as basic auth", "POST", "/events")
            .json(body.clone())
            .header("authorization", format!("Basic {PUBLISH_TOKEN}")),
        case("a publish token in the query", "POST", format!("/events?token={PUBLISH_TOKEN}")).json(body.clone()),
        case("an empty bearer token", "POST", "/events").json(body.clone()).header("authorization", "Bearer "),
        signed(
            "a signature under the wrong key",
            ts.to_string(),
            format!("sha256={}", hmac_hex("wrong-key", ts, &body)),
        ),
        signed("a signature of another body", ts.to_string(), format!("sha256={}", hmac_hex(HMAC_KEY, ts, b"{}"))),
        signed(
            "a signature replayed an hour later",
            (ts - 3600).to_string(),
            format!("sha256={}", hmac_hex(HMAC_KEY, ts - 3600, &body)),
        ),
        signed(
            "a signature from the future",
            (ts + 3600).to_string(),
            format!("sha256={}", hmac_hex(HMAC_KEY, ts + 3600, &body)),
        ),
        signed("a signature for another timestamp", (ts - 1).to_string(), format!("sha256={good}")),
        signed("a signature that is not hex", ts.to_string(), "sha256=zzzz".into()),
        signed("a truncated signature", ts.to_string(), format!("sha256={}", &good[..32])),
        signed("a signature without its scheme", ts.to_string(), good.clone()),
        signed("a signature with another scheme", ts.to_string(), format!("sha1={good}")),
        signed("a timestamp that is not a number", "yesterday".into(), format!("sha256={good}")),
        case("a signature without a timestamp", "POST", "/events")
            .json(body.clone())
            .header("x-tidings-signature", format!("sha256={good}")),
        case("a timestamp without a signature", "POST", "/events")
            .json(body.clone())
            .header("x-tidings-timestamp", ts.to_string()),
    ]);
    cases
}

/// Every admin route, each with missing, wrong and malformed credentials.
fn admin_cases() -> Vec<Case> {
    let id = "0190c0de-0000-7000-8000-000000000001";
    let routes: Vec<(&'static str, String, &'static str)> = vec![
        ("GET", "/events".into(), ""),
        ("GET", "/fetches".into(), ""),
        ("GET", "/dry-run?topic=t".into(), ""),
        ("GET", "/spreader".into(), ""),
        ("GET", "/deliveries".into(), ""),
        ("GET", format!("/deliveries/{id}"), ""),
        ("POST", format!("/deliveries/{id}/redeliver"), ""),
        ("GET", "/subscriptions".into(), ""),
        ("GET", format!("/subscriptions/{id}"), ""),
        ("POST", format!("/subscriptions/{id}/replay"), r#"{"from_position":0}"#),
        ("POST", format!("/subscriptions/{id}/redeliver-dead"), "{}"),
        ("POST", format!("/subscriptions/{id}/end"), ""),
        ("GET", "/groups/g/progress".into(), ""),
        ("GET", "/stats".into(), ""),
        ("GET", "/policies".into(), ""),
        ("PUT", "/policies".into(), r#"{"topic":"t","max_bytes":10}"#),
        ("DELETE", "/policies?topic=t".into(), ""),
    ];
    let credentials: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("a wrong token", Some("Bearer wrong-token".into())),
        ("the token with a suffix", Some(format!("Bearer {ADMIN_TOKEN}x"))),
        ("the token as basic auth", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("a lowercase scheme", Some(format!("bearer{ADMIN_TOKEN}"))),
        ("the publish token", Some(format!("Bearer {PUBLISH_TOKEN}"))),
    ];
    let mut cases = Vec::new();
    for (method, path, body) in &routes {
        for (what, authorization) in &credentials {
            let mut c = case(format!("{method} {path} with {what}"), method, path.clone());
            if !body.is_empty() {
                c = c.json(body.to_string());
            }
            if let Some(a) = authorization {
                c = c.header("authorization", a.clone());
            }
            cases.push(c);
        }
    }
    cases
}

fn corpus(max_body: usize) -> Vec<Case> {
    let mut cases: Vec<Case> = forms()
        .into_iter()
        .map(|(name, body)| case(format!("subscribe with {name}"), "POST", "/").form(body))
        .collect();
    cases.push(case("a hub request as JSON", "POST", "/").json(r#"{"hub.mode":"subscribe"}"#));
    cases.push(
        case("a hub request as text", "POST", "/")
            .header("content-type", "text/plain")
            .body(subscribe("t", PUBLIC_CALLBACK)),
    );
    cases.push(case("a hub request without a content type", "POST", "/").body(subscribe("t", PUBLIC_CALLBACK)));
    cases.push(case("a hub request over the body limit", "POST", "/").form(format!(
        "{}&pad={}",
        subscribe("t", PUBLIC_CALLBACK),
        "x".repeat(max_body + 10)
    )));
    cases.extend(publish_cases(max_body));
    cases.extend(admin_cases());
    cases
}

async fn row_counts(app: &TestApp) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for table in [
        "events",
        "subscriptions",
        "subscription_requests",
        "outbox",
        "delivery_attempts",
        "topic_policies",
        "topic_fetches",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(&app.pool).await.unwrap();
        counts.push((table.to_owned(), n));
    }
    counts
}

#[tokio::test]
async fn every_hostile_request_gets_a_4xx_with_a_reason_and_stores_nothing() {
    let mut config = test_config();
    config.hub.callback_allow_private = false;
    config.http.max_body_bytes = 64 * 1024;
    config.http.publish_tokens = Some(Secret(PUBLISH_TOKEN.into()));
    config.http.publish_hmac_key = Some(Secret(HMAC_KEY.into()));
    let app = spawn_app_with(config, Roles::API).await;
    let before = row_counts(&app).await;
    let cases = corpus(64 * 1024);
    assert!(cases.len() >= 200, "the corpus holds {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
        let mut request = app.client.request(method, app.url(&c.path)).body(c.body.clone());
        for (k, v) in &c.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{}: the request failed: {e}", c.name));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        // Refused for its own fault: never because a name could not be resolved (there is no DNS in the tests).
        if !status.is_client_error() || text.trim().is_empty() || text.contains("could not be resolved") {
            failures.push(format!("{}: {} {:?}", c.name, status, truncate(&text)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases were not refused with a 4xx and a reason:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(row_counts(&app).await, before, "a refused request stored nothing");
    println!("{} hostile requests refused, nothing stored", cases.len());
    app.stop().await;
}

#[tokio::test]
async fn a_verification_answered_with_a_redirect_is_not_followed_and_activates_nothing() {
    let target = Receiver::start().await;
    let subscriber = Receiver::start().await;
    subscriber.set_verify(VerifyReply::Redirect(target.url("/stolen")));
    let app = spawn_app_with(test_config(), Roles::ALL).await;
    // The subscriber redirects the verification to another server; had the hub followed, that server would see it.
    let response =
        app.post_form(&[("hub.mode", "subscribe"), ("hub.topic", "t"), ("hub.callback", &subscriber.url("/cb"))]).await;
    assert_eq!(response.status(), 202);
    crate::helpers::eventually(std::time::Duration::from_secs(10), "the verification attempt", || async {
        (!subscriber.verifications().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE state = 'active'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(active, 0, "a redirected verification activates nothing");
    assert!(target.received().is_empty(), "nothing else was called");
    app.stop().await;
}
