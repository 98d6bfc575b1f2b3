//! The transport seam: how one request reaches a subscriber. Claiming, retries and attempt records never look
//! past this trait, so another channel can be added beside HTTP without touching them.

use std::{borrow::Cow, future::Future, time::Duration};

use futures_util::StreamExt;
use url::Url;

use crate::callback;

/// Bytes of a response body kept for the attempt record.
pub const EXCERPT_BYTES: usize = 256;
/// Bytes of a response body read at most (the rest is dropped with the connection).
pub const MAX_READ_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: Url,
    /// The hub's own names are static; a subscription's custom headers are not.
    pub headers: Vec<(Cow<'static, str>, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<String>,
    /// The first bytes of the body (up to [`MAX_READ_BYTES`]).
    pub body: Vec<u8>,
}

impl Response {
    pub fn excerpt(&self) -> String {
        String::from_utf8_lossy(&self.body[..self.body.len().min(EXCERPT_BYTES)]).into_owned()
    }
}

/// Why no response arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {message}")]
pub struct Failure {
    /// `timeout`, `connect`, `refused_address` or `request`.
    pub class: &'static str,
    pub message: String,
}

pub trait Transport: Send + Sync + 'static {
    fn send(&self, request: Request) -> impl Future<Output = Result<Response, Failure>> + Send;
}

/// HTTP: one shared keep-alive client, no redirects, the address rule enforced at connection time.
#[derive(Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    allow_private: bool,
}

impl HttpTransport {
    pub fn new(allow_private: bool, timeout: Duration) -> Self {
        Self { client: callback::http_client(allow_private, timeout), allow_private }
    }
}

impl Transport for HttpTransport {
    async fn send(&self, request: Request) -> Result<Response, Failure> {
        // Literal addresses never reach the resolver, so they are checked here; names are checked by it.
        if !self.allow_private {
            if let Some(ip) = literal_ip(&request.url) {
                callback::check_ip(ip).map_err(|e| Failure { class: "refused_address", message: e.to_string() })?;
            }
        }
        let builder = match request.method {
            Method::Get => self.client.get(request.url),
            Method::Post => self.client.post(request.url).body(request.body),
        };
        let builder = request.headers.into_iter().fold(builder, |b, (name, value)| b.header(name.as_ref(), value));
        let response = builder.send().await.map_err(classify)?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(classify)?;
            let room = MAX_READ_BYTES - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_READ_BYTES {
                break;
            }
        }
        Ok(Response { status, retry_after, body })
    }
}

fn literal_ip(url: &Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

fn classify(e: reqwest::Error) -> Failure {
    let message = crate::fetcher::describe(&e);
    let class = if e.is_timeout() {
        "timeout"
    } else if message.contains("not public") {
        "refused_address"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    Failure { class, message }
}
