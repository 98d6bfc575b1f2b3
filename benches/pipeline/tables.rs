//! What the soak reads from the database each window: for the log, the outbox and the attempts, the bytes on disk
//! (table, indexes and TOAST, summed over every partition when the table is partitioned), the dead tuples, the
//! number of leaf partitions (0 when the table is not partitioned), and the outbox's pending jobs. A figure that
//! cannot be read is None and the run goes on.

use sqlx::PgConnection;

pub const TABLES: [&str; 3] = ["events", "outbox", "delivery_attempts"];

#[derive(Debug, Clone, Copy, Default)]
pub struct Table {
    pub bytes: i64,
    pub dead_tuples: i64,
    pub partitions: i64,
}

#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// In the order of [`TABLES`].
    pub tables: Vec<Option<Table>>,
    pub pending: Option<i64>,
}

/// Every relation of the table's partition tree when it is partitioned, the table alone otherwise, and none when
/// there is no such table. Partitions dropped while this runs simply no longer count.
const TABLE: &str = "
WITH root AS (
    SELECT c.oid, c.relkind FROM pg_class c WHERE c.oid = to_regclass($1)
), tree AS (
    SELECT t.relid, t.isleaf, t.level FROM root, pg_partition_tree(root.oid) t WHERE root.relkind = 'p'
    UNION ALL
    SELECT root.oid, false, 0 FROM root WHERE root.relkind <> 'p'
)
SELECT coalesce(sum(pg_total_relation_size(tree.relid)), 0)::bigint,
       coalesce(sum(s.n_dead_tup), 0)::bigint,
       count(*) FILTER (WHERE tree.isleaf)
FROM tree LEFT JOIN pg_stat_user_tables s ON s.relid = tree.relid";

pub async fn table(db: &mut PgConnection, name: &str) -> anyhow::Result<Table> {
    let (bytes, dead_tuples, partitions): (i64, i64, i64) = sqlx::query_as(TABLE).bind(name).fetch_one(db).await?;
    Ok(Table { bytes, dead_tuples, partitions })
}

/// Reads every figure; each one that fails is reported on stderr once per window and left out.
pub async fn read(db: &mut PgConnection) -> Tables {
    let mut tables = Vec::new();
    for name in TABLES {
        match table(db, name).await {
            Ok(t) => tables.push(Some(t)),
            Err(e) => {
                eprintln!("reading the size of {name}: {e:#}");
                tables.push(None);
            }
        }
    }
    let pending = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE state = 'pending'").fetch_one(db).await;
    let pending = pending.map_err(|e| eprintln!("counting the outbox's pending jobs: {e:#}")).ok();
    Tables { tables, pending }
}
