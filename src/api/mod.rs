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

use crate::{config::Config, ingest::Ingest, metrics::Metrics, policies::Policies, topic::TopicAllowList};

/// What every handler can reach.
pub struct AppState {
    pub pool: PgPool,
    /// Where the query API reads: the replica of `DATABASE_READ_URL`, or the primary pool.
    pub read_pool: PgPool,
    pub config: Config,
    pub topic_allow: TopicAllowList,
    /// Wakes this process's topic fetcher when a thin ping arrives.
    pub fetch_wakeup: Arc<Notify>,
    pub policies: Arc<Policies>,
    pub metrics: Arc<Metrics>,
    /// Group commit of publishes.
    pub ingest: Ingest,
}

impl AppState {
    pub fn new(
        pool: PgPool,
        config: Config,
        fetch_wakeup: Arc<Notify>,
        policies: Arc<Policies>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let topic_allow = TopicAllowList::parse(&config.hub.topic_allow)?;
        let read_pool = pool.clone();
        let ingest = Ingest::start(pool.clone());
        Ok(Self { pool, read_pool, config, topic_allow, fetch_wakeup, policies, metrics, ingest })
    }

    /// Serves the query API from `read_pool` (a read replica).
    pub fn with_read_pool(mut self, read_pool: PgPool) -> Self {
        self.read_pool = read_pool;
        self
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

/// Refuses a URL whose path or query carries a NUL byte (`%00`): no topic, tag, group id or id may hold one, and
/// PostgreSQL cannot store or compare text that does, so such a request is a 400 before any handler sees it.
async fn refuse_nul_in_url(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if req.uri().path().contains("%00") || req.uri().query().is_some_and(|q| q.contains("%00")) {
        return Err(ApiError::bad_request("the URL must not contain a NUL character (%00)").into());
    }
    next.call(req).await
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
            App::new()
                .wrap(actix_web::middleware::from_fn(refuse_nul_in_url))
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .configure(routes)
                // The web console's HTML pages live under /console, outside the JSON API and openapi.yaml.
                .configure(crate::console::routes)
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
        serve_until_cancelled(self.server, token).await
    }
}

/// Runs an actix server until the token is cancelled, then stops it gracefully.
pub async fn serve_until_cancelled(server: Server, token: CancellationToken) -> anyhow::Result<()> {
    let handle = server.handle();
    let stopper = tokio::spawn(async move {
        token.cancelled().await;
        handle.stop(true).await;
    });
    server.await?;
    stopper.abort();
    Ok(())
}

/// Every route, one resource per path, so a known path with an unknown method answers 405.
fn routes(cfg: &mut web::ServiceConfig) {
    use crate::subscriptions::api as subscriptions;
    use web::{delete, get, post, put, resource};
    cfg.service(resource("/").route(post().to(hub::hub)))
        .service(resource("/healthz").route(get().to(health::healthz)))
        .service(resource("/readyz").route(get().to(health::readyz)))
        .service(resource("/metrics").route(get().to(health::metrics)))
        .service(resource("/events").route(post().to(publish::publish_json)).route(get().to(admin::list_events)))
        .service(resource("/events/raw").route(post().to(publish::publish_raw)))
        .service(resource("/fetches").route(get().to(admin::list_fetches)))
        .service(resource("/dry-run").route(get().to(admin::dry_run)))
        .service(resource("/spreader").route(get().to(admin::spreader_lag)))
        .service(resource("/deliveries").route(get().to(deliveries::list)))
        .service(resource("/deliveries/{id}").route(get().to(deliveries::show)))
        .service(resource("/deliveries/{id}/redeliver").route(post().to(deliveries::redeliver)))
        .service(resource("/subscriptions").route(get().to(subscriptions::list)))
        .service(resource("/subscriptions/{id}").route(get().to(subscriptions::show)))
        .service(resource("/subscriptions/{id}/replay").route(post().to(operations::replay)))
        .service(resource("/subscriptions/{id}/redeliver-dead").route(post().to(operations::redeliver_dead)))
        .service(resource("/subscriptions/{id}/end").route(post().to(operations::end_subscription)))
        .service(resource("/groups/{group_id}/progress").route(get().to(operations::group_progress)))
        .service(resource("/stats").route(get().to(operations::stats)))
        .service(
            resource("/policies")
                .route(get().to(operations::list_policies))
                .route(put().to(operations::put_policy))
                .route(delete().to(operations::delete_policy)),
        );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (method, path) of every route registered in [`super::routes`], read from this file's source.
    fn registered() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let body = source.split("fn routes(").nth(1).unwrap().split("\n}\n").next().unwrap();
        let mut found = BTreeSet::new();
        for resource in body.split("resource(\"").skip(1) {
            let (path, rest) = resource.split_once('"').unwrap();
            for method in ["get", "post", "put", "delete"] {
                if rest.contains(&format!(".route({method}()")) {
                    found.insert((method.to_owned(), path.to_owned()));
                }
            }
        }
        found
    }

    /// (method, path) of every operation in openapi.yaml.
    fn documented() -> BTreeSet<(String, String)> {
        let mut found = BTreeSet::new();
        let mut path = None;
        for line in include_str!("../../openapi.yaml").lines().skip_while(|l| *l != "paths:") {
            if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
                path = Some(format!("/{p}"));
            } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ").and_then(|m| m.strip_suffix(':'))) {
                if ["get", "post", "put", "delete", "patch"].contains(&m) {
                    found.insert((m.to_owned(), p.clone()));
                }
            }
        }
        found
    }

    #[test]
    fn every_route_is_in_openapi_yaml_and_every_documented_route_exists() {
        let registered = registered();
        let documented = documented();
        assert!(registered.len() > 20, "the route scan found too little: {registered:?}");
        assert_eq!(
            registered.difference(&documented).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "routes missing from openapi.yaml"
        );
        assert_eq!(
            documented.difference(&registered).collect::<Vec<_>>(),
            Vec::<&(String, String)>::new(),
            "documented routes that do not exist"
        );
    }
}
