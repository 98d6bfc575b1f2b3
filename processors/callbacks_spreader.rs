//! `callbacks-spreader`: runs only this processor, so it can be deployed and scaled on its own.

use clap::Parser;
use tidings::{
    app::{self, Roles},
    config::Config,
};

#[derive(Debug, Parser)]
#[command(name = "callbacks-spreader", version, about = "Tidings callbacks-spreader processor")]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = app::load_cli();
    let config = app::validated(cli.config);
    tidings::telemetry::init(&config.log_format);
    app::run_process(config, Roles::SPREADER).await
}
