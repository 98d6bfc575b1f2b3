//! The callbacks spreader: every event × every matching active subscription, exactly once, never skipped.

use std::time::Duration;

use serde_json::json;
use sqlx::{Connection, PgPool};
use tidings::{
    app::Roles,
    spreader::{Spreader, Step},
};
use uuid::Uuid;

use crate::helpers::{eventually, spawn_app_with, test_config, TestApp};

/// An active subscription written straight to the table (verification is tested elsewhere).
pub async fn insert_subscription(pool: &PgPool, topic: &str, callback: &str, state: &str) -> Uuid {
    let id = Uuid::now_v7();
    let prefix = tidings::topic::Topic::parse(topic).unwrap().pattern_prefix();
    let host = tidings::callback::host_key(&url::Url::parse(callback).unwrap());
    sqlx::query(
        "INSERT INTO subscriptions (id, topic, callback, pattern_prefix, callback_host, state, lease_seconds, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, 3600, now() + interval '1 hour')",
    )
    .bind(id)
    .bind(topic)
    .bind(callback)
    .bind(prefix)
    .bind(host)
    .bind(state)
    .execute(pool)
    .await
    .unwrap();
    id
}

async fn api_only() -> TestApp {
    spawn_app_with(test_config(), Roles::API).await
}

fn spreader(app: &TestApp, batch: i64) -> Spreader {
    Spreader::new(app.pool.clone(), batch)
}

/// Spreads until the cursor has passed every committed event. Transactions of other tests on the same server
/// can hold the horizon back for a moment, so an empty batch alone does not mean the log is done.
async fn spread_all(spreader: &Spreader) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Step::Spread { events: 0, .. } = spreader.try_spread_batch().await.unwrap() {
            let behind: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events e, spreader_cursor c WHERE (e.txid, e.position) > (c.txid, c.position))",
            )
            .fetch_one(&spreader.pool)
            .await
            .unwrap();
            if !behind {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the spreader never caught up");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// (event position, subscription) of every delivery job.
async fn jobs(pool: &PgPool) -> Vec<(i64, Uuid)> {
    sqlx::query_as("SELECT event_position, subscription_id FROM outbox WHERE kind = 'deliver' ORDER BY 1, 2")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn publish_many(app: &TestApp, topic: &str, n: usize) {
    let batch: Vec<_> = (0..n).map(|i| json!({"topic": topic, "body": i})).collect();
    assert_eq!(app.publish(json!({ "events": batch })).await.status(), 201);
}

#[tokio::test]
async fn n_events_and_m_matching_subscriptions_make_exactly_n_times_m_jobs() {
    let app = api_only().await;
    let mut matching = Vec::new();
    for i in 0..3 {
        matching.push(
            insert_subscription(&app.pool, "orders.created", &format!("http://127.0.0.1:1/exact{i}"), "active").await,
        );
    }
    matching.push(insert_subscription(&app.pool, "ORDERS.*", "http://127.0.0.1:1/pattern", "active").await);
    matching.push(insert_subscription(&app.pool, "*", "http://127.0.0.1:1/all", "active").await);
    insert_subscription(&app.pool, "orders.created", "http://127.0.0.1:1/gone", "unsubscribed").await;
    insert_subscription(&app.pool, "orders.created", "http://127.0.0.1:1/old", "expired").await;
    insert_subscription(&app.pool, "orders.created", "http://127.0.0.1:1/new", "pending").await;
    insert_subscription(&app.pool, "invoices.*", "http://127.0.0.1:1/other", "active").await;
    insert_subscription(&app.pool, "orders", "http://127.0.0.1:1/parent", "active").await;
    let lapsed = insert_subscription(&app.pool, "orders.created", "http://127.0.0.1:1/lapsed", "active").await;
    sqlx::query("UPDATE subscriptions SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(lapsed)
        .execute(&app.pool)
        .await
        .unwrap();
    publish_many(&app, "orders.created", 40).await;
    spread_all(&spreader(&app, 7)).await;
    let jobs = jobs(&app.pool).await;
    assert_eq!(jobs.len(), 40 * matching.len());
    assert!(jobs.iter().all(|(_, s)| matching.contains(s)));
    // Spreading again writes nothing more.
    sqlx::query("UPDATE spreader_cursor SET txid = '0', position = 0").execute(&app.pool).await.unwrap();
    spread_all(&spreader(&app, 7)).await;
    assert_eq!(self::jobs(&app.pool).await.len(), 40 * matching.len());
    app.stop().await;
}

#[tokio::test]
async fn an_event_whose_transaction_commits_late_is_still_spread() {
    let app = api_only().await;
    let subscription = insert_subscription(&app.pool, "t", "http://127.0.0.1:1/a", "active").await;
    let insert =
        "INSERT INTO events (id, topic, content_type, body) VALUES ($1, 't', 'text/plain', '') RETURNING position";
    // A takes the lower position but commits after B.
    let mut a = app.pool.begin().await.unwrap();
    let pos_a: i64 = sqlx::query_scalar(insert).bind(Uuid::now_v7()).fetch_one(&mut *a).await.unwrap();
    let mut b = app.pool.begin().await.unwrap();
    let pos_b: i64 = sqlx::query_scalar(insert).bind(Uuid::now_v7()).fetch_one(&mut *b).await.unwrap();
    b.commit().await.unwrap();
    assert!(pos_a < pos_b);
    let spreader = spreader(&app, 100);
    for _ in 0..3 {
        let step = spreader.try_spread_batch().await.unwrap();
        assert!(matches!(step, Step::Spread { events: 0, held: true, .. }), "{step:?}");
    }
    // B is committed, but A (older, still running) holds the horizon: nothing is spread past it yet.
    assert_eq!(jobs(&app.pool).await, vec![]);
    a.commit().await.unwrap();
    spread_all(&spreader).await;
    assert_eq!(jobs(&app.pool).await, vec![(pos_a, subscription), (pos_b, subscription)]);
    app.stop().await;
}

#[tokio::test]
async fn a_writing_transaction_in_another_database_of_the_server_does_not_hold_spreading_back() {
    let app = api_only().await;
    let subscription = insert_subscription(&app.pool, "t", "http://127.0.0.1:1/a", "active").await;
    let mut elsewhere = app.config.database.database_url.expose().clone();
    elsewhere.set_path("/postgres");
    let mut other = sqlx::PgConnection::connect(elsewhere.as_str()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    // An xid older than the event's, still running when the spreader looks.
    sqlx::query("SELECT pg_current_xact_id()").execute(&mut other).await.unwrap();
    let position: i64 = sqlx::query_scalar(
        "INSERT INTO events (id, topic, content_type, body) VALUES ($1, 't', 'text/plain', '') RETURNING position",
    )
    .bind(Uuid::now_v7())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    spread_all(&spreader(&app, 100)).await;
    assert_eq!(jobs(&app.pool).await, vec![(position, subscription)]);
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn events_committed_out_of_order_by_concurrent_transactions_are_all_spread() {
    let app = api_only().await;
    insert_subscription(&app.pool, "t", "http://127.0.0.1:1/a", "active").await;
    let writers: Vec<_> = (0..24)
        .map(|i| {
            let pool = app.pool.clone();
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                for _ in 0..5 {
                    sqlx::query(
                        "INSERT INTO events (id, topic, content_type, body) VALUES ($1, 't', 'text/plain', '')",
                    )
                    .bind(Uuid::now_v7())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                }
                // Commit in an order unrelated to the order positions were taken.
                tokio::time::sleep(Duration::from_millis(((i * 37) % 11) * 15)).await;
                tx.commit().await.unwrap();
            })
        })
        .collect();
    let spreader = spreader(&app, 3);
    let pool = app.pool.clone();
    let reader = tokio::spawn(async move {
        loop {
            let _ = spreader.try_spread_batch().await.unwrap();
            let spread: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox").fetch_one(&pool).await.unwrap();
            if spread == 120 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    for w in writers {
        w.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(20), reader).await.expect("every event is spread").unwrap();
    let positions: Vec<i64> = jobs(&app.pool).await.into_iter().map(|(p, _)| p).collect();
    let all: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM events ORDER BY 1").fetch_all(&app.pool).await.unwrap();
    assert_eq!(positions, all);
    app.stop().await;
}

#[tokio::test]
async fn two_spreaders_over_the_same_log_make_each_job_once() {
    let app = api_only().await;
    for i in 0..4 {
        insert_subscription(&app.pool, "t", &format!("http://127.0.0.1:1/{i}"), "active").await;
    }
    let publisher = {
        let (address, client) = (app.address.clone(), app.client.clone());
        tokio::spawn(async move {
            for round in 0..10 {
                let batch: Vec<_> = (0..20).map(|i| json!({"topic": "t", "body": round * 100 + i})).collect();
                client.post(format!("{address}/events")).json(&json!({ "events": batch })).send().await.unwrap();
            }
        })
    };
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let s = spreader(&app, 5);
            tokio::spawn(async move {
                for _ in 0..400 {
                    s.try_spread_batch().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    publisher.await.unwrap();
    for r in runs {
        r.await.unwrap();
    }
    spread_all(&spreader(&app, 5)).await;
    assert_eq!(jobs(&app.pool).await.len(), 200 * 4);
    app.stop().await;
}

#[tokio::test]
async fn a_spreader_killed_mid_batch_and_restarted_leaves_no_gap_and_no_duplicate() {
    let app = api_only().await;
    for i in 0..3 {
        insert_subscription(&app.pool, "t", &format!("http://127.0.0.1:1/{i}"), "active").await;
    }
    publish_many(&app, "t", 300).await;
    for i in 0..30u64 {
        let s = spreader(&app, 25);
        let task = tokio::spawn(async move { s.try_spread_batch().await });
        tokio::time::sleep(Duration::from_micros(200 + i * 97)).await;
        task.abort();
        let _ = task.await;
    }
    spread_all(&spreader(&app, 25)).await;
    let jobs = jobs(&app.pool).await;
    assert_eq!(jobs.len(), 300 * 3);
    let unique: std::collections::HashSet<_> = jobs.iter().collect();
    assert_eq!(unique.len(), jobs.len());
    app.stop().await;
}

#[tokio::test]
async fn a_dry_run_names_exactly_the_subscriptions_a_publish_then_fans_out_to() {
    let app = spawn_app_with(test_config(), Roles { deliverer: false, ..Roles::ALL }).await;
    insert_subscription(&app.pool, "shop.orders.created", "http://127.0.0.1:1/exact", "active").await;
    insert_subscription(&app.pool, "shop.*", "http://127.0.0.1:1/pattern", "active").await;
    insert_subscription(&app.pool, "shop.orders.created", "http://127.0.0.1:1/ended", "unsubscribed").await;
    insert_subscription(&app.pool, "other", "http://127.0.0.1:1/other", "active").await;
    let dry = app.admin_get("/dry-run?topic=shop.orders.created").await;
    let mut predicted: Vec<String> =
        dry["subscriptions"].as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    predicted.sort();
    assert_eq!(predicted.len(), 2);
    assert_eq!(jobs(&app.pool).await.len(), 0, "a dry run writes nothing");
    app.publish(json!({"topic": "shop.orders.created", "body": 1})).await;
    let mut actual: Vec<String> = eventually(Duration::from_secs(10), "the fan-out", || async {
        let j = jobs(&app.pool).await;
        (j.len() == 2).then(|| j.into_iter().map(|(_, s)| s.to_string()).collect())
    })
    .await;
    actual.sort();
    assert_eq!(actual, predicted);
    let lag = app.admin_get("/spreader").await;
    assert_eq!(lag["behind_events"], 0);
    app.stop().await;
}

#[tokio::test]
async fn the_database_matches_patterns_exactly_as_the_documented_rule_says() {
    let app = spawn_app_with(test_config(), Roles::API).await;
    let patterns = ["*", "a.*", "A.B.*", "a.b.c.*", "https://example.com/feeds.*", "a.b"];
    let mut ids = Vec::new();
    for (n, pattern) in patterns.iter().enumerate() {
        let callback = format!("http://127.0.0.1:1/{n}");
        ids.push((*pattern, insert_subscription(&app.pool, pattern, &callback, "active").await));
    }
    let topics = [
        "a",
        "a.",
        "a.b",
        "A.b",
        "a.b.",
        "a.b.c",
        "a.bc.d",
        "ab.c",
        "a.b.c.d.e",
        "x.a.b",
        "https://example.com/feeds",
        "https://example.com/feeds.",
        "https://Example.com/Feeds.Atom",
        "https://example.com/feeds.rss.extra",
        ".a",
        "..",
    ];
    for topic in topics {
        let mut expected: Vec<Uuid> = ids
            .iter()
            .filter(|(pattern, _)| tidings::topic::Topic::parse(pattern).unwrap().matches(topic))
            .map(|(_, id)| *id)
            .collect();
        expected.sort();
        let matched = tidings::spreader::dry_run(&app.pool, topic, None).await.unwrap();
        assert_eq!(matched, expected, "subscriptions matching the topic {topic:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_event_with_a_fan_out_larger_than_one_transaction_is_spread_in_bounded_steps_without_gaps() {
    let app = api_only().await;
    let mut big = Vec::new();
    for n in 0..22 {
        big.push(insert_subscription(&app.pool, "big", &format!("http://127.0.0.1:1/big/{n}"), "active").await);
    }
    let mut everything = Vec::new();
    for n in 0..3 {
        everything.push(insert_subscription(&app.pool, "*", &format!("http://127.0.0.1:1/all/{n}"), "active").await);
    }
    let small = insert_subscription(&app.pool, "small", "http://127.0.0.1:1/small", "active").await;
    publish_many(&app, "big", 3).await;
    publish_many(&app, "small", 2).await;
    publish_many(&app, "none", 1).await;

    let spreader = spreader(&app, 1000).with_max_jobs(10);
    let (mut steps_with_jobs, mut steps) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match spreader.try_spread_batch().await.unwrap() {
            Step::Spread { jobs, .. } => {
                assert!(jobs <= 10, "a transaction wrote {jobs} jobs, more than the bound of 10");
                steps_with_jobs += usize::from(jobs > 0);
            }
            Step::Busy => panic!("no other spreader runs"),
        }
        steps += 1;
        // Done when the cursor is past the last event and not inside one. Transactions of other tests on the same
        // server can hold the horizon back for a moment, so an empty step alone proves nothing.
        let done: bool = sqlx::query_scalar(
            "SELECT c.subscription_id IS NULL AND NOT EXISTS (
                 SELECT 1 FROM events e WHERE (e.txid, e.position) > (c.txid, c.position))
             FROM spreader_cursor c",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if done {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the spreader never finished ({steps} steps)");
    }

    let positions: Vec<(i64, String)> =
        sqlx::query_as("SELECT position, topic FROM events WHERE kind = 'content' ORDER BY position")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let mut expected = Vec::new();
    for (position, topic) in positions {
        let receivers: Vec<Uuid> = match topic.as_str() {
            "big" => big.iter().chain(&everything).copied().collect(),
            "small" => everything.iter().copied().chain([small]).collect(),
            _ => everything.clone(),
        };
        expected.extend(receivers.into_iter().map(|s| (position, s)));
    }
    expected.sort();
    assert_eq!(expected.len(), 3 * 25 + 2 * 4 + 3);
    assert_eq!(jobs(&app.pool).await, expected, "one job per (event, matching subscription), none missing");
    assert!(steps_with_jobs >= 9, "86 jobs at 10 per transaction take at least 9 steps, not {steps_with_jobs}");
    app.stop().await;
}

#[tokio::test]
async fn wake_ups_asked_for_while_one_is_being_sent_make_one_more_notification_not_one_each() {
    let app = api_only().await;
    let channel = "tidings_test_coalesced";
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen(channel).await.unwrap();
    let wakeups = tidings::wakeup::Coalesced::new(app.pool.clone(), channel);
    for _ in 0..100 {
        wakeups.wake();
    }
    let mut received = 0;
    // Two arrive: the first, and one for the 99 asked for while it was being sent; then nothing more.
    while let Ok(notification) = tokio::time::timeout(Duration::from_millis(500), listener.recv()).await {
        notification.unwrap();
        received += 1;
    }
    assert_eq!(received, 2);
    // A wake-up asked for once all is quiet is sent on its own.
    wakeups.wake();
    let next = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert!(next.is_ok_and(|n| n.is_ok()), "a later wake-up is sent");
    app.stop().await;
}
