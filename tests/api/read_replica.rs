//! `DATABASE_READ_URL`: the query API reads from the replica; everything that writes stays on the primary.

use serde_json::json;
use tidings::{app::Roles, config::Secret};

use crate::helpers::{spawn_app_with, test_config};

fn topics(page: &serde_json::Value) -> Vec<String> {
    page["events"].as_array().unwrap().iter().map(|e| e["topic"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn searches_read_from_the_replica_while_publishes_go_to_the_primary() {
    // A second database stands in for the replica: it holds different events, so where each read went shows.
    let replica = spawn_app_with(test_config(), Roles::API).await;
    assert!(replica.publish(json!({"topic": "seen-on-the-replica", "body": 1})).await.status().is_success());

    let mut config = test_config();
    config.database.database_read_url = Some(Secret(replica.config.database.database_url.expose().clone()));
    let app = spawn_app_with(config, Roles::API).await;
    assert!(app.publish(json!({"topic": "written-to-the-primary", "body": 2})).await.status().is_success());

    assert_eq!(app.event_count().await, 1, "the publish was written to the primary");
    assert_eq!(topics(&app.admin_get("/events").await), ["seen-on-the-replica"]);
    let on_replica =
        crate::spreader::insert_subscription(&replica.pool, "seen-on-the-replica", "http://127.0.0.1:9/cb", "active")
            .await;
    let subscriptions = app.admin_get("/subscriptions").await;
    let listed: Vec<&str> =
        subscriptions["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [on_replica.to_string()], "subscription search answers from the replica");

    app.stop().await;
    replica.stop().await;
}

#[tokio::test]
async fn without_a_read_url_the_primary_answers_searches() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    app.publish(json!({"topic": "only-here", "body": 1})).await;
    assert_eq!(topics(&app.admin_get("/events").await), ["only-here"]);
    app.stop().await;
}
