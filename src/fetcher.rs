//! Thin pings: fetching a topic URL and appending what it returned to the log.
//!
//! Owns `topic_fetches`. A fetch is claimed by pushing its `due_at` past the request timeout (a lease), fetched
//! with no transaction open, then appended together with its outcome in one transaction. The fetch id is the
//! event id, so a crash between append and record repeats the fetch without appending twice.
//! Failure policy: attempts follow [`RetrySchedule::topic_fetches`] (the retry module owns every schedule), then `failed` with the reason
//! kept in the row; nothing is silent.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    callback::{self, CallbackUrl},
    events::{self, EventKind, NewEvent},
    metrics::Metrics,
    policies::{CheckError, Policies},
    retry::RetrySchedule,
    topic::Topic,
};

const POLL_INTERVAL: Duration = Duration::from_secs(5);

pub async fn enqueue(pool: &PgPool, urls: &[CallbackUrl]) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = urls.iter().map(|_| Uuid::now_v7()).collect();
    let topics: Vec<&str> = urls.iter().map(|u| u.as_str()).collect();
    sqlx::query("INSERT INTO topic_fetches (id, topic) SELECT * FROM unnest($1::uuid[], $2::text[])")
        .bind(&ids)
        .bind(&topics)
        .execute(pool)
        .await?;
    Ok(ids)
}

pub struct Fetcher {
    pub pool: PgPool,
    pub metrics: Arc<Metrics>,
    pub policies: Arc<Policies>,
    pub client: reqwest::Client,
    pub allow_private: bool,
    pub max_bytes: usize,
    pub timeout: Duration,
}

#[derive(Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    Idle,
    Fetched(Uuid),
    Failed(Uuid),
}

struct Fetched {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Fetcher {
    /// Claims one due fetch and carries it out.
    #[tracing::instrument(skip(self))]
    pub async fn try_fetch_one(&self) -> anyhow::Result<FetchOutcome> {
        let lease = self.timeout.as_secs_f64() * 2.0 + 5.0;
        let claimed: Option<(Uuid, String, i32)> = sqlx::query_as(
            "UPDATE topic_fetches SET attempts = attempts + 1, due_at = now() + make_interval(secs => $1)
             WHERE id = (SELECT id FROM topic_fetches WHERE state = 'pending' AND due_at <= now()
                         ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id, topic, attempts",
        )
        .bind(lease)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, topic, attempts)) = claimed else { return Ok(FetchOutcome::Idle) };
        match self.fetch(&topic).await {
            Ok(fetched) => {
                // The fetch's id: appending again after a crash finds it in the log instead of writing twice.
                let event = NewEvent {
                    id,
                    id_from_publisher: true,
                    topic: Topic::parse(&topic)?,
                    content_type: fetched.content_type,
                    body: fetched.body,
                    tags: Vec::new(),
                    group_id: None,
                };
                match self.policies.check(std::slice::from_ref(&event)).await {
                    Ok(()) => {}
                    Err(CheckError::Refused(breach)) => {
                        self.record_failure(id, &topic, Some(fetched.status), breach.to_string(), None).await?;
                        return Ok(FetchOutcome::Failed(id));
                    }
                    Err(CheckError::Database(e)) => return Err(e.into()),
                }
                let mut tx = self.pool.begin().await?;
                events::append_in(&mut tx, EventKind::Content, std::slice::from_ref(&event)).await?;
                sqlx::query(
                    "UPDATE topic_fetches SET state = 'fetched', finished_at = now(), status_code = $2, event_id = $1, error = NULL
                     WHERE id = $1",
                )
                .bind(id)
                .bind(fetched.status as i32)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                events::wake(&self.pool).await;
                self.metrics.events_appended.with_label_values(&["thin_ping"]).inc();
                tracing::info!(fetch_id = %id, topic, "fetched topic and appended its content");
                Ok(FetchOutcome::Fetched(id))
            }
            Err((status, error)) => {
                let retry = RetrySchedule::topic_fetches().next_delay(attempts as u32, &mut rand::thread_rng());
                self.record_failure(id, &topic, status, error, retry).await?;
                Ok(FetchOutcome::Failed(id))
            }
        }
    }

    /// Records a failed attempt: due again after `retry`, or `failed` for good.
    async fn record_failure(
        &self,
        id: Uuid,
        topic: &str,
        status: Option<u16>,
        error: String,
        retry: Option<Duration>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE topic_fetches SET status_code = $2, error = $3,
                        state = CASE WHEN $4::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                        finished_at = CASE WHEN $4::float8 IS NULL THEN now() END,
                        due_at = CASE WHEN $4::float8 IS NULL THEN due_at ELSE now() + make_interval(secs => $4) END
                     WHERE id = $1",
        )
        .bind(id)
        .bind(status.map(i32::from))
        .bind(&error)
        .bind(retry.map(|d| d.as_secs_f64()))
        .execute(&self.pool)
        .await?;
        tracing::warn!(fetch_id = %id, topic, error, "topic fetch failed");
        Ok(())
    }

    async fn fetch(&self, topic: &str) -> Result<Fetched, (Option<u16>, String)> {
        let url = url::Url::parse(topic).map_err(|e| (None, format!("invalid URL: {e}")))?;
        callback::check_destination(&url, self.allow_private).await.map_err(|e| (None, e.to_string()))?;
        let response = self.client.get(url).send().await.map_err(|e| (None, describe(&e)))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            return Err((Some(status), format!("the topic URL answered HTTP {status}")));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| events::validate_content_type(v).ok())
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| (Some(status), describe(&e)))?;
            if body.len() + chunk.len() > self.max_bytes {
                return Err((Some(status), format!("the topic content is larger than {} bytes", self.max_bytes)));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { status, content_type, body })
    }

    /// Fetches until cancelled: woken by thin pings in this process, polling for retries and stale leases.
    pub async fn run_until_stopped(self, wakeup: Arc<Notify>, token: CancellationToken) {
        while !token.is_cancelled() {
            match self.try_fetch_one().await {
                Ok(FetchOutcome::Idle) => {
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = wakeup.notified() => {}
                        _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "topic fetcher step failed");
                    tokio::select! { _ = token.cancelled() => {}, _ = tokio::time::sleep(POLL_INTERVAL) => {} }
                }
            }
        }
    }
}

/// A short, stable description of a transport error (no internals beyond the class and cause).
pub fn describe(e: &reqwest::Error) -> String {
    let class = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        class.to_owned()
    } else {
        format!("{class}: {cause}")
    }
}
