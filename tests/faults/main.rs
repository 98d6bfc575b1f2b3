//! The fault suite: the real binaries (`tidings serve`, `callbacks-spreader`, `callback-deliver`) as separate OS
//! processes against a fresh database, subscribers on 127.0.0.1 and a steady publish load. Each test injects one
//! fault, then accounts for every acknowledged event × active subscription: delivered (duplicates counted) or dead
//! with its attempts recorded. Nothing may be lost.

mod harness;
#[allow(dead_code)]
#[path = "../api/receiver.rs"]
mod receiver;
mod secrets;

use std::{sync::Arc, time::Duration};

use harness::{account, eventually, shared_server, Accounting, Hub, Load, PrivateCluster, Role};
use receiver::Receiver;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use uuid::Uuid;

const TOPIC: &str = "faults.topic";
const LOAD_EVERY: Duration = Duration::from_millis(15);
const SETTLE: Duration = Duration::from_secs(60);

fn assert_nothing_lost(fault: &str, accounting: &Accounting) {
    println!(
        "{fault}: {} event×subscription pairs: {} delivered, {} dead, {} extra receipts (duplicates, and attempts the \
         subscriber refused), {} lost",
        accounting.expected,
        accounting.delivered,
        accounting.dead,
        accounting.duplicates,
        accounting.lost.len()
    );
    assert!(accounting.expected > 0, "{fault}: the load published nothing");
    assert!(accounting.lost.is_empty(), "{fault}: lost:\n{}", accounting.lost.join("\n"));
    assert_eq!(accounting.delivered + accounting.dead, accounting.expected, "{fault}");
}

/// Two subscribers on the load's topic; one answers a little slowly so deliveries are in flight at any moment.
async fn two_subscribers(hub: &Hub) -> (Receiver, Uuid, Receiver, Uuid) {
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    a.set_delay(Duration::from_millis(20));
    let sa = hub.subscribe(&a, TOPIC, "/a").await;
    let sb = hub.subscribe(&b, TOPIC, "/b").await;
    (a, sa, b, sb)
}

async fn until_delivering(load: &Load, receiver: &Receiver) {
    eventually(Duration::from_secs(30), "the load to be flowing", || async {
        (load.accepted_so_far() > 40 && receiver.deliveries().len() > 10).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliverer_killed_mid_batch_and_restarted_loses_nothing() {
    let hub = Arc::new(Hub::new(&shared_server(), &[]).await);
    let _api = hub.spawn_api().await;
    let _spreader = hub.spawn(Role::Spreader);
    let mut deliverer = hub.spawn(Role::Deliverer);
    let (a, sa, b, sb) = two_subscribers(&hub).await;
    let load = Load::start(hub.clone(), TOPIC, LOAD_EVERY);
    until_delivering(&load, &a).await;
    deliverer.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _deliverer = hub.spawn(Role::Deliverer);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (accepted, _) = load.stop().await;
    let accounting = account(&hub, &accepted, &[(sa, &a), (sb, &b)], SETTLE).await;
    assert_nothing_lost("deliverer killed", &accounting);
    assert_eq!(accounting.dead, 0, "every subscriber was up: nothing should be dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spreader_killed_mid_batch_and_restarted_leaves_no_gap_and_no_duplicate_job() {
    let hub = Arc::new(Hub::new(&shared_server(), &[("TIDINGS_SPREAD_BATCH", "5")]).await);
    let _api = hub.spawn_api().await;
    let mut spreader = hub.spawn(Role::Spreader);
    let _deliverer = hub.spawn(Role::Deliverer);
    let (a, sa, b, sb) = two_subscribers(&hub).await;
    let load = Load::start(hub.clone(), TOPIC, LOAD_EVERY);
    until_delivering(&load, &a).await;
    spreader.kill9().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _spreader = hub.spawn(Role::Spreader);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (accepted, _) = load.stop().await;
    let accounting = account(&hub, &accepted, &[(sa, &a), (sb, &b)], SETTLE).await;
    assert_nothing_lost("spreader killed", &accounting);
    let (events, jobs, distinct): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE kind = 'content'),
                (SELECT count(*) FROM outbox WHERE kind = 'deliver'),
                (SELECT count(DISTINCT (event_position, subscription_id)) FROM outbox WHERE kind = 'deliver')",
    )
    .fetch_one(&hub.pool)
    .await
    .unwrap();
    assert_eq!(jobs, events * 2, "one job per event × subscription: no gap");
    assert_eq!(jobs, distinct, "no duplicate job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_killed_while_publishes_are_in_flight_keeps_every_acknowledged_event() {
    let hub = Arc::new(Hub::new(&shared_server(), &[]).await);
    let mut api = hub.spawn_api().await;
    let _spreader = hub.spawn(Role::Spreader);
    let _deliverer = hub.spawn(Role::Deliverer);
    let (a, sa, b, sb) = two_subscribers(&hub).await;
    // Several publishers at once, so some requests are always in flight when the API dies.
    let loads: Vec<Load> = (0..4).map(|_| Load::start(hub.clone(), TOPIC, Duration::from_millis(5))).collect();
    until_delivering(&loads[0], &a).await;
    api.kill9().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _api = hub.spawn_api().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut accepted = Vec::new();
    let mut attempted = 0;
    for load in loads {
        let (ids, tried) = load.stop().await;
        accepted.extend(ids);
        attempted += tried;
    }
    println!("API killed: {} of {attempted} publishes acknowledged", accepted.len());
    assert!(accepted.len() < attempted, "some publishes should have failed while the API was down");
    let accounting = account(&hub, &accepted, &[(sa, &a), (sb, &b)], SETTLE).await;
    assert_nothing_lost("API killed", &accounting);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_load_is_survived_without_restarting_any_process() {
    let cluster = PrivateCluster::start();
    let hub = Arc::new(Hub::new(&cluster.url(), &[]).await);
    let mut api = hub.spawn_api().await;
    let mut spreader = hub.spawn(Role::Spreader);
    let mut deliverer = hub.spawn(Role::Deliverer);
    let (a, sa, b, sb) = two_subscribers(&hub).await;
    let load = Load::start(hub.clone(), TOPIC, LOAD_EVERY);
    until_delivering(&load, &a).await;
    let before = load.accepted_so_far();
    tokio::task::block_in_place(|| cluster.restart());
    // Publishing works again through the same processes.
    eventually(Duration::from_secs(30), "publishes to be acknowledged again", || async {
        (load.accepted_so_far() > before + 40).then_some(())
    })
    .await;
    let (accepted, attempted) = load.stop().await;
    println!("PostgreSQL restarted: {} of {attempted} publishes acknowledged", accepted.len());
    let accounting = account(&hub, &accepted, &[(sa, &a), (sb, &b)], SETTLE).await;
    for process in [&mut api, &mut spreader, &mut deliverer] {
        assert!(process.is_running(), "{:?} exited after the database restart", process.role);
    }
    assert_nothing_lost("PostgreSQL restarted", &accounting);
    assert_eq!(accounting.dead, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_down_for_a_while_receives_its_backlog_by_the_retry_schedule() {
    let hub = Arc::new(Hub::new(&shared_server(), &[]).await);
    let _api = hub.spawn_api().await;
    let _spreader = hub.spawn(Role::Spreader);
    let _deliverer = hub.spawn(Role::Deliverer);
    let (a, sa, b, sb) = two_subscribers(&hub).await;
    let load = Load::start(hub.clone(), TOPIC, LOAD_EVERY);
    until_delivering(&load, &b).await;
    b.set_status(503);
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.set_status(204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (accepted, _) = load.stop().await;
    let accounting = account(&hub, &accepted, &[(sa, &a), (sb, &b)], SETTLE).await;
    assert_nothing_lost("subscriber down", &accounting);
    assert_eq!(accounting.dead, 0, "the retry schedule outlasts the outage");
    let retried: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE subscription_id = $1 AND kind = 'deliver' AND attempts > 1 AND state = 'delivered'",
    )
    .bind(sb)
    .fetch_one(&hub.pool)
    .await
    .unwrap();
    assert!(retried > 0, "the backlog should have arrived by retries");
}

/// A subscriber that verifies its subscription, then accepts every delivery's connection and never answers.
async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = vec![0u8; 16 * 1024];
            let n = socket.read(&mut buffer).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buffer[..n]).into_owned();
            if head.starts_with("GET ") {
                let target = head.split_whitespace().nth(1).unwrap_or("/");
                let url = url::Url::parse(&format!("http://x{target}")).unwrap();
                let challenge = url
                    .query_pairs()
                    .find(|(k, _)| k == "hub.challenge")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{challenge}",
                    challenge.len()
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            } else {
                held.push(socket);
            }
        }
    });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_answers_times_out_without_starving_the_others() {
    let hub = Arc::new(
        Hub::new(
            &shared_server(),
            &[
                ("TIDINGS_DELIVERY_TIMEOUT_SECONDS", "1"),
                ("TIDINGS_RETRY_SCHEDULE", "100ms,200ms"),
                ("TIDINGS_DELIVERY_CONCURRENCY", "32"),
                ("TIDINGS_DELIVERY_HOST_CONCURRENCY", "16"),
            ],
        )
        .await,
    );
    let _api = hub.spawn_api().await;
    let _spreader = hub.spawn(Role::Spreader);
    let _deliverer = hub.spawn(Role::Deliverer);
    let healthy = Receiver::start().await;
    let silent_base = black_hole().await;
    let silent = Receiver::start().await; // only its URL shape is borrowed below; it receives nothing
    let sh = hub.subscribe(&healthy, TOPIC, "/healthy").await;
    let callback = format!("{silent_base}/silent");
    let response = hub
        .client
        .post(hub.url("/"))
        .form(&[("hub.mode", "subscribe"), ("hub.topic", TOPIC), ("hub.callback", callback.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let ss: Uuid = eventually(Duration::from_secs(30), "the silent subscription to be active", || async {
        sqlx::query_scalar("SELECT id FROM subscriptions WHERE callback = $1 AND state = 'active'")
            .bind(&callback)
            .fetch_optional(&hub.pool)
            .await
            .ok()
            .flatten()
    })
    .await;
    let load = Load::start(hub.clone(), TOPIC, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (accepted, _) = load.stop().await;
    // The healthy subscriber has everything within moments, while the silent one's deliveries are still hanging.
    eventually(Duration::from_secs(10), "the healthy subscriber to have every event", || async {
        let ids: std::collections::HashSet<String> = healthy
            .deliveries()
            .iter()
            .filter_map(|d| serde_json::from_slice::<serde_json::Value>(&d.body).ok())
            .filter_map(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
            .collect();
        accepted.iter().all(|id| ids.contains(&id.to_string())).then_some(())
    })
    .await;
    let accounting = account(&hub, &accepted, &[(sh, &healthy), (ss, &silent)], SETTLE).await;
    assert_nothing_lost("subscriber never answers", &accounting);
    assert_eq!(accounting.delivered, accepted.len(), "the healthy subscriber got every event");
    assert_eq!(accounting.dead, accepted.len(), "every delivery to the silent subscriber timed out and is dead");
}
