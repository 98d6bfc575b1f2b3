//! The web console under /console: login and logout, CSRF refusal, every page, and the actions an operator takes.

use std::time::Duration;

use serde_json::json;
use tidings::app::Roles;

use crate::{
    helpers::{eventually, spawn_app, spawn_app_with, test_config, TestApp, ADMIN_TOKEN},
    receiver::Receiver,
    spreader::insert_subscription,
};

const WAIT: Duration = Duration::from_secs(15);

/// Waits until every event is spread and every delivery has finished; generous, as the machine may be busy.
async fn settle(app: &TestApp) {
    eventually(Duration::from_secs(60), "every delivery to settle", || async {
        let settled: bool = sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM outbox WHERE state = 'pending')
                AND NOT EXISTS (SELECT 1 FROM events e, spreader_cursor c WHERE (e.txid, e.position) > (c.txid, c.position))",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        settled.then_some(())
    })
    .await
}

/// A browser's view of the console: the session cookie it was given, sent back on every request.
struct Browser<'a> {
    app: &'a TestApp,
    cookie: String,
}

async fn login_response(app: &TestApp, token: &str) -> reqwest::Response {
    app.client.post(app.url("/console/login")).form(&[("token", token)]).send().await.unwrap()
}

/// The `name=value` of the session cookie a response sets.
fn set_cookie(response: &reqwest::Response) -> String {
    let header = response.headers().get("set-cookie").expect("a Set-Cookie header").to_str().unwrap();
    header.split(';').next().unwrap().to_owned()
}

/// The CSRF token rendered into a page's forms.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a form with a CSRF token") + "name=\"csrf\" value=\"".len();
    page[at..].split('"').next().unwrap().to_owned()
}

impl<'a> Browser<'a> {
    async fn log_in(app: &'a TestApp) -> Browser<'a> {
        let response = login_response(app, ADMIN_TOKEN).await;
        assert_eq!(response.status(), 303, "a right token logs in");
        Browser { app, cookie: set_cookie(&response) }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.app.client.get(self.app.url(path)).header("cookie", &self.cookie).send().await.unwrap()
    }

    /// A page that must render; its HTML.
    async fn page(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        response.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.app.client.post(self.app.url(path)).header("cookie", &self.cookie).form(form).send().await.unwrap()
    }

    /// Submits a form with the session's CSRF token, taken from the page the form is on.
    async fn submit(&self, page: &str, action: &str, extra: &[(&str, &str)]) -> reqwest::Response {
        let token = csrf(&self.page(page).await);
        let mut form = vec![("csrf", token.as_str())];
        form.extend_from_slice(extra);
        self.post(action, &form).await
    }
}

fn location(response: &reqwest::Response) -> &str {
    response.headers().get("location").expect("a redirect").to_str().unwrap()
}

#[tokio::test]
async fn logging_in_opens_the_console_and_logging_out_revokes_the_session() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let anonymous = app.client.get(app.url("/console")).send().await.unwrap();
    assert_eq!((anonymous.status().as_u16(), location(&anonymous)), (303, "/console/login"));
    let form = app.client.get(app.url("/console/login")).send().await.unwrap().text().await.unwrap();
    assert!(form.contains("Admin token"), "{form}");

    let response = login_response(&app, ADMIN_TOKEN).await;
    assert_eq!((response.status().as_u16(), location(&response)), (303, "/console"));
    let header = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(header.contains(attribute), "{header}");
    }
    assert!(!header.contains("Secure"), "plain http gets no Secure cookie: {header}");
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT id_hash FROM console_sessions").fetch_all(&app.pool).await.unwrap();
    let session_id = set_cookie(&response).split_once('=').unwrap().1.to_owned();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], session_id.as_bytes(), "only a hash of the session id is stored");

    let browser = Browser { app: &app, cookie: set_cookie(&response) };
    let overview = browser.page("/console").await;
    assert!(overview.contains("<h1>Overview</h1>"), "{overview}");
    assert!(!overview.contains(ADMIN_TOKEN), "the token never appears in a page");

    let logout = browser.submit("/console", "/console/logout", &[]).await;
    assert_eq!((logout.status().as_u16(), location(&logout)), (303, "/console/login"));
    assert!(logout.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    let replayed = browser.get("/console").await;
    assert_eq!(
        (replayed.status().as_u16(), location(&replayed)),
        (303, "/console/login?expired=1"),
        "the old cookie no longer works after logout"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_token_is_refused_with_a_clear_message_and_no_session() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    for wrong in ["not-the-token", "", &format!("{ADMIN_TOKEN}x")] {
        let response = login_response(&app, wrong).await;
        assert_eq!(response.status(), 401);
        assert!(response.headers().get("set-cookie").is_none());
        let page = response.text().await.unwrap();
        assert!(page.contains("That is not the admin token"), "{page}");
    }
    let forged = app.client.get(app.url("/console")).header("cookie", "tidings_console=00ff").send().await.unwrap();
    assert_eq!(forged.status(), 303, "a made-up session id is sent to the login form");
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions").fetch_one(&app.pool).await.unwrap();
    assert_eq!(sessions, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_configured() {
    let mut config = test_config();
    config.http.console_secure_cookie = Some(true);
    let app = spawn_app_with(config, Roles::API).await;
    let response = login_response(&app, ADMIN_TOKEN).await;
    assert!(response.headers()["set-cookie"].to_str().unwrap().contains("; Secure"));
    app.stop().await;
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let id = insert_subscription(&app.pool, "t", "http://127.0.0.1:1/hook", "active").await;
    let browser = Browser::log_in(&app).await;
    let end = format!("/console/subscriptions/{id}/end");
    for form in [vec![], vec![("csrf", "forged")]] {
        let refused = browser.post(&end, &form).await;
        assert_eq!(refused.status(), 403);
        assert!(refused.text().await.unwrap().contains("did not come from the console"));
    }
    let other = Browser::log_in(&app).await;
    let token_of_another_session = csrf(&other.page("/console").await);
    assert_eq!(browser.post(&end, &[("csrf", &token_of_another_session)]).await.status(), 403);
    let state: String = sqlx::query_scalar("SELECT state FROM subscriptions WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "active");
    app.stop().await;
}

#[tokio::test]
async fn every_page_says_what_to_do_when_there_is_nothing_to_show() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let browser = Browser::log_in(&app).await;
    for (path, hint) in [
        ("/console", "No delivery attempts in the last hour"),
        ("/console/topics", "Publish one"),
        ("/console/subscriptions", "No subscriptions yet"),
        ("/console/events", "The log is empty"),
        ("/console/deliveries", "No deliveries yet"),
        ("/console/deliveries?state=dead", "No delivery matches these filters"),
        ("/console/events?topic=nothing", "No event matches this search"),
    ] {
        let page = browser.page(path).await;
        assert!(page.contains(hint), "{path} should say {hint:?}:\n{page}");
    }
    assert_eq!(browser.get("/console/deliveries/999").await.status(), 404);
    assert_eq!(browser.get("/console/events/not-a-uuid").await.status(), 400);
    for hostile in ["/console/events?topic=a%00b", "/console/topics?after=%00", "/console/subscriptions?topic=%00"] {
        assert_eq!(browser.get(hostile).await.status(), 400, "{hostile}");
    }
    assert_eq!(browser.get("/console/events?since=yesterday").await.status(), 400);
    let css = browser.get("/console/assets/console.css").await;
    assert_eq!(css.status(), 200);
    assert!(css.text().await.unwrap().contains(":focus-visible"));
    app.stop().await;
}

#[tokio::test]
async fn every_page_renders_what_happened_and_escapes_it() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    subscriber.set_status(500);
    let sub = app
        .subscribe_active("orders", &subscriber.url("/hook"), &[("hub.x-rate", "50"), ("hub.x-rate-burst", "5")])
        .await;
    let sid = sub["id"].as_str().unwrap().to_owned();
    app.publish(
        json!({"topic": "orders", "body": "<script>alert(1)</script>", "tags": ["<b>vip</b>"], "group_id": "g-1"}),
    )
    .await;
    settle(&app).await;
    let browser = Browser::log_in(&app).await;

    let overview = browser.page("/console").await;
    assert!(overview.contains("Events published per minute") && overview.contains("<svg"), "{overview}");
    assert!(overview.contains("dead"), "the outcomes show the dead attempt: {overview}");
    let topics = browser.page("/console/topics").await;
    assert!(topics.contains(">orders</a>"), "{topics}");
    let subscriptions = browser.page("/console/subscriptions?state=active").await;
    assert!(subscriptions.contains(&format!("/console/subscriptions/{sid}")), "{subscriptions}");
    assert!(subscriptions.contains("0.0%"), "no delivery succeeded: {subscriptions}");
    let subscription = browser.page(&format!("/console/subscriptions/{sid}")).await;
    assert!(subscription.contains("Lifecycle history") && subscription.contains(">active<"), "{subscription}");
    assert!(subscription.contains("<dd>50/s, bursts of 5</dd>"), "the rate limit shows: {subscription}");

    let events = browser.page("/console/events?topic=orders&tag=%3Cb%3Evip%3C%2Fb%3E&group_id=g-1").await;
    assert!(events.contains("&#60;b&#62;vip&#60;/b&#62;") && !events.contains("<b>vip</b>"), "{events}");
    let event_id = app.admin_get("/events?topic=orders").await["events"][0]["id"].as_str().unwrap().to_owned();
    let event = browser.page(&format!("/console/events/{event_id}")).await;
    assert!(event.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "the body is escaped: {event}");
    assert!(!event.contains("<script>alert"), "{event}");

    let dead = browser.page("/console/deliveries?state=dead").await;
    let delivery_id = app.admin_get(&format!("/deliveries?subscription_id={sid}&state=dead")).await["deliveries"][0]
        ["id"]
        .as_i64()
        .unwrap();
    assert!(dead.contains(&format!("/console/deliveries/{delivery_id}")), "{dead}");
    let delivery = browser.page(&format!("/console/deliveries/{delivery_id}")).await;
    assert_eq!(delivery.matches("<td>500</td>").count(), 3, "every attempt with its status: {delivery}");
    assert!(delivery.contains("Redeliver"), "{delivery}");
    app.stop().await;
}

#[tokio::test]
async fn redelivering_from_the_console_delivers_what_had_failed() {
    let app = spawn_app().await;
    let subscriber = Receiver::start().await;
    subscriber.set_status(500);
    let sub = app.subscribe_active("orders", &subscriber.url("/hook"), &[]).await;
    let sid = sub["id"].as_str().unwrap().to_owned();
    app.publish(json!([{"topic": "orders", "body": 1}, {"topic": "orders", "body": 2}])).await;
    settle(&app).await;
    subscriber.set_status(204);
    let browser = Browser::log_in(&app).await;
    let dead = app.admin_get(&format!("/deliveries?subscription_id={sid}&state=dead")).await;
    let first = dead["deliveries"][0]["id"].as_i64().unwrap();

    let page = format!("/console/deliveries/{first}");
    let done = browser.submit(&page, &format!("{page}/redeliver"), &[]).await;
    assert_eq!((done.status().as_u16(), location(&done)), (303, format!("{page}?done=redelivered").as_str()));
    let delivered = eventually(WAIT, "the redelivered delivery to be delivered", || async {
        let html = browser.page(&page).await;
        html.contains("data-state>delivered<").then_some(html)
    })
    .await;
    assert!(delivered.contains("<td>204</td>"), "the new attempt is listed: {delivered}");
    let again = browser.submit(&page, &format!("{page}/redeliver"), &[]).await;
    assert_eq!(again.status(), 303, "a delivered delivery can be sent again");
    settle(&app).await;

    let subscription = format!("/console/subscriptions/{sid}");
    let bulk = browser.submit(&subscription, &format!("{subscription}/redeliver-dead"), &[]).await;
    assert_eq!(location(&bulk), format!("{subscription}?done=redelivered-dead&n=1"));
    let notice = browser.page(location(&bulk)).await;
    assert!(notice.contains("1 dead deliveries are back in the queue"), "{notice}");
    settle(&app).await;
    assert_eq!(subscriber.deliveries().len(), 2 * 3 + 3, "three failed attempts each, then three deliveries");
    app.stop().await;
}

#[tokio::test]
async fn replaying_and_ending_a_subscription_from_the_console() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    app.publish(json!([{"topic": "shop.orders", "body": 1}, {"topic": "shop.orders", "body": 2}])).await;
    let id = insert_subscription(&app.pool, "shop.*", "http://127.0.0.1:1/hook", "active").await;
    let browser = Browser::log_in(&app).await;
    let page = format!("/console/subscriptions/{id}");
    let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    let replayed = browser.submit(&page, &format!("{page}/replay"), &[("from", &an_hour_ago), ("tz", "0")]).await;
    assert_eq!(location(&replayed), format!("{page}?done=replayed&n=2"));
    let bad_time = browser.submit(&page, &format!("{page}/replay"), &[("from", "yesterday")]).await;
    assert_eq!(bad_time.status(), 400);

    let ended = browser.submit(&page, &format!("{page}/end"), &[]).await;
    assert_eq!(location(&ended), format!("{page}?done=ended"));
    let after = browser.page(location(&ended)).await;
    assert!(after.contains("The subscription is ended") && after.contains(">unsubscribed<"), "{after}");
    assert!(after.contains("ended by an operator"), "the history records why: {after}");
    assert!(!after.contains("/end\""), "an ended subscription offers no actions: {after}");
    let twice = browser.post(&format!("{page}/end"), &[("csrf", &csrf(&after))]).await;
    assert_eq!(twice.status(), 409);
    app.stop().await;
}

#[tokio::test]
async fn long_lists_page_with_a_cursor() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let events: Vec<_> = (0..60).map(|i| json!({"topic": format!("t{:02}", i), "body": i})).collect();
    assert!(app.publish(json!(events)).await.status().is_success());
    let browser = Browser::log_in(&app).await;
    let first = browser.page("/console/events").await;
    assert_eq!(first.matches("/console/events/").count(), 50);
    assert!(first.contains(">t59<") && !first.contains(">t09<"), "newest first");
    let next = first.split("href=\"").find(|s| s.starts_with("/console/events?before=")).unwrap();
    let next = next.split('"').next().unwrap().replace("&amp;", "&");
    let second = browser.page(&next).await;
    assert_eq!(second.matches("/console/events/").count(), 10);
    assert!(second.contains(">t00<") && !second.contains("Older events"));

    let topics = browser.page("/console/topics").await;
    assert!(topics.contains("/console/topics?after=t49"), "{topics}");
    let rest = browser.page("/console/topics?after=t49").await;
    assert!(rest.contains(">t50</a>") && rest.contains(">t59</a>") && !rest.contains(">t49</a>"));
    app.stop().await;
}

#[tokio::test]
async fn an_operator_sets_a_filter_headers_a_rate_limit_and_a_secret_and_issues_a_portal_link_from_the_console() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let id = insert_subscription(&app.pool, "shop.orders", "http://127.0.0.1:1/hook", "active").await;
    let browser = Browser::log_in(&app).await;
    let page = format!("/console/subscriptions/{id}");
    let stored = || async {
        let s = app.admin_get(&format!("/subscriptions/{id}")).await;
        s["subscription"].clone()
    };

    let set = browser.submit(&page, &format!("{page}/filter"), &[("filter", r#"{"tag": "paid"}"#)]).await;
    assert_eq!(location(&set), format!("{page}?done=filter-set"));
    assert_eq!(stored().await["filter"], json!({"tag": "paid"}));
    let shown = browser.page(location(&set)).await;
    assert!(shown.contains("The content filter is set") && shown.contains("paid"), "{shown}");
    let bad = browser.submit(&page, &format!("{page}/filter"), &[("filter", r#"{"gt": 1}"#)]).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("The content filter:"));
    assert_eq!(stored().await["filter"], json!({"tag": "paid"}), "a bad filter changes nothing");
    let removed = browser.submit(&page, &format!("{page}/filter"), &[("filter", "  ")]).await;
    assert_eq!(location(&removed), format!("{page}?done=filter-removed"));
    assert!(stored().await["filter"].is_null());

    let lines = "X-Tenant: acme\r\nAuthorization: Bearer abc\r\n";
    let set = browser.submit(&page, &format!("{page}/headers"), &[("headers", lines)]).await;
    assert_eq!(location(&set), format!("{page}?done=headers-set"));
    assert_eq!(stored().await["headers"], json!({"X-Tenant": "acme", "Authorization": "Bearer abc"}));
    let shown = browser.page(&page).await;
    assert!(shown.contains("X-Tenant") && !shown.contains("Bearer abc"), "header values are never shown");
    let forbidden = browser.submit(&page, &format!("{page}/headers"), &[("headers", "Host: evil")]).await;
    assert_eq!(forbidden.status(), 400);
    assert_eq!(stored().await["headers"]["X-Tenant"], "acme", "a refused header changes nothing");

    let set = browser.submit(&page, &format!("{page}/rate"), &[("per_second", "50"), ("burst", "5")]).await;
    assert_eq!(location(&set), format!("{page}?done=rate-set"));
    assert_eq!(
        (stored().await["rate_per_second"].as_f64(), stored().await["rate_burst"].as_i64()),
        (Some(50.0), Some(5))
    );
    let bad = browser.submit(&page, &format!("{page}/rate"), &[("per_second", "fast")]).await;
    assert_eq!(bad.status(), 400);
    let removed = browser.submit(&page, &format!("{page}/rate"), &[("per_second", ""), ("burst", "")]).await;
    assert_eq!(location(&removed), format!("{page}?done=rate-removed"));
    assert!(stored().await["rate_per_second"].is_null());

    let empty = browser.submit(&page, &format!("{page}/secret"), &[("secret", "")]).await;
    assert_eq!(empty.status(), 400, "the console never removes a secret by accident");
    assert_eq!(stored().await["has_secret"], false);
    let rotated = browser.submit(&page, &format!("{page}/secret"), &[("secret", "first"), ("grace_hours", "")]).await;
    assert_eq!(location(&rotated), format!("{page}?done=secret-set"));
    let rotated = browser.submit(&page, &format!("{page}/secret"), &[("secret", "second"), ("grace_hours", "2")]).await;
    assert_eq!(location(&rotated), format!("{page}?done=secret-set"));
    let after = stored().await;
    assert_eq!(after["has_secret"], true);
    let until: chrono::DateTime<chrono::Utc> = after["previous_secret_until"].as_str().unwrap().parse().unwrap();
    let grace = until - chrono::Utc::now();
    assert!(grace > chrono::Duration::minutes(119) && grace <= chrono::Duration::hours(2), "{grace}");
    let too_long =
        browser.submit(&page, &format!("{page}/secret"), &[("secret", "third"), ("grace_hours", "721")]).await;
    assert_eq!(too_long.status(), 400);

    let issued = browser.submit(&page, &format!("{page}/portal-link"), &[]).await;
    assert_eq!(issued.status(), 200);
    let html = issued.text().await.unwrap();
    let at = html.find("/console/subscriber?token=").expect("the link is on the page");
    let token = html[at + "/console/subscriber?token=".len()..].split('"').next().unwrap();
    let opened = app.client.get(app.url("/console/subscriber")).query(&[("token", token)]).send().await.unwrap();
    assert_eq!(opened.status(), 200);
    assert!(opened.text().await.unwrap().contains("http://127.0.0.1:1/hook"));
    let without_csrf = browser.post(&format!("{page}/portal-link"), &[]).await;
    assert_eq!(without_csrf.status(), 403);
    app.stop().await;
}
