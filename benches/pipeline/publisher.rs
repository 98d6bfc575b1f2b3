//! The publisher: keep-alive HTTP/1.1 clients that send numbered events, each body carrying its send time, either
//! to the hub (`POST /events/raw`) or straight at the receivers (the ceiling), at maximum rate (a fixed number of
//! requests in flight) or at a fixed rate. Each request is reported to a [`Ledger`] when it is sent and when it is
//! answered; [`run`] keeps every accepted sequence number, the soak keeps counts per window.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{sync::Semaphore, task::JoinSet};

use crate::receiver::{body, now_ns};

#[derive(Debug, Clone)]
pub enum Target {
    /// `POST {api}/events/raw?topic=...`; accepted on 201.
    Hub { url: String },
    /// The same body POSTed to every URL; accepted when all answer 2xx.
    Direct { urls: Vec<String> },
    /// A WebSub thin ping, `POST {api}/` with `hub.mode=publish&hub.url={topic}`; accepted on 202 (the hub then
    /// fetches the topic).
    ThinPing { url: String, topic: String },
}

#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub duration: Duration,
    /// Events per second; None for as fast as `concurrency` requests in flight allow. A rate that cannot be kept
    /// is not made up for after `duration`: publishing stops then either way (give or take [`LATE`]).
    pub rate: Option<f64>,
    pub concurrency: usize,
}

/// How late after the end of a fixed-rate run an event may still go out: the timer wakes the last ones a little
/// after their time even when the publisher keeps up.
const LATE: Duration = Duration::from_millis(100);

/// Where the publisher reports each request.
pub trait Ledger: Send + Sync + 'static {
    /// Event `seq` is about to be sent, stamped `sent_ns`.
    fn sent(&self, _seq: u64, _sent_ns: u64) {}
    /// Event `seq`, sent at `sent_ns`, was accepted (or refused, or failed).
    fn answered(&self, seq: u64, sent_ns: u64, accepted: bool);
}

#[derive(Debug, Default)]
pub struct Published {
    /// Sequence numbers of accepted events.
    pub accepted: Vec<u64>,
    pub failed: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Published {
    pub fn accepted_per_second(&self) -> f64 {
        self.accepted.len() as f64 / ((self.end_ns - self.start_ns) as f64 / 1e9)
    }
}

/// The ledger of [`run`]: every accepted sequence number.
#[derive(Default)]
struct Collect {
    accepted: Mutex<Vec<u64>>,
    failed: AtomicU64,
}

impl Ledger for Collect {
    fn answered(&self, seq: u64, _sent_ns: u64, accepted: bool) {
        if accepted {
            self.accepted.lock().expect("accepted lock").push(seq);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(120))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client")
}

async fn send(client: &reqwest::Client, target: &Target, seq: u64, ledger: &dyn Ledger) {
    let sent_ns = now_ns();
    ledger.sent(seq, sent_ns);
    let payload = body(seq, sent_ns);
    let accepted = match target {
        Target::Hub { url } => {
            let response = client.post(url).header("content-type", "text/plain").body(payload).send().await;
            matches!(response, Ok(r) if r.status().as_u16() == 201)
        }
        Target::ThinPing { url, topic } => {
            let form = [("hub.mode", "publish"), ("hub.url", topic.as_str())];
            let response = client.post(url).form(&form).send().await;
            matches!(response, Ok(r) if r.status().as_u16() == 202)
        }
        Target::Direct { urls } => {
            let sends = urls.iter().map(|u| {
                let request = client.post(u).header("content-type", "text/plain").body(payload.clone()).send();
                async move { matches!(request.await, Ok(r) if r.status().is_success()) }
            });
            futures_util::future::join_all(sends).await.into_iter().all(|ok| ok)
        }
    };
    ledger.answered(seq, sent_ns, accepted);
}

/// Publishes for `load.duration` and returns what was accepted.
pub async fn run(client: reqwest::Client, target: Target, load: Load) -> Published {
    let ledger = Arc::new(Collect::default());
    let (start_ns, end_ns) = drive(client, target, load, ledger.clone()).await;
    let mut accepted = std::mem::take(&mut *ledger.accepted.lock().expect("accepted lock"));
    accepted.sort_unstable();
    Published { accepted, failed: ledger.failed.load(Ordering::Relaxed), start_ns, end_ns }
}

/// Publishes for `load.duration`, reporting every request to `ledger`, and returns when publishing started and
/// when the last answer came.
pub async fn drive(client: reqwest::Client, target: Target, load: Load, ledger: Arc<dyn Ledger>) -> (u64, u64) {
    let target = Arc::new(target);
    let start_ns = now_ns();
    let end_at = start_ns + load.duration.as_nanos() as u64;
    let mut tasks: JoinSet<()> = JoinSet::new();
    match load.rate {
        None => {
            let next = Arc::new(AtomicU64::new(0));
            for _ in 0..load.concurrency {
                let (client, target, next, ledger) = (client.clone(), target.clone(), next.clone(), ledger.clone());
                tasks.spawn(async move {
                    while now_ns() < end_at {
                        send(&client, &target, next.fetch_add(1, Ordering::Relaxed), &*ledger).await;
                    }
                });
            }
        }
        Some(rate) => {
            let permits = Arc::new(Semaphore::new(load.concurrency));
            let start = tokio::time::Instant::now();
            for seq in 0.. {
                let offset = Duration::from_secs_f64(seq as f64 / rate);
                if offset >= load.duration {
                    break;
                }
                tokio::time::sleep_until(start + offset).await;
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                if now_ns() >= end_at + LATE.as_nanos() as u64 {
                    break;
                }
                let (client, target, ledger) = (client.clone(), target.clone(), ledger.clone());
                tasks.spawn(async move {
                    send(&client, &target, seq, &*ledger).await;
                    drop(permit);
                });
                while tasks.try_join_next().is_some() {}
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    (start_ns, now_ns())
}
