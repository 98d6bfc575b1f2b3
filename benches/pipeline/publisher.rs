//! The publisher: keep-alive HTTP/1.1 clients that send numbered events, each body carrying its send time, either
//! to the hub (`POST /events/raw`) or straight at the receivers (the ceiling), at maximum rate (a fixed number of
//! requests in flight) or at a fixed rate.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
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
}

#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub duration: Duration,
    /// Events per second; None for as fast as `concurrency` requests in flight allow.
    pub rate: Option<f64>,
    pub concurrency: usize,
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

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .pool_idle_timeout(Duration::from_secs(120))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .expect("an HTTP client")
}

async fn send(client: &reqwest::Client, target: &Target, seq: u64) -> bool {
    let payload = body(seq, now_ns());
    match target {
        Target::Hub { url } => {
            let response = client.post(url).header("content-type", "text/plain").body(payload).send().await;
            matches!(response, Ok(r) if r.status().as_u16() == 201)
        }
        Target::Direct { urls } => {
            let sends = urls.iter().map(|u| {
                let request = client.post(u).header("content-type", "text/plain").body(payload.clone()).send();
                async move { matches!(request.await, Ok(r) if r.status().is_success()) }
            });
            futures_util::future::join_all(sends).await.into_iter().all(|ok| ok)
        }
    }
}

/// Publishes for `load.duration` and returns what was accepted.
pub async fn run(client: reqwest::Client, target: Target, load: Load) -> Published {
    let target = Arc::new(target);
    let next = Arc::new(AtomicU64::new(0));
    let start_ns = now_ns();
    let end_at = start_ns + load.duration.as_nanos() as u64;
    let mut tasks: JoinSet<(Vec<u64>, u64)> = JoinSet::new();
    let mut published = Published { start_ns, ..Default::default() };
    let fold = |published: &mut Published, joined: Result<(Vec<u64>, u64), tokio::task::JoinError>| {
        if let Ok((accepted, failed)) = joined {
            published.accepted.extend(accepted);
            published.failed += failed;
        }
    };
    match load.rate {
        None => {
            for _ in 0..load.concurrency {
                let (client, target, next) = (client.clone(), target.clone(), next.clone());
                tasks.spawn(async move {
                    let (mut accepted, mut failed) = (Vec::new(), 0);
                    while now_ns() < end_at {
                        let seq = next.fetch_add(1, Ordering::Relaxed);
                        if send(&client, &target, seq).await {
                            accepted.push(seq);
                        } else {
                            failed += 1;
                        }
                    }
                    (accepted, failed)
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
                let (client, target) = (client.clone(), target.clone());
                tasks.spawn(async move {
                    let ok = send(&client, &target, seq).await;
                    drop(permit);
                    if ok {
                        (vec![seq], 0)
                    } else {
                        (Vec::new(), 1)
                    }
                });
                while let Some(joined) = tasks.try_join_next() {
                    fold(&mut published, joined);
                }
            }
        }
    }
    while let Some(joined) = tasks.join_next().await {
        fold(&mut published, joined);
    }
    published.end_ns = now_ns();
    published.accepted.sort_unstable();
    published
}
