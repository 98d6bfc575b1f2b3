//! Logging: JSON lines by default (`TIDINGS_LOG_FORMAT=text` for humans), filtered by `RUST_LOG`.

use tracing_subscriber::{fmt, EnvFilter};

pub fn init(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,actix_server=warn"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    // A second call (several apps in one test process) keeps the first subscriber.
    let _ = if format == "text" {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).with_current_span(true).try_init()
    };
}
