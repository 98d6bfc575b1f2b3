//! Everything HTTP: the JSON API ([`api`]: the WebSub hub endpoint, publishing, the admin/query API, health) and
//! the web console ([`console`]), both faces of the same domain operations, over one shared [`AppState`].
//! [`Application`] binds its listener up front (port 0 in tests) and serves until its token is cancelled.
//!
//! Module graph: [`state`] and [`error`] are leaves; `api` and `console` use them and the domain modules, never
//! each other; this module mounts both.

pub mod api;
pub mod console;
mod error;
pub mod state;

use std::net::TcpListener;

use actix_web::{dev::Server, web, App, HttpServer, Route};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use state::AppState;

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
                .configure(console::routes)
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

/// Wraps an admin route (after its handler is set, as actix requires): the admin token is checked by one middleware before the handler or any extractor runs,
/// so every admin route refuses a caller without it alike, and a known path with an unknown method still answers
/// 405 (the check sits on the route, not on the path).
fn admin(route: Route) -> Route {
    route.wrap(actix_web::middleware::from_fn(api::auth::admin_only))
}

/// Every route, one resource per path, so a known path with an unknown method answers 405.
fn routes(cfg: &mut web::ServiceConfig) {
    use api::{admin as query, deliveries, health, hub, operations, portal, publish, subscriptions};
    use web::{delete, get, post, put, resource};
    cfg.service(resource("/").route(post().to(hub::hub)))
        .service(resource("/healthz").route(get().to(health::healthz)))
        .service(resource("/readyz").route(get().to(health::readyz)))
        .service(resource("/metrics").route(get().to(health::metrics)))
        .service(resource("/events").route(post().to(publish::publish_json)).route(admin(get().to(query::list_events))))
        .service(resource("/events/raw").route(post().to(publish::publish_raw)))
        .service(resource("/fetches").route(admin(get().to(query::list_fetches))))
        .service(
            resource("/dry-run").route(admin(get().to(query::dry_run))).route(admin(post().to(query::dry_run_sample))),
        )
        .service(resource("/spreader").route(admin(get().to(query::spreader_lag))))
        .service(resource("/deliveries").route(admin(get().to(deliveries::list))))
        .service(resource("/deliveries/{id}").route(admin(get().to(deliveries::show))))
        .service(resource("/deliveries/{id}/redeliver").route(admin(post().to(deliveries::redeliver))))
        .service(resource("/subscriptions").route(admin(get().to(subscriptions::list))))
        .service(resource("/subscriptions/{id}").route(admin(get().to(subscriptions::show))))
        .service(resource("/subscriptions/{id}/replay").route(admin(post().to(operations::replay))))
        .service(resource("/subscriptions/{id}/redeliver-dead").route(admin(post().to(operations::redeliver_dead))))
        .service(resource("/subscriptions/{id}/end").route(admin(post().to(operations::end_subscription))))
        .service(resource("/subscriptions/{id}/enable").route(admin(post().to(operations::enable_subscription))))
        .service(
            resource("/subscriptions/{id}/rate")
                .route(admin(put().to(operations::set_rate)))
                .route(admin(delete().to(operations::remove_rate))),
        )
        .service(
            resource("/subscriptions/{id}/filter")
                .route(admin(put().to(operations::set_filter)))
                .route(admin(delete().to(operations::remove_filter))),
        )
        .service(resource("/subscriptions/{id}/secret").route(admin(put().to(operations::set_secret))))
        .service(
            resource("/subscriptions/{id}/headers")
                .route(admin(put().to(operations::set_headers)))
                .route(admin(delete().to(operations::remove_headers))),
        )
        .service(resource("/subscriptions/{id}/portal-link").route(admin(post().to(portal::issue_link))))
        // The subscriber portal: a signed link or a proof of the subscription's secret stands in for the admin token.
        .service(resource("/portal").route(get().to(portal::log)))
        .service(resource("/portal/nonce").route(post().to(portal::nonce)))
        .service(resource("/portal/link").route(post().to(portal::redeem)))
        .service(resource("/portal/redeliver-dead").route(post().to(portal::redeliver_dead)))
        .service(resource("/groups/{group_id}/progress").route(admin(get().to(operations::group_progress))))
        .service(resource("/stats").route(admin(get().to(operations::stats))))
        .service(
            resource("/policies")
                .route(admin(get().to(operations::list_policies)))
                .route(admin(put().to(operations::put_policy)))
                .route(admin(delete().to(operations::delete_policy))),
        );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// (method, path) of every route registered in [`super::routes`], read from this file's source.
    fn registered() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let body = source.split("fn routes(").nth(1).unwrap().split("\n}\n").next().unwrap();
        // Formatting may break a route over lines; the scan reads it without whitespace.
        let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let mut found = BTreeSet::new();
        for resource in body.split("resource(\"").skip(1) {
            let (path, rest) = resource.split_once('"').unwrap();
            for method in ["get", "post", "put", "delete"] {
                if rest.contains(&format!(".route({method}()")) || rest.contains(&format!(".route(admin({method}()")) {
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
