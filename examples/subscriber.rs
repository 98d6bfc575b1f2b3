//! A WebSub subscriber to try Tidings with: it answers verification of intent by echoing `hub.challenge`, and
//! prints every delivery, checking `X-Hub-Signature` when it was started with the subscription's secret.
//!
//! ```sh
//! cargo run --example subscriber -- 127.0.0.1:9000 s3cret
//! ```

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hmac::{Hmac, Mac};
use sha2::Sha256;

struct Settings {
    secret: Option<String>,
}

async fn verify(req: HttpRequest) -> HttpResponse {
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(req.query_string().as_bytes()).into_owned().collect();
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str()).unwrap_or("");
    match get("hub.mode") {
        "subscribe" | "unsubscribe" => {
            println!("verified {} for {} (lease {} s)", get("hub.mode"), get("hub.topic"), get("hub.lease_seconds"));
            HttpResponse::Ok().body(get("hub.challenge").to_owned())
        }
        "denied" => {
            println!("the hub denied {}: {}", get("hub.topic"), get("hub.reason"));
            HttpResponse::Ok().finish()
        }
        _ => HttpResponse::BadRequest().body("not a WebSub verification"),
    }
}

async fn deliver(req: HttpRequest, body: web::Bytes, settings: web::Data<Settings>) -> HttpResponse {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let signature = match (&settings.secret, header("x-hub-signature")) {
        (None, s) if s.is_empty() => "unsigned".to_owned(),
        (None, _) => "signed, but no secret was given to check it".to_owned(),
        (Some(_), s) if s.is_empty() => "MISSING signature".to_owned(),
        (Some(secret), s) => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
            mac.update(&body);
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            if expected == s {
                "signature ok".to_owned()
            } else {
                "BAD signature".to_owned()
            }
        }
    };
    println!(
        "delivery {} on {} ({}, {signature}): {}",
        header("webhook-id"),
        header("link"),
        header("content-type"),
        String::from_utf8_lossy(&body)
    );
    HttpResponse::NoContent().finish()
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let secret = args.next();
    println!("subscriber listening on http://{listen}/ (secret: {})", if secret.is_some() { "given" } else { "none" });
    let settings = web::Data::new(Settings { secret });
    HttpServer::new(move || {
        App::new().app_data(settings.clone()).default_service(web::route().to(
            |req: HttpRequest, body: web::Bytes, s: web::Data<Settings>| async move {
                if req.method() == actix_web::http::Method::GET {
                    verify(req).await
                } else {
                    deliver(req, body, s).await
                }
            },
        ))
    })
    .workers(1)
    .bind(listen)?
    .run()
    .await
}
