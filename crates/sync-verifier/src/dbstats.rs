//! PostgreSQL health as the owner of the database sees it: reachable or not, the
//! database's and each table's size on disk, and the connection pool's use. (No
//! postgres_exporter here: sync-verifier owns the database, so it reports on it, the same
//! way natively and under Compose.)

use kit::contract::metrics as names;
use kit::telemetry::registered;
use kit::Telemetry;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use sqlx::PgPool;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// A read that takes longer than this counts as the database being down.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct DbMetrics {
    pub up: IntGauge,
    pub database_size: IntGauge,
    pub table_size: IntGaugeVec,
    pub pool: IntGaugeVec,
}

impl DbMetrics {
    /// Registers the gauges; `postgres_up` reads 0 until the first successful read.
    pub fn register(registry: &Registry) -> Result<Self, kit::KitError> {
        let m = Self {
            up: registered(
                registry,
                IntGauge::new(names::POSTGRES_UP, "1 when the last read of the database succeeded.")?,
            )?,
            database_size: registered(
                registry,
                IntGauge::new(
                    names::POSTGRES_DATABASE_SIZE_BYTES,
                    "Size of the verifier's database on disk.",
                )?,
            )?,
            table_size: registered(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::POSTGRES_TABLE_SIZE_BYTES,
                        "Size on disk of each table, with its indexes and TOAST.",
                    ),
                    &["table"],
                )?,
            )?,
            pool: registered(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        names::POSTGRES_POOL_CONNECTIONS,
                        "The verifier's connection pool: open (`open`), idle (`idle`), the cap (`max`).",
                    ),
                    &["state"],
                )?,
            )?,
        };
        m.up.set(0);
        Ok(m)
    }
}

/// One reading of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub database_bytes: i64,
    pub tables: Vec<(String, i64)>,
}

/// Why the database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Reads the database's size and its tables' sizes (schema `public`).
pub async fn read(pool: &PgPool) -> Result<Reading, ReadError> {
    let work = async {
        let database_bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(pool)
            .await?;
        let tables: Vec<(String, i64)> = sqlx::query_as(
            "SELECT c.relname::text, pg_total_relation_size(c.oid)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
              ORDER BY 1",
        )
        .fetch_all(pool)
        .await?;
        Ok::<_, sqlx::Error>(Reading {
            database_bytes,
            tables,
        })
    };
    match tokio::time::timeout(READ_TIMEOUT, work).await {
        Ok(reading) => Ok(reading?),
        Err(_) => Err(ReadError::Timeout(READ_TIMEOUT)),
    }
}

/// Reads the database every `every` until shutdown; a failed read sets `postgres_up` to 0
/// and counts a `db_stats` error (never fatal: the alert is the point).
pub async fn run(
    pool: PgPool,
    m: DbMetrics,
    every: Duration,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> Result<(), kit::KitError> {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let reading = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            reading = read(&pool) => reading,
        };
        match reading {
            Ok(r) => {
                m.up.set(1);
                m.database_size.set(r.database_bytes);
                for (table, bytes) in &r.tables {
                    m.table_size.with_label_values(&[table]).set(*bytes);
                }
            }
            Err(err) => {
                m.up.set(0);
                telemetry.error(kit::contract::ErrorKind::DbStats, &err);
            }
        }
        m.pool
            .with_label_values(&["open"])
            .set(i64::from(pool.size()));
        m.pool
            .with_label_values(&["idle"])
            .set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
        m.pool
            .with_label_values(&["max"])
            .set(i64::from(pool.options().get_max_connections()));
    }
}
