//! The state every HTTP handler reaches, built at the composition root ([`crate::app`]). A leaf: it depends on
//! domain modules only, never on a handler module, so the JSON API and the console both use it without a cycle.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Notify;

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
}
