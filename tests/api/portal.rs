//! The subscriber portal: a signed, expiring link (from the admin API, or for a proof of the subscription's
//! `hub.secret`) opens one subscription's deliveries and attempts, as a page and as JSON, and lets its
//! subscriber redeliver the dead ones. Any other link gets 403 and shows nothing.

use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::{
    helpers::{eventually, spawn_app_with, test_config, TestApp},
    receiver::Receiver,
};

const WAIT: Duration = Duration::from_secs(30);

async fn dead(app: &TestApp, id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE subscription_id = $1::uuid AND state = 'dead'")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

impl TestApp {
    /// The operator's portal link for a subscription: its token.
    async fn portal_token(&self, id: &str) -> String {
        let response = self.admin_send(Method::POST, &format!("/subscriptions/{id}/portal-link"), None).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let link: Value = response.json().await.unwrap();
        link["token"].as_str().unwrap().to_owned()
    }

    async fn portal(&self, token: &str) -> reqwest::Response {
        self.client.get(self.url("/portal")).query(&[("token", token)]).send().await.unwrap()
    }

    async fn portal_page(&self, token: &str) -> reqwest::Response {
        self.client.get(self.url("/console/subscriber")).query(&[("token", token)]).send().await.unwrap()
    }
}

/// Two active subscriptions whose subscribers answer 500, each with dead deliveries: (app, receivers, ids).
async fn two_failing_subscriptions() -> (TestApp, [Receiver; 2], [String; 2]) {
    let mut config = test_config();
    config.delivery.retry_schedule = "50ms".parse().unwrap();
    let app = spawn_app_with(config, tidings::app::Roles::ALL).await;
    let receivers = [Receiver::start().await, Receiver::start().await];
    let mut ids = Vec::new();
    for (n, receiver) in receivers.iter().enumerate() {
        receiver.set_status(500);
        let topic = format!("orders-{n}");
        let sub = app.subscribe_active(&topic, &receiver.url(&format!("/hook-{n}")), &[]).await;
        ids.push(sub["id"].as_str().unwrap().to_owned());
        let events: Vec<_> = (0..2).map(|i| json!({"topic": topic, "body": {"n": i}})).collect();
        assert!(app.publish(json!({ "events": events })).await.status().is_success());
    }
    for id in &ids {
        eventually(WAIT, "both deliveries to die", || async { (dead(&app, id).await == 2).then_some(()) }).await;
    }
    (app, receivers, ids.try_into().unwrap())
}

#[tokio::test]
async fn a_subscriber_with_an_operators_link_sees_only_its_own_deliveries_and_redelivers_its_dead_ones() {
    let (app, receivers, [mine, theirs]) = two_failing_subscriptions().await;
    let issued = app
        .admin_send(
            Method::POST,
            &format!("/subscriptions/{mine}/portal-link"),
            Some(json!({"expires_in_seconds": 3600})),
        )
        .await;
    assert_eq!(issued.status(), StatusCode::CREATED);
    let link: Value = issued.json().await.unwrap();
    let token = link["token"].as_str().unwrap().to_owned();
    assert!(link["url"].as_str().unwrap().contains("/console/subscriber?token="), "{link}");
    let expires: chrono::DateTime<chrono::Utc> = link["expires_at"].as_str().unwrap().parse().unwrap();
    let lifetime = expires - chrono::Utc::now();
    assert!((3590..=3600).contains(&lifetime.num_seconds()), "{lifetime}");

    let response = app.portal(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let log: Value = response.json().await.unwrap();
    assert_eq!(log["subscription"]["id"], mine.as_str());
    assert_eq!(log["subscription"]["callback"], receivers[0].url("/hook-0"));
    assert!(log["subscription"].get("headers").is_none() && log["subscription"].get("has_secret").is_none());
    let deliveries = log["deliveries"].as_array().unwrap();
    let events: Vec<_> = deliveries.iter().filter(|d| d["kind"] == "deliver").collect();
    assert_eq!(events.len(), 2, "{log}");
    for d in &events {
        assert_eq!(d["subscription_id"], mine.as_str());
        assert_eq!(d["state"], "dead");
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "one attempt and one retry: {d}");
        assert!(attempts.iter().all(|a| a["status_code"] == 500), "{d}");
    }

    let page = app.portal_page(&token).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains(&receivers[0].url("/hook-0")) && html.contains("orders-0"), "{html}");
    assert!(!html.contains("orders-1") && !html.contains(&theirs), "another subscription's deliveries are not shown");
    assert!(html.contains("Redeliver dead deliveries"));

    receivers[0].set_status(204);
    let sent_before = receivers[0].deliveries().len();
    let form = [("token", token.as_str())];
    let redelivered = app.client.post(app.url("/console/subscriber/redeliver-dead")).form(&form).send().await.unwrap();
    assert_eq!(redelivered.status(), StatusCode::SEE_OTHER);
    let location = redelivered.headers()["location"].to_str().unwrap();
    assert!(location.contains("done=redelivered-dead&n=2"), "{location}");
    eventually(WAIT, "the redelivered events to arrive", || async {
        (receivers[0].deliveries().len() == sent_before + 2).then_some(())
    })
    .await;
    assert_eq!(dead(&app, &mine).await, 0);
    assert_eq!(dead(&app, &theirs).await, 2, "only the link's subscription is redelivered");

    // The JSON twin of the action: nothing is dead any more.
    let again = app.client.post(app.url("/portal/redeliver-dead")).query(&[("token", &token)]).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap(), json!({"redelivered": 0}));
    app.stop().await;
}

/// What a refused request must not show: either subscription's topic, callback or id.
fn shows_nothing(body: &str, receivers: &[Receiver; 2], ids: &[String; 2]) {
    for (n, receiver) in receivers.iter().enumerate() {
        assert!(!body.contains(&format!("orders-{n}")) && !body.contains(&receiver.url("/hook")), "{body}");
        assert!(!body.contains(&ids[n]), "{body}");
    }
}

#[tokio::test]
async fn another_subscriptions_id_an_expired_link_and_a_forged_signature_get_403_and_nothing_shown() {
    let (app, receivers, ids) = two_failing_subscriptions().await;
    let token = app.portal_token(&ids[0]).await;
    let [_, exp, signature]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();

    let key: Vec<u8> = sqlx::query_scalar("SELECT key FROM portal_keys").fetch_one(&app.pool).await.unwrap();
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    let expired = tidings::portal::link_token(&key, ids[0].parse().unwrap(), past);
    let mut forged_signature = signature.to_owned();
    let last = if forged_signature.ends_with('A') { "B" } else { "A" };
    forged_signature.replace_range(forged_signature.len() - 1.., last);

    let refused = [
        format!("{}.{exp}.{signature}", ids[1]),
        expired,
        format!("{}.{exp}.{forged_signature}", ids[0]),
        format!("{}.{}.{signature}", ids[0], exp.parse::<i64>().unwrap() + 86_400),
        String::new(),
        "not a token".into(),
    ];
    for bad in &refused {
        let response = app.portal(bad).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "GET /portal with {bad}");
        shows_nothing(&response.text().await.unwrap(), &receivers, &ids);
        let page = app.portal_page(bad).await;
        assert_eq!(page.status(), StatusCode::FORBIDDEN, "the page with {bad}");
        let html = page.text().await.unwrap();
        assert!(html.contains("This link is not valid"), "{html}");
        shows_nothing(&html, &receivers, &ids);
        let json = app.client.post(app.url("/portal/redeliver-dead")).query(&[("token", bad)]).send().await.unwrap();
        assert_eq!(json.status(), StatusCode::FORBIDDEN);
        let form = [("token", bad.as_str())];
        let page = app.client.post(app.url("/console/subscriber/redeliver-dead")).form(&form).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!((dead(&app, &ids[0]).await, dead(&app, &ids[1]).await), (2, 2), "nothing was redelivered");

    // Deleting the key revokes every link issued so far.
    assert_eq!(app.portal(&token).await.status(), StatusCode::OK);
    sqlx::query("DELETE FROM portal_keys").execute(&app.pool).await.unwrap();
    assert_eq!(app.portal(&token).await.status(), StatusCode::FORBIDDEN);

    // The operator's call: an admin route, for a subscription that exists, with a bounded lifetime.
    let path = format!("/subscriptions/{}/portal-link", ids[0]);
    let anonymous = app.client.post(app.url(&path)).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let unknown = uuid::Uuid::new_v4();
    let missing = app.admin_send(Method::POST, &format!("/subscriptions/{unknown}/portal-link"), None).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    for body in [json!({"expires_in_seconds": 0}), json!({"expires_in_seconds": 2_592_001}), json!({"other": 1})] {
        let response = app.admin_send(Method::POST, &path, Some(body.clone())).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(!response.text().await.unwrap().is_empty());
    }
    let no_query = app.client.get(app.url("/portal")).send().await.unwrap();
    assert_eq!(no_query.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

fn proof(secret: &str, nonce: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(nonce.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl TestApp {
    async fn nonce(&self, id: &str) -> String {
        let response =
            self.client.post(self.url("/portal/nonce")).json(&json!({"subscription_id": id})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json::<Value>().await.unwrap()["nonce"].as_str().unwrap().to_owned()
    }

    async fn redeem(&self, nonce: &str, proof: &str) -> reqwest::Response {
        self.client.post(self.url("/portal/link")).json(&json!({"nonce": nonce, "proof": proof})).send().await.unwrap()
    }
}

#[tokio::test]
async fn a_subscriber_that_proves_its_secret_gets_a_link_and_a_wrong_proof_gets_403() {
    let app = spawn_app_with(test_config(), tidings::app::Roles::ALL).await;
    let receiver = Receiver::start().await;
    let signed = app.subscribe_active("t", &receiver.url("/signed"), &[("hub.secret", "first-secret")]).await;
    let unsigned = app.subscribe_active("t", &receiver.url("/unsigned"), &[]).await;
    let (signed, unsigned) = (signed["id"].as_str().unwrap(), unsigned["id"].as_str().unwrap());

    let nonce = app.nonce(signed).await;
    let response = app.redeem(&nonce, &proof("first-secret", &nonce)).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let link: Value = response.json().await.unwrap();
    let log: Value = app.portal(link["token"].as_str().unwrap()).await.json().await.unwrap();
    assert_eq!(log["subscription"]["id"], signed);
    let expires: chrono::DateTime<chrono::Utc> = link["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires - chrono::Utc::now() <= chrono::Duration::hours(1));

    let other_nonce = app.nonce(unsigned).await;
    let mut tampered = nonce.clone();
    tampered.replace_range(..signed.len(), unsigned);
    let wrong = [
        (nonce.clone(), proof("another-secret", &nonce)),
        (nonce.clone(), "zz".into()),
        (other_nonce.clone(), proof("first-secret", &other_nonce)),
        (other_nonce.clone(), proof("", &other_nonce)),
        (tampered.clone(), proof("first-secret", &tampered)),
    ];
    for (nonce, proof) in &wrong {
        let response = app.redeem(nonce, proof).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{nonce} {proof}");
        let body = response.text().await.unwrap();
        assert!(!body.contains(signed) && !body.contains(unsigned) && !body.contains("/signed"), "{body}");
    }

    // After a rotation only the secret now in force proves.
    let rotated = app
        .admin_send(Method::PUT, &format!("/subscriptions/{signed}/secret"), Some(json!({"secret": "second-secret"})))
        .await;
    assert_eq!(rotated.status(), StatusCode::OK);
    let nonce = app.nonce(signed).await;
    assert_eq!(app.redeem(&nonce, &proof("first-secret", &nonce)).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.redeem(&nonce, &proof("second-secret", &nonce)).await.status(), StatusCode::CREATED);

    for body in ["", "{}", "{\"subscription_id\": \"nope\"}"] {
        let response = app.client.post(app.url("/portal/nonce")).body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let missing_proof = app.client.post(app.url("/portal/link")).json(&json!({"nonce": nonce})).send().await.unwrap();
    assert_eq!(missing_proof.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}
