//! Waking a processor loop on `NOTIFY` instead of a fixed sleep. The listening connection is opened lazily and
//! re-opened after a failure (say the database restarted); while there is none, `wait` simply runs out its
//! timeout, so a loop degrades to polling and never stops.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::{postgres::PgListener, PgPool};

const RECONNECT_EVERY: Duration = Duration::from_secs(5);

/// Sends `NOTIFY channel` in a transaction of its own that does not wait for the disk. A NOTIFY holds a lock
/// shared by the whole PostgreSQL server from the start of its commit to the end, so one sent inside a durably
/// committed transaction (a publish) makes every other notifying commit wait for that disk flush; sent after the
/// commit, it holds the lock for microseconds. A lost notification only delays a processor to its next poll.
pub async fn notify(pool: &PgPool, channel: &str) {
    let sent = sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')")
        .bind(channel)
        .execute(pool)
        .await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, channel, "could not send a wake-up; the processor finds the work at its next poll");
    }
}

/// Wakes the listeners of one channel for many committers at once: a wake-up asked for while one is being sent
/// makes one more NOTIFY after it, not one each. Every wake-up is still followed by a NOTIFY sent after it was
/// asked for, so a processor woken by it sees the commit that asked. The caller never waits for the send.
#[derive(Clone)]
pub struct Coalesced {
    pool: PgPool,
    channel: &'static str,
    state: Arc<Mutex<Sending>>,
}

#[derive(Default)]
struct Sending {
    /// A NOTIFY is being sent.
    running: bool,
    /// Someone asked for a wake-up after the one being sent was started.
    again: bool,
}

impl Coalesced {
    pub fn new(pool: PgPool, channel: &'static str) -> Self {
        Self { pool, channel, state: Arc::default() }
    }

    /// Asks for a NOTIFY after this moment; returns at once.
    pub fn wake(&self) {
        {
            let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if state.running {
                state.again = true;
                return;
            }
            state.running = true;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                notify(&this.pool, this.channel).await;
                let mut state = this.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if !std::mem::take(&mut state.again) {
                    state.running = false;
                    return;
                }
            }
        });
    }
}

pub struct Wakeup {
    pool: PgPool,
    channel: &'static str,
    listener: Option<PgListener>,
    next_attempt: Instant,
}

impl Wakeup {
    pub fn new(pool: PgPool, channel: &'static str) -> Self {
        Self { pool, channel, listener: None, next_attempt: Instant::now() }
    }

    async fn connect(&mut self) {
        if self.listener.is_some() || Instant::now() < self.next_attempt {
            return;
        }
        self.next_attempt = Instant::now() + RECONNECT_EVERY;
        let attempt = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(listener)) => self.listener = Some(listener),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, channel = self.channel, "cannot listen for notifications; polling")
            }
            Err(_) => tracing::warn!(channel = self.channel, "listening for notifications timed out; polling"),
        }
    }

    /// Returns on a notification on the channel, or after `timeout`, whichever comes first.
    pub async fn wait(&mut self, timeout: Duration) {
        self.connect().await;
        let Some(listener) = self.listener.as_mut() else {
            tokio::time::sleep(timeout).await;
            return;
        };
        tokio::select! {
            received = listener.recv() => {
                if let Err(e) = received {
                    tracing::warn!(error = %e, channel = self.channel, "lost the notification connection");
                    self.listener = None;
                }
            }
            _ = tokio::time::sleep(timeout) => {}
        }
    }
}
