//! Scale figures: matching and subscribing with a million subscriptions, one event fanned out to a hundred
//! thousand subscribers, and spreading to a hundred thousand subscriptions with and without content filters on
//! a tenth of them.
//!
//!     cargo bench --bench scale                      # every part, the sizes below
//!     cargo bench --bench scale -- --subscriptions 1000000 --fan-out 100000 --filtered 100000
//!
//! Each part runs against a fresh database on the server of `DATABASE_URL` (default: local PostgreSQL). The
//! subscriptions are written straight to the table as active (verifying a million callbacks would measure the
//! subscribers, not the hub); everything measured then goes through Tidings itself: the hub's HTTP API, the
//! spreader's SQL, and for the fan-out a separate `tidings all` process delivering to real HTTP receivers on
//! 127.0.0.1.

use std::{
    net::TcpListener,
    process::Stdio,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use sqlx::{postgres::PgPoolOptions, PgPool};
use tidings::spreader::{Spreader, Step};

const ADMIN_TOKEN: &str = "scale-admin-token";

struct Args {
    subscriptions: i64,
    fan_out: i64,
    filtered: i64,
    server: String,
}

fn args() -> Args {
    let mut parsed = Args {
        subscriptions: 1_000_000,
        fan_out: 100_000,
        filtered: 100_000,
        server: std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> i64 {
            it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--subscriptions" => parsed.subscriptions = value("--subscriptions"),
            "--fan-out" => parsed.fan_out = value("--fan-out"),
            "--filtered" => parsed.filtered = value("--filtered"),
            "--bench" => {}
            other => panic!("unknown argument {other}; use --subscriptions N --fan-out N --filtered N"),
        }
    }
    parsed
}

fn database_url(server: &str, name: &str) -> String {
    let mut url: url::Url = server.parse().expect("DATABASE_URL is a URL");
    url.set_path(name);
    url.to_string()
}

async fn fresh_database(server: &str, label: &str) -> (String, PgPool) {
    let url = database_url(server, &format!("tidings_scale_{label}_{}", uuid::Uuid::new_v4().simple()));
    tidings::db::create_database_if_missing(&url).await.expect("create the database");
    // The hub's own connection settings, so the figures are the plans Tidings runs.
    let options = tidings::db::connect_options(&url).expect("a PostgreSQL URL");
    let pool = PgPoolOptions::new().max_connections(8).connect_with(options).await.expect("connect");
    tidings::db::migrate(&pool).await.expect("migrate");
    (url, pool)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
        samples.len()
    )
}

/// A tiny xorshift generator: which topics to probe need not be cryptographic, only spread out and repeatable.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: i64) -> i64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as i64
    }
}

/// Part 1: a million subscriptions — 90% exact topics (nine subscribers per feed URL), 10% patterns (ten per
/// pattern) — then subscribe through the API, match exact and pattern topics, and spread a batch.
async fn many_subscriptions(args: &Args) {
    let total = args.subscriptions;
    let exact = total * 9 / 10;
    let patterns = total - exact;
    println!("## {total} subscriptions ({exact} exact, {patterns} patterns)");
    let (url, pool) = fresh_database(&args.server, "subs").await;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO subscriptions (id, topic, callback, pattern_prefix, callback_host, state, lease_seconds, expires_at)
         SELECT gen_random_uuid(), 'https://example.com/feeds/' || (n % ($1 / 9 + 1)),
                'http://127.0.0.1:9/hook/' || n, NULL, '127.0.0.1:9', 'active', 864000, now() + interval '10 days'
         FROM generate_series(1, $1) n",
    )
    .bind(exact)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO subscriptions (id, topic, callback, pattern_prefix, callback_host, state, lease_seconds, expires_at)
         SELECT gen_random_uuid(), 'Orders.R' || (n % ($1 / 10 + 1)) || '.*', 'http://127.0.0.1:9/pattern/' || n,
                'orders.r' || (n % ($1 / 10 + 1)) || '.', '127.0.0.1:9', 'active', 864000, now() + interval '10 days'
         FROM generate_series(1, $1) n",
    )
    .bind(patterns)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE subscriptions").execute(&pool).await.unwrap();
    println!("written in {:.1} s", started.elapsed().as_secs_f64());

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut exact_times, mut pattern_times) = (Vec::new(), Vec::new());
    for _ in 0..2000 {
        let topic = format!("https://example.com/feeds/{}", rng.below(exact / 9 + 1));
        let t = Instant::now();
        let matched = tidings::spreader::dry_run(&pool, &topic, None).await.unwrap();
        exact_times.push(t.elapsed());
        assert!(!matched.is_empty(), "{topic} has subscribers");
        let topic = format!("orders.r{}.created", rng.below(patterns / 10 + 1));
        let t = Instant::now();
        let matched = tidings::spreader::dry_run(&pool, &topic, None).await.unwrap();
        pattern_times.push(t.elapsed());
        assert!(!matched.is_empty(), "{topic} has pattern subscribers");
    }
    println!("match an exact topic (9 subscribers): {}", summary(exact_times));
    println!("match a topic through patterns (10 subscribers): {}", summary(pattern_times));

    // Subscribing through the hub's API: the request is checked, stored and answered 202.
    let mut config = tidings::config::Config::defaults();
    config.database.database_url = tidings::config::Secret(url.parse().unwrap());
    config.database.migrate_on_start = false;
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    config.hub.callback_allow_private = true;
    let running = tidings::app::start(config, tidings::app::Roles::API).await.expect("Tidings starts");
    let hub = format!("http://127.0.0.1:{}/", running.api_port.unwrap());
    let client = reqwest::Client::new();
    let mut subscribe_times = Vec::new();
    for n in 0..2000 {
        let topic = format!("https://example.com/feeds/{}", rng.below(exact / 9 + 1));
        let callback = format!("http://127.0.0.1:9/new/{n}");
        let form = [("hub.mode", "subscribe"), ("hub.topic", &topic), ("hub.callback", &callback)];
        let t = Instant::now();
        let response = client.post(&hub).form(&form).send().await.unwrap();
        subscribe_times.push(t.elapsed());
        assert_eq!(response.status(), 202, "subscribe answered {}", response.status());
    }
    println!("subscribe through POST / (202): {}", summary(subscribe_times));

    // Spreading: 1,000 events over random feeds and patterns, one spreader batch at a time.
    let events: Vec<_> = (0..1000)
        .map(|n| {
            let topic = if n % 2 == 0 {
                format!("https://example.com/feeds/{}", rng.below(exact / 9 + 1))
            } else {
                format!("orders.r{}.created", rng.below(patterns / 10 + 1))
            };
            serde_json::json!({ "topic": topic, "body": n })
        })
        .collect();
    let response =
        client.post(format!("{hub}events")).json(&serde_json::json!({ "events": events })).send().await.unwrap();
    assert!(response.status().is_success(), "publish answered {}", response.status());
    running.stop();
    let _ = tokio::time::timeout(Duration::from_secs(10), running.wait()).await;
    let spreader = Spreader::new(pool.clone(), 1000);
    let t = Instant::now();
    let jobs = spread_everything(&spreader).await;
    let took = t.elapsed();
    println!(
        "spread 1000 events into {jobs} jobs in {:.1} ms ({:.0} jobs/s)",
        took.as_secs_f64() * 1e3,
        jobs as f64 / took.as_secs_f64()
    );
    pool.close().await;
}

/// Spreading the same events to `--filtered` subscriptions of one topic, first with no filters, then with a
/// content filter on a tenth of them (half the events pass it), one spreader batch at a time, in one run.
async fn filtered_spreading(args: &Args) {
    const EVENTS: i64 = 10;
    let total = args.filtered;
    println!("## spreading to {total} subscriptions, without and with filters on 10 %");
    let (_, pool) = fresh_database(&args.server, "filters").await;
    let now = chrono::Utc::now();
    tidings::partitions::ensure(&pool, &tidings::config::Config::defaults().partitions, now, now).await.unwrap();
    for (topic, filtered) in [("plain", 0), ("filtered", total / 10)] {
        sqlx::query(
            "INSERT INTO subscriptions (id, topic, callback, pattern_prefix, callback_host, state, lease_seconds,
                                        expires_at, filter, filter_path)
             SELECT gen_random_uuid(), $1, 'http://127.0.0.1:9/' || $1 || '/' || n, NULL, '127.0.0.1:9', 'active',
                    864000, now() + interval '10 days',
                    CASE WHEN n <= $3 THEN '{\"field\": \"region\", \"eq\": \"eu\"}'::jsonb END,
                    CASE WHEN n <= $3 THEN '$.\"body\".\"region\" == \"eu\"'::jsonpath END
             FROM generate_series(1, $2) n",
        )
        .bind(topic)
        .bind(total)
        .bind(filtered)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::query("ANALYZE subscriptions").execute(&pool).await.unwrap();
    let spreader = Spreader::new(pool.clone(), 1000);
    for (topic, filtered) in [("plain", 0), ("filtered", total / 10)] {
        for n in 0..EVENTS {
            let region = if n % 2 == 0 { "eu" } else { "us" };
            let event = tidings::events::NewEvent {
                id: uuid::Uuid::now_v7(),
                id_from_publisher: false,
                topic: tidings::topic::Topic::parse(topic).unwrap(),
                content_type: "application/json".into(),
                body: serde_json::to_vec(&serde_json::json!({ "region": region, "n": n })).unwrap(),
                tags: Vec::new(),
                group_id: None,
            };
            tidings::events::append(&pool, &[event]).await.unwrap();
        }
        let t = Instant::now();
        let jobs = spread_everything(&spreader).await;
        let took = t.elapsed().as_secs_f64();
        let expected = EVENTS * (total - filtered) + (EVENTS / 2) * filtered;
        assert_eq!(jobs, expected, "every matching subscription, and only those");
        println!(
            "{topic}: {filtered} filtered, {EVENTS} events into {jobs} jobs in {:.2} s ({:.0} jobs/s, {:.0} subscriptions \
             considered/s)",
            took,
            jobs as f64 / took,
            (EVENTS * total) as f64 / took
        );
    }
    pool.close().await;
}

/// Spreads batch after batch until the log has nothing left to spread; the jobs written.
async fn spread_everything(spreader: &Spreader) -> i64 {
    let mut jobs = 0;
    loop {
        match spreader.try_spread_batch().await.unwrap() {
            Step::Spread { events: 0, .. } => return jobs,
            Step::Spread { jobs: j, .. } => jobs += j,
            Step::Busy => unreachable!("one spreader"),
        }
    }
}

/// Receivers on 127.0.0.1 that count deliveries per subscriber (the path's last number) and answer 204 at once.
async fn start_receivers(count: usize, subscribers: usize) -> (Vec<u16>, Arc<Vec<AtomicU32>>, Arc<AtomicU64>) {
    let seen: Arc<Vec<AtomicU32>> = Arc::new((0..subscribers).map(|_| AtomicU32::new(0)).collect());
    let total = Arc::new(AtomicU64::new(0));
    let mut ports = Vec::new();
    for _ in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        ports.push(listener.local_addr().unwrap().port());
        let (seen, total) = (seen.clone(), total.clone());
        let server = HttpServer::new(move || {
            let (seen, total) = (seen.clone(), total.clone());
            App::new().default_service(web::to(move |req: HttpRequest, _body: web::Bytes| {
                let (seen, total) = (seen.clone(), total.clone());
                async move {
                    if let Some(n) = req.path().rsplit('/').next().and_then(|n| n.parse::<usize>().ok()) {
                        if let Some(slot) = seen.get(n) {
                            slot.fetch_add(1, Ordering::Relaxed);
                            total.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    HttpResponse::NoContent().finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
    }
    (ports, seen, total)
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Part 2: one event to `fan_out` subscribers, spread and delivered by a separate `tidings all` process.
async fn big_fan_out(args: &Args) {
    let fan_out = args.fan_out;
    println!("## one event to {fan_out} subscribers");
    let (url, pool) = fresh_database(&args.server, "fanout").await;
    let (ports, seen, total) = start_receivers(10, fan_out as usize).await;
    sqlx::query(
        "INSERT INTO subscriptions (id, topic, callback, pattern_prefix, callback_host, state, lease_seconds, expires_at)
         SELECT gen_random_uuid(), 'https://example.com/big', 'http://127.0.0.1:' || ($2::int[])[n % 10 + 1] || '/s/' || n,
                NULL, '127.0.0.1:' || ($2::int[])[n % 10 + 1], 'active', 864000, now() + interval '10 days'
         FROM generate_series(0, $1 - 1) n",
    )
    .bind(fan_out)
    .bind(ports.iter().map(|&p| p as i32).collect::<Vec<_>>())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE subscriptions").execute(&pool).await.unwrap();

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut hub = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("all")
        .env("DATABASE_URL", &url)
        .env("TIDINGS_LISTEN", format!("127.0.0.1:{port}"))
        .env("TIDINGS_CALLBACK_ALLOW_PRIVATE", "true")
        .env("TIDINGS_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TIDINGS_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start tidings");
    let pid = hub.id().unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = Instant::now();
    while client.get(format!("{base}/readyz")).send().await.map(|r| !r.status().is_success()).unwrap_or(true) {
        assert!(ready.elapsed() < Duration::from_secs(30), "tidings did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let response = client
        .post(format!("{base}/events"))
        .json(&serde_json::json!({ "topic": "https://example.com/big", "body": { "hello": "everyone" } }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "publish answered {}", response.status());
    let mut spread_at = None;
    let deadline = Duration::from_secs(600);
    while total.load(Ordering::Relaxed) < fan_out as u64 {
        if spread_at.is_none() {
            let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE kind = 'deliver'")
                .fetch_one(&pool)
                .await
                .unwrap();
            if jobs == fan_out {
                spread_at = Some(started.elapsed());
            }
        }
        assert!(started.elapsed() < deadline, "not delivered within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered_in = started.elapsed();
    let spread_in = spread_at.unwrap_or(delivered_in);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let duplicates: u64 = seen.iter().map(|c| c.load(Ordering::Relaxed).saturating_sub(1) as u64).sum();
    let missing = seen.iter().filter(|c| c.load(Ordering::Relaxed) == 0).count();
    let rss = peak_rss_mb(pid).unwrap_or(f64::NAN);
    println!("spread into {fan_out} jobs in {:.2} s", spread_in.as_secs_f64());
    println!(
        "delivered to every subscriber in {:.2} s ({:.0} deliveries/s); missing {missing}, duplicates {duplicates}",
        delivered_in.as_secs_f64(),
        fan_out as f64 / delivered_in.as_secs_f64()
    );
    println!("peak RSS of the tidings process (API, spreader and deliverer): {rss:.1} MB");
    let _ = hub.start_kill();
    let _ = hub.wait().await;
    pool.close().await;
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        println!(
            "command: cargo bench --bench scale -- --subscriptions {} --fan-out {} --filtered {}",
            args.subscriptions, args.fan_out, args.filtered
        );
        if args.subscriptions > 0 {
            many_subscriptions(&args).await;
        }
        if args.fan_out > 0 {
            big_fan_out(&args).await;
        }
        if args.filtered > 0 {
            filtered_spreading(&args).await;
        }
    });
}
