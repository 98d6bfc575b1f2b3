//! Callbacks and thin-ping topic URLs that point into the hub's own network, in every spelling.

use super::{assert_all_refused, hostile_hub, Case, PUBLISH_TOKEN};

/// Hosts (as they appear in a URL) that are loopback, private, link-local, CGNAT, unspecified or reserved.
const PRIVATE_HOSTS: &[&str] = &[
    "127.0.0.1",
    "127.0.0.1:8080",
    "127.1.2.3",
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "192.168.255.254",
    "169.254.169.254",
    "169.254.0.1",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "255.255.255.255",
    "224.0.0.1",
    "240.0.0.1",
    "[::1]",
    "[::]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:10.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:192.168.1.1]",
    "[::127.0.0.1]",
    "[::10.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::]",
    "[2002:a00:1::]",
    "[fc00::1]",
    "[fd00:ec2::254]",
    "[fe80::1]",
    "[fec0::1]",
    "[ff02::1]",
    "2130706433",
    "017700000001",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.1",
    "0x7f.0.0.1",
    "127.1",
    "127.0.1",
    "0xa.0.0.1",
    "012.0.0.1",
    "167772161",
    "0xa9.0xfe.0xa9.0xfe",
    "2852039166",
    "0300.0250.0.1",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "tidings.localhost",
    "a.b.localhost",
];

fn callbacks() -> Vec<String> {
    let mut urls: Vec<String> = PRIVATE_HOSTS.iter().map(|h| format!("http://{h}/callback")).collect();
    urls.extend(
        ["https://127.0.0.1/cb", "https://[::1]:8443/cb", "http://169.254.169.254/latest/meta-data/"].map(String::from),
    );
    urls
}

#[tokio::test]
async fn subscribing_a_callback_on_a_private_address_is_refused_in_every_spelling() {
    let app = hostile_hub().await;
    let cases = callbacks()
        .into_iter()
        .flat_map(|callback| {
            ["subscribe", "unsubscribe"].map(|mode| {
                Case::form(
                    format!("{mode} {callback}"),
                    &[("hub.mode", mode), ("hub.topic", "https://example.com/feed"), ("hub.callback", &callback)],
                )
            })
        })
        .collect();
    assert_all_refused(&app, cases).await;
    app.stop().await;
}

#[tokio::test]
async fn a_thin_ping_naming_a_private_topic_url_is_refused_in_every_spelling() {
    let app = hostile_hub().await;
    let cases = callbacks()
        .into_iter()
        .map(|url| {
            Case::form(format!("publish {url}"), &[("hub.mode", "publish"), ("hub.url", &url)])
                .header("authorization", format!("Bearer {PUBLISH_TOKEN}"))
        })
        .collect();
    assert_all_refused(&app, cases).await;
    app.stop().await;
}
