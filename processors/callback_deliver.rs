//! `callback-deliver`: runs only this processor, so it can be deployed and scaled on its own.

use clap::Parser;
use tidings::{
    app::{self, Roles},
    config::Config,
};

#[derive(Debug, Parser)]
#[command(name = "callback-deliver", version, about = "Tidings callback-deliver processor")]
struct Cli {
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = app::load_cli();
    let config = app::validated(cli.config);
    tidings::telemetry::init(&config.log_format);
    app::run_process(config, Roles::DELIVERER).await
}
