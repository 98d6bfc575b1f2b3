//! A real subscriber on 127.0.0.1: answers verification of intent and records every request, with replies
//! switchable while a test runs.

use std::{
    collections::VecDeque,
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// The status this receiver answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyReply {
    /// 200 with the challenge echoed.
    Echo,
    /// 200 with a body that is not the challenge.
    WrongChallenge,
    /// This status and an empty body.
    Status(u16),
}

#[derive(Debug)]
struct Behaviour {
    verify: VerifyReply,
    statuses: VecDeque<u16>,
    status: u16,
    delay: Duration,
    retry_after: Option<String>,
}

#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour {
            verify: VerifyReply::Echo,
            statuses: VecDeque::new(),
            status: 204,
            delay: Duration::ZERO,
            retry_after: None,
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let (r, b) = (received.clone(), behaviour.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new((r.clone(), b.clone())))
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { base, received, behaviour }
    }

    /// A callback URL on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn set_verify(&self, reply: VerifyReply) {
        self.behaviour.lock().unwrap().verify = reply;
    }
    /// Statuses for the next deliveries, in order; then the default status.
    pub fn queue_statuses(&self, statuses: &[u16]) {
        self.behaviour.lock().unwrap().statuses.extend(statuses);
    }
    pub fn set_status(&self, status: u16) {
        self.behaviour.lock().unwrap().status = status;
    }
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour.lock().unwrap().delay = delay;
    }
    pub fn set_retry_after(&self, value: Option<&str>) {
        self.behaviour.lock().unwrap().retry_after = value.map(str::to_owned);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
    pub fn verifications(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.method == "GET").collect()
    }
    pub fn deliveries(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.method == "POST").collect()
    }
}

type Shared = (Arc<Mutex<Vec<Received>>>, Arc<Mutex<Behaviour>>);

async fn handle(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.query_string().as_bytes()).into_owned().collect();
    let mut received = Received {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        query: query.clone(),
        headers: req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect(),
        body: body.to_vec(),
        at: Instant::now(),
        status: 0,
    };
    let (delay, reply) = {
        let mut b = shared.1.lock().unwrap();
        let reply = if received.method == "GET" {
            let challenge = received.param("hub.challenge").unwrap_or("").to_owned();
            match &b.verify {
                VerifyReply::Echo => HttpResponse::Ok().body(challenge),
                VerifyReply::WrongChallenge => HttpResponse::Ok().body(format!("not-{challenge}")),
                VerifyReply::Status(s) => {
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(*s).unwrap()).finish()
                }
            }
        } else {
            let status = b.statuses.pop_front().unwrap_or(b.status);
            let mut builder = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
            if let Some(ra) = &b.retry_after {
                builder.insert_header(("Retry-After", ra.clone()));
            }
            builder.body("thanks")
        };
        (b.delay, reply)
    };
    received.status = reply.status().as_u16();
    shared.0.lock().unwrap().push(received);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    reply
}
