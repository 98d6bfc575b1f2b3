//! Group commit for publishing: concurrent publish requests are appended together — one statement, one commit —
//! and each is answered only after that commit has returned, so an acknowledged event is durably committed.
//!
//! A group is one INSERT of every event of every request in it, run as its own transaction (committed with the
//! server's durable `synchronous_commit`); the spreader is woken after the commit, never inside it (see
//! [`crate::wakeup::notify`]), and without holding up the answer: wake-ups of groups committing while one is being
//! sent are one NOTIFY ([`Coalesced`]). All or none: an event id already in the
//! log (an idempotent replay or a conflict) fails the whole group and nothing of it is written. Whenever a
//! group fails, for that reason or any other, each of its requests is appended again on its own exactly as a lone
//! request is ([`events::append`]), so one request's replay, conflict or error never changes another's answer. A
//! group whose commit succeeded but whose answer was lost (a dropped connection) is answered by that retry as an
//! idempotent replay, since every event already carries its id.
//!
//! Up to [`GROUPS_IN_FLIGHT`] groups commit at once. A request that finds a free slot goes out at once (one round
//! trip, no added wait); requests arriving while every slot is busy queue up and leave together as the next group,
//! which is what makes groups grow with load.

use std::{collections::HashMap, sync::Arc};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use crate::{
    events::{self, AppendError, Appended, NewEvent, EVENTS_CHANNEL},
    wakeup::Coalesced,
};

/// Groups committing at the same time (each holds one database connection while it commits).
pub const GROUPS_IN_FLIGHT: usize = 4;
/// Events in one group at most (a request is never split: a larger request makes a group of its own).
pub const MAX_GROUP_EVENTS: usize = 1000;
/// Requests waiting for a group at most; beyond that a publisher waits to hand its request over.
const QUEUE: usize = 4096;

struct Pending {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Appended>, AppendError>>,
}

/// The handle publish handlers append through.
#[derive(Clone)]
pub struct Ingest {
    sender: mpsc::Sender<Pending>,
}

impl Ingest {
    /// Starts the group committer on the current runtime; it stops once every handle is dropped and the groups in
    /// flight have committed.
    pub fn start(pool: PgPool) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, receiver));
        Self { sender }
    }

    /// Appends one request's events (all or none), answering once they are durably committed.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, AppendError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || AppendError::Database(sqlx::Error::PoolClosed);
        self.sender.send(Pending { events, reply }).await.map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

async fn run(pool: PgPool, mut receiver: mpsc::Receiver<Pending>) {
    let spreader = Coalesced::new(pool.clone(), EVENTS_CHANNEL);
    let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
    // A request too large to join the group being formed starts the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let first = match carried.take() {
            Some(pending) => pending,
            None => match receiver.recv().await {
                Some(pending) => pending,
                None => break,
            },
        };
        let mut count = first.events.len();
        let mut group = vec![first];
        while count < MAX_GROUP_EVENTS {
            match receiver.try_recv() {
                Ok(next) if count + next.events.len() > MAX_GROUP_EVENTS => {
                    carried = Some(next);
                    break;
                }
                Ok(next) => {
                    count += next.events.len();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let (pool, spreader) = (pool.clone(), spreader.clone());
        tokio::spawn(async move {
            commit(pool, &spreader, group).await;
            drop(slot);
        });
    }
    let _ = slots.acquire_many(GROUPS_IN_FLIGHT as u32).await;
}

#[tracing::instrument(skip_all, fields(requests = group.len()))]
async fn commit(pool: PgPool, spreader: &Coalesced, group: Vec<Pending>) {
    let all: Vec<&NewEvent> = group.iter().flat_map(|p| &p.events).collect();
    match events::append_new(&pool, &all).await {
        Ok(rows) => {
            spreader.wake();
            let rows: HashMap<Uuid, Appended> = rows.into_iter().map(|a| (a.id, a)).collect();
            for pending in group {
                let answers = pending.events.iter().map(|e| rows.get(&e.id).cloned()).collect::<Option<Vec<_>>>();
                let answer = answers.ok_or_else(|| AppendError::Database(sqlx::Error::RowNotFound));
                let _ = pending.reply.send(answer);
            }
        }
        Err(e) => {
            if group.len() > 1 {
                tracing::debug!(error = %e, "a publish group failed; appending its requests one by one");
            }
            let alone = group.into_iter().map(|pending| {
                let pool = pool.clone();
                async move {
                    let answer = events::append(&pool, &pending.events).await;
                    if answer.as_ref().is_ok_and(|rows| rows.iter().any(|a| !a.replayed)) {
                        spreader.wake();
                    }
                    let _ = pending.reply.send(answer);
                }
            });
            futures_util::future::join_all(alone).await;
        }
    }
}
