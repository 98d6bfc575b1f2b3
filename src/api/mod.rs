//! The HTTP API: the WebSub hub endpoint (`POST /`), publishing, the admin/query API and health checks.
//! [`Application`] binds its listener up front (port 0 in tests) and serves until its token is cancelled.

mod admin;
pub mod auth;
mod deliveries;
mod error;
mod health;
pub mod hub;
mod operations;
mod publish;

use std::{net::TcpListener, sync::Arc};

use actix_web::{dev::Server, web, App, HttpRequest, HttpServer};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use admin::page_limit;
pub use error::ApiError;

use crate::{config::Config, metrics::Metrics, policies::Policies, topic::TopicAllowList};

/// What every handler can reach.
pub struct AppState {
    pub pool: PgPool,
    pub config: Config,
    pub topic_allow: TopicAllowList,
    /// Wakes this process's topic fetcher when a thin ping arrives.
    pub fetch_wakeup: Arc<Notify>,
    pub policies: Arc<Policies>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        config: Config,
        fetch_wakeup: Arc<Notify>,
        policies: Arc<Policies>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let topic_allow = TopicAllowList::parse(&config.hub.topic_allow).map_err(anyhow::Error::msg)?;
        Ok(Self { pool, config, topic_allow, fetch_wakeup, policies, metrics })
    }

    /// Refuses a request without the admin bearer token (compared in constant time).
    pub fn require_admin(&self, req: &HttpRequest) -> Result<(), ApiError> {
        auth::require_admin(&self.config.http, req)
    }

    /// Refuses a publish without a publish token or a valid body signature, when publishing is restricted.
    pub fn require_publisher(&self, req: &HttpRequest, body: &[u8]) -> Result<(), ApiError> {
        auth::require_publisher(&self.config.http, req, body)
    }
}

/// The API server, bound and ready to run.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub fn build(state: AppState) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(state.config.http.listen)
            .map_err(|e| anyhow::anyhow!("TIDINGS_LISTEN: cannot listen on {}: {e}", state.config.http.listen))?;
        let port = listener.local_addr()?.port();
        let grace = state.config.delivery.shutdown_grace;
        let max_body = state.config.http.max_body_bytes as usize;
        let state = web::Data::new(state);
        let server = HttpServer::new(move || {
            App::new().app_data(state.clone()).app_data(web::PayloadConfig::new(max_body)).configure(routes)
        })
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(grace.as_secs().max(1))
        .run();
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the token is cancelled, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let stopper = tokio::spawn(async move {
            token.cancelled().await;
            handle.stop(true).await;
        });
        self.server.await?;
        stopper.abort();
        Ok(())
    }
}

fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::post().to(hub::hub))
        .route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .route("/events", web::post().to(publish::publish_json))
        .route("/events/raw", web::post().to(publish::publish_raw))
        .route("/events", web::get().to(admin::list_events))
        .route("/fetches", web::get().to(admin::list_fetches))
        .route("/dry-run", web::get().to(admin::dry_run))
        .route("/spreader", web::get().to(admin::spreader_lag))
        .route("/deliveries", web::get().to(deliveries::list))
        .route("/deliveries/{id}", web::get().to(deliveries::show))
        .route("/deliveries/{id}/redeliver", web::post().to(deliveries::redeliver))
        .route("/subscriptions", web::get().to(crate::subscriptions::api::list))
        .route("/subscriptions/{id}", web::get().to(crate::subscriptions::api::show))
        .route("/subscriptions/{id}/replay", web::post().to(operations::replay))
        .route("/subscriptions/{id}/redeliver-dead", web::post().to(operations::redeliver_dead))
        .route("/subscriptions/{id}/end", web::post().to(operations::end_subscription))
        .route("/groups/{group_id}/progress", web::get().to(operations::group_progress))
        .route("/stats", web::get().to(operations::stats))
        .route("/policies", web::get().to(operations::list_policies))
        .route("/policies", web::put().to(operations::put_policy))
        .route("/policies", web::delete().to(operations::delete_policy));
}
