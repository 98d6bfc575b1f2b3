//! Receivers: subscribers on 127.0.0.1, one port each (so each is its own callback host to the hub), served by one
//! keep-alive HTTP/1.1 worker thread. They echo the verification challenge, answer every delivery with 204 at
//! once (or after a delay, for the slow subscriber), and count each (event, subscriber) pair they see (one byte
//! per event and subscriber). `GET /feed` on any receiver's port is a topic for thin pings: each fetch answers
//! a body numbered by the fetches so far and stamped with the fetch time. The slow and the rate-limited subscriber are not measured; the limited one keeps the
//! arrival time of each first delivery, to tell the rate it was sent at. Latencies are either all kept, for exact percentiles over a short run, or counted
//! per window in histograms (the soak), which keeps them bounded however long the run.

use std::{
    net::TcpListener,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use actix_web::{dev::ServerHandle, web, App, HttpRequest, HttpResponse, HttpServer};

use crate::windows::Deliveries;

/// Nanoseconds since the benchmark started: the one clock shared by the publisher and the receivers.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A delivery body as the publisher writes it: the event's sequence number and its send time.
pub fn body(seq: u64, sent_ns: u64) -> String {
    format!("{seq} {sent_ns}")
}

fn parse_body(body: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(body).ok()?;
    let (seq, sent) = text.trim().split_once(' ')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

/// What one subscriber saw.
pub struct Subscriber {
    /// Deliveries per event sequence number.
    counts: Mutex<Vec<u8>>,
    unique: AtomicU64,
    pub slow: bool,
    /// Subscribed with a rate limit: its first deliveries' arrival times (ns) are kept.
    pub limited: Option<Mutex<Vec<u64>>>,
}

impl Subscriber {
    /// Counted in throughput, latency and loss (not slow, not limited).
    pub fn measured(&self) -> bool {
        !self.slow && self.limited.is_none()
    }

    /// Arrivals per second at the limited subscriber between its first arrival and `until_ns` (None for others).
    pub fn arrival_rate(&self, until_ns: u64) -> Option<f64> {
        let arrivals = self.limited.as_ref()?.lock().expect("arrivals lock");
        let first = *arrivals.iter().min()?;
        let within = arrivals.iter().filter(|&&t| t <= until_ns).count();
        (until_ns > first).then(|| within.saturating_sub(1) as f64 / ((until_ns - first) as f64 / 1e9))
    }
}

/// Where the publish→delivery latencies of first deliveries to measured subscribers go.
enum Latencies {
    All(Mutex<Vec<u32>>),
    Windowed(Arc<Deliveries>),
}

/// Everything every receiver saw.
pub struct Recorder {
    pub subscribers: Vec<Subscriber>,
    latencies: Latencies,
    last_ns: AtomicU64,
    verified: AtomicU64,
    unparsable: AtomicU64,
}

impl Recorder {
    fn new(count: usize, slow: Option<usize>, limited: Option<usize>, latencies: Latencies) -> Self {
        Self {
            subscribers: (0..count)
                .map(|i| Subscriber {
                    counts: Mutex::new(Vec::new()),
                    unique: AtomicU64::new(0),
                    slow: slow == Some(i),
                    limited: (limited == Some(i)).then(|| Mutex::new(Vec::new())),
                })
                .collect(),
            latencies,
            last_ns: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            unparsable: AtomicU64::new(0),
        }
    }

    fn record(&self, subscriber: usize, seq: u64, sent_ns: u64) {
        let Some(sub) = self.subscribers.get(subscriber) else { return };
        let now = now_ns();
        let first = {
            let mut counts = sub.counts.lock().expect("counts lock");
            let i = seq as usize;
            if counts.len() <= i {
                counts.resize((i + 1).next_power_of_two(), 0);
            }
            counts[i] = counts[i].saturating_add(1);
            counts[i] == 1
        };
        if first {
            sub.unique.fetch_add(1, Ordering::Relaxed);
            if let Some(arrivals) = &sub.limited {
                arrivals.lock().expect("arrivals lock").push(now);
            }
            if sub.measured() {
                let us = (now.saturating_sub(sent_ns) / 1000).min(u32::MAX as u64) as u32;
                match &self.latencies {
                    Latencies::All(all) => all.lock().expect("latency lock").push(us),
                    Latencies::Windowed(windows) => windows.record(sent_ns, now, us),
                }
                self.last_ns.fetch_max(now, Ordering::Relaxed);
            }
        }
    }

    /// Distinct (event, subscriber) pairs seen by the measured subscribers.
    pub fn unique_measured(&self) -> u64 {
        self.subscribers.iter().filter(|s| s.measured()).map(|s| s.unique.load(Ordering::Relaxed)).sum()
    }

    pub fn measured_count(&self) -> usize {
        self.subscribers.iter().filter(|s| s.measured()).count()
    }

    pub fn verified(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// When the last first delivery to a measured subscriber arrived.
    pub fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Relaxed)
    }

    pub fn unparsable(&self) -> u64 {
        self.unparsable.load(Ordering::Relaxed)
    }

    /// Publish→delivery latencies in microseconds (first deliveries to measured subscribers); empty when they
    /// are counted per window instead.
    pub fn latencies_us(&self) -> Vec<u32> {
        match &self.latencies {
            Latencies::All(all) => all.lock().expect("latency lock").clone(),
            Latencies::Windowed(_) => Vec::new(),
        }
    }

    /// (lost, duplicates) over the accepted events, for the measured subscribers.
    pub fn lost_and_duplicates(&self, accepted: impl IntoIterator<Item = u64>) -> (u64, u64) {
        let (mut lost, mut dup) = (0, 0);
        let counts: Vec<_> =
            self.subscribers.iter().filter(|s| s.measured()).map(|s| s.counts.lock().expect("counts lock")).collect();
        for seq in accepted {
            for counts in &counts {
                match counts.get(seq as usize).copied().unwrap_or(0) {
                    0 => lost += 1,
                    n => dup += u64::from(n - 1),
                }
            }
        }
        (lost, dup)
    }
}

pub struct Receivers {
    pub urls: Vec<String>,
    /// The thin-ping topic URL: a feed that numbers each fetch (served on every receiver's port).
    pub feed: String,
    pub recorder: Arc<Recorder>,
    handle: ServerHandle,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    recorder: Arc<Recorder>,
    slow_for: Duration,
    /// Fetches of `/feed` so far: the number the next one's body carries.
    fetches: AtomicU64,
}

/// Starts `count` receivers keeping every latency; subscriber `slow` (if any) answers deliveries only after
/// `slow_for`, and subscriber `limited` (if any) keeps its arrival times.
pub fn start(
    count: usize,
    slow: Option<usize>,
    limited: Option<usize>,
    slow_for: Duration,
) -> anyhow::Result<Receivers> {
    serve(Recorder::new(count, slow, limited, Latencies::All(Mutex::new(Vec::new()))), slow_for)
}

/// Starts `count` fast receivers counting latencies per window in `windows`.
pub fn start_windowed(count: usize, windows: Arc<Deliveries>) -> anyhow::Result<Receivers> {
    serve(Recorder::new(count, None, None, Latencies::Windowed(windows)), Duration::ZERO)
}

fn serve(recorder: Recorder, slow_for: Duration) -> anyhow::Result<Receivers> {
    let recorder = Arc::new(recorder);
    let count = recorder.subscribers.len();
    let listeners = (0..count).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    let urls = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| Ok(format!("http://127.0.0.1:{}/s/{i}", l.local_addr()?.port())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let feed_url = match listeners.first() {
        Some(l) => format!("http://127.0.0.1:{}/feed", l.local_addr()?.port()),
        None => String::new(),
    };
    let shared = Arc::new(Shared { recorder: recorder.clone(), slow_for, fetches: AtomicU64::new(0) });
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name("receivers".into()).spawn(move || {
        let system = actix_web::rt::System::new();
        let result = system.block_on(async move {
            let mut server = HttpServer::new(move || {
                App::new()
                    .app_data(web::Data::from(shared.clone()))
                    .route("/feed", web::get().to(feed))
                    .route("/s/{i}", web::get().to(verify))
                    .route("/s/{i}", web::post().to(deliver))
            })
            .workers(1)
            .backlog(4096)
            .max_connections(100_000)
            .keep_alive(Duration::from_secs(120))
            .disable_signals();
            for listener in listeners {
                server = server.listen(listener)?;
            }
            let server = server.run();
            let _ = tx.send(server.handle());
            server.await
        });
        if let Err(e) = result {
            eprintln!("receivers stopped: {e}");
        }
    })?;
    let handle = rx.recv_timeout(Duration::from_secs(10))?;
    Ok(Receivers { urls, feed: feed_url, recorder, handle, thread: Some(thread) })
}

impl Receivers {
    pub async fn stop(mut self) {
        self.handle.stop(false).await;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

fn index(req: &HttpRequest) -> usize {
    req.match_info().get("i").and_then(|i| i.parse().ok()).unwrap_or(usize::MAX)
}

/// The thin-ping topic: one numbered body per fetch, in the form the publisher's events take, so the receivers
/// count fetched events as they count published ones (latency then runs from the fetch).
async fn feed(shared: web::Data<Shared>) -> HttpResponse {
    let seq = shared.fetches.fetch_add(1, Ordering::Relaxed);
    HttpResponse::Ok().content_type("text/plain").body(body(seq, now_ns()))
}

async fn verify(shared: web::Data<Shared>, req: HttpRequest) -> HttpResponse {
    let challenge = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "hub.challenge")
        .map(|(_, v)| v.into_owned());
    match challenge {
        Some(challenge) => {
            shared.recorder.verified.fetch_add(1, Ordering::Relaxed);
            HttpResponse::Ok().body(challenge)
        }
        None => HttpResponse::NotFound().finish(),
    }
}

async fn deliver(shared: web::Data<Shared>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let i = index(&req);
    match parse_body(&body) {
        Some((seq, sent)) => shared.recorder.record(i, seq, sent),
        None => {
            shared.recorder.unparsable.fetch_add(1, Ordering::Relaxed);
        }
    }
    if shared.recorder.subscribers.get(i).is_some_and(|s| s.slow) {
        actix_web::rt::time::sleep(shared.slow_for).await;
    }
    HttpResponse::NoContent().finish()
}
