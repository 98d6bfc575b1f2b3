//! `tidings`: the API, the processors in one process (`all`, the default), or migrations.

use tidings::{
    app::{self, Roles},
    config::{Cli, Command},
    db,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = app::load_cli();
    let config = app::validated(cli.config);
    tidings::telemetry::init(&config.log_format);
    match cli.command.unwrap_or(Command::All) {
        Command::Migrate => {
            let mut database = config.database.clone();
            database.migrate_on_start = true;
            let pool = db::connect(&database, 1, tidings::db::Plans::Chosen, "tidings migrate").await?;
            tidings::partitions::ensure(&pool, &config.partitions, chrono::Utc::now(), chrono::Utc::now()).await?;
            tracing::info!("migrations applied and time partitions created");
            Ok(())
        }
        Command::Serve => app::run_process(config, Roles::API).await,
        Command::All => app::run_process(config, Roles::ALL).await,
    }
}
