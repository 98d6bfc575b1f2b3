//! The small HTTP server of a processor that does not serve the API: `/metrics`, `/healthz`, `/readyz`, so
//! Kubernetes can probe and scrape every deployment the same way.

use std::{net::SocketAddr, sync::Arc};

use actix_web::{dev::Server, web, App, HttpResponse, HttpServer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{db, metrics::Metrics};

struct Shared {
    pool: PgPool,
    metrics: Arc<Metrics>,
}

pub struct OpsServer {
    port: u16,
    server: Server,
}

impl OpsServer {
    pub fn build(listen: SocketAddr, pool: PgPool, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| anyhow::anyhow!("TIDINGS_METRICS_LISTEN: cannot listen on {listen}: {e}"))?;
        let port = listener.local_addr()?.port();
        let shared = web::Data::new(Shared { pool, metrics });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().content_type("text/plain").body("ok\n") }),
                )
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(render_metrics))
        })
        .workers(1)
        .listen(listener)?
        .disable_signals()
        .shutdown_timeout(1)
        .run();
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self, token: CancellationToken) -> anyhow::Result<()> {
        crate::http::serve_until_cancelled(self.server, token).await
    }
}

async fn readyz(shared: web::Data<Shared>) -> HttpResponse {
    match db::is_ready(&shared.pool).await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain").body("ready\n"),
        Err(reason) => HttpResponse::ServiceUnavailable().content_type("text/plain").body(format!("{reason}\n")),
    }
}

async fn render_metrics(shared: web::Data<Shared>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(shared.metrics.render(&shared.pool).await)
}
