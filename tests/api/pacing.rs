//! Delivery isolation: a saturated subscriber's backlog is pushed back to its pace, so claims never read past it,
//! and a subscriber that recovers gets its backlog at full speed again.

use std::time::Duration;

use serde_json::json;
use tidings::app::Roles;

use crate::{
    helpers::{eventually, spawn_app_with, test_config},
    receiver::Receiver,
};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_slow_subscribers_backlog_is_pushed_back_to_its_pace_unattempted_and_delivered_once_it_recovers() {
    let mut config = test_config();
    config.delivery.host_concurrency = 2;
    let app = spawn_app_with(config, Roles::ALL).await;
    let slow = Receiver::start().await;
    app.subscribe_active("t", &slow.url("/slow"), &[]).await;
    slow.set_delay(Duration::from_secs(1));
    app.publish(json!({"topic": "t", "body": "warm-up"})).await;
    eventually(WAIT, "the warm-up delivery", || async { (slow.deliveries().len() == 1).then_some(()) }).await;

    let batch: Vec<_> = (0..60).map(|i| json!({"topic": "t", "body": i})).collect();
    assert!(app.publish(json!({ "events": batch })).await.status().is_success());
    app.wait_for_count(WAIT, "the jobs spread", "SELECT count(*) FROM outbox WHERE kind = 'deliver'", 61).await;
    let due = "SELECT count(*) FROM outbox WHERE kind = 'deliver' AND state = 'pending' AND due_at <= now()";
    // Two requests at a time of a second each: without pacing, most of the 60 stay due for half a minute.
    app.wait_for_count(WAIT, "the slow subscriber's backlog pushed back", due, 0).await;
    let pushed_back = app
        .count(
            "SELECT count(*) FROM outbox WHERE kind = 'deliver' AND state = 'pending' AND due_at > now()
               AND attempts = 0 AND leased_until IS NULL",
        )
        .await;
    assert!(pushed_back >= 30, "only {pushed_back} jobs were pushed back unattempted");

    slow.set_delay(Duration::ZERO);
    eventually(Duration::from_secs(20), "the whole backlog", || async {
        (slow.deliveries().len() >= 61).then_some(())
    })
    .await;
    let bodies: std::collections::BTreeSet<_> = slow.deliveries().iter().map(|d| d.body.clone()).collect();
    assert_eq!(slow.deliveries().len(), 61, "each event once");
    assert_eq!(bodies.len(), 61);
    // A subscriber sees a request before the deliverer records it; a job leaves `pending` in the statement that
    // records its attempt, so once none is pending every attempt is counted.
    let pending = "SELECT count(*) FROM outbox WHERE kind = 'deliver' AND state = 'pending'";
    app.wait_for_count(Duration::from_secs(10), "every attempt recorded", pending, 0).await;
    let attempts = app
        .count("SELECT count(*) FROM delivery_attempts a JOIN outbox o ON o.id = a.outbox_id WHERE o.kind = 'deliver'")
        .await;
    assert_eq!(attempts, 61, "one attempt per event: a push is not an attempt");
    app.stop().await;
}
