//! sync-verifier: persists market data to PostgreSQL and proves it complete and current:
//! continuity per symbol and stream, a gap ledger, back-fill requests until each gap heals,
//! mismatches between streamed and back-filled versions, and how far each stream is behind
//! the exchange's head.
//!
//! It must not call Binance (the collector owns that traffic): gaps are healed by asking
//! the collector over `sync.backfill.v1`. Offsets are stored only after the database
//! commit; unreadable messages go to `<topic>.dlq`; on restart it resumes from the
//! database, not from memory.
#![forbid(unsafe_code)]

pub mod continuity;
pub mod dbstats;
pub mod metrics;
pub mod pipeline;
pub mod store;
pub mod validate;
pub mod verifier;

/// Why sync-verifier could not start or stopped: a kit component's failure, or its
/// database settings. Never carries the password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kit(#[from] kit::KitError),
    #[error("DATABASE_URL: {0}")]
    DatabaseUrl(sqlx::Error),
    #[error("DATABASE_PASSWORD_FILE {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("DATABASE_PASSWORD_FILE {path}: empty")]
    EmptyPasswordFile { path: std::path::PathBuf },
}

use clap::Parser;
use kit::app::Service;
use kit::config::KitConfig;
use kit::contract::services;
use kit::http::Probe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

impl kit::config::ServiceConfig for Config {
    fn kit(&self) -> &KitConfig {
        &self.kit
    }
}

/// sync-verifier's configuration, from the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "sync-verifier", version)]
pub struct Config {
    #[command(flatten)]
    pub kit: KitConfig,
    /// PostgreSQL connection URL. Put no password in it where others can read the
    /// environment: give DATABASE_PASSWORD_FILE instead.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://nghenhan@127.0.0.1:5432/nghenhan"
    )]
    pub database_url: String,
    /// A file holding the database password (a Compose secret); it overrides any password
    /// in DATABASE_URL. Read once at start; a missing or empty file stops the service.
    #[arg(long, env = "DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<std::path::PathBuf>,
    /// Kafka consumer group (more instances split the partitions).
    #[arg(long, env = "CONSUMER_GROUP", default_value = "sync-verifier")]
    pub consumer_group: String,
    /// Where a new consumer group starts: `earliest` (everything retained) or `latest`.
    #[arg(
        long,
        env = "CONSUMER_OFFSET_RESET",
        default_value = "earliest",
        value_parser = ["earliest", "latest"]
    )]
    pub offset_reset: String,
    /// Most records written in one transaction.
    #[arg(
        long,
        env = "BATCH_MAX",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..=100_000)
    )]
    pub batch_max: u64,
    /// Longest wait to fill a batch, in milliseconds: the floor of the end-to-end latency
    /// (`make bench` at 400 symbols and 10k trades/s: p99 248 ms with 100, 200 ms with 50).
    #[arg(
        long,
        env = "BATCH_WAIT_MS",
        default_value_t = 50,
        value_parser = clap::value_parser!(u64).range(1..=60_000)
    )]
    pub batch_wait_ms: u64,
    /// A stream lagging more than this (seconds; klines: plus their interval) is not in sync.
    #[arg(
        long,
        env = "SYNC_MAX_LAG_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub max_lag_secs: u64,
    /// First re-send of an unhealed gap's back-fill request, in seconds (then doubling, capped at 5 min).
    #[arg(
        long,
        env = "BACKFILL_RETRY_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    pub backfill_retry_secs: u64,
    /// Seconds without a record or head of a symbol, while heads of other symbols arrive,
    /// after which it leaves the sync metrics (delisted, or no longer collected).
    #[arg(
        long,
        env = "SYMBOL_RETIRE_SECS",
        default_value_t = 900,
        value_parser = clap::value_parser!(u64).range(60..=604_800)
    )]
    pub symbol_retire_secs: u64,
    /// Seconds between reads of the database's health, sizes and pool use.
    #[arg(
        long,
        env = "DB_STATS_INTERVAL_SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub db_stats_interval_secs: u64,
}

/// Runs the verifier until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut service = Service::start(services::SYNC_VERIFIER, &config.kit, &listener, shutdown)?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy_with(connect_options(&config)?);
    let metrics = metrics::SyncMetrics::register(service.telemetry.registry())?;
    let db_metrics = dbstats::DbMetrics::register(service.telemetry.registry())?;
    let client_id = service.identity.client_id("sync-verifier");
    let consumer = kit::kafka::consumer(
        &config.kit.kafka_brokers,
        &client_id,
        &config.consumer_group,
        &config.offset_reset,
        service.kafka.clone(),
    )?;
    let db_interval = Duration::from_secs(config.db_stats_interval_secs);
    let pipeline = pipeline::Pipeline::new(config, pool.clone(), metrics, &service);
    let pipeline = Arc::new(pipeline);
    service.spawn("verify", pipeline.clone().run(consumer));
    service.spawn("gap_resend", pipeline.clone().resend_loop());
    service.spawn("metrics_refresh", pipeline.refresh_loop());
    service.spawn(
        "db_stats",
        dbstats::run(
            pool.clone(),
            db_metrics,
            db_interval,
            service.telemetry.clone(),
            service.shutdown.clone(),
        ),
    );
    let app = service.ops_app().probe("postgres", pg_probe(pool));
    Ok(service.run(listener, app).await?)
}

/// The connection settings: DATABASE_URL, with the password from DATABASE_PASSWORD_FILE
/// when one is given (its last line break dropped). Errors name the setting and the file,
/// never the password.
pub fn connect_options(config: &Config) -> Result<PgConnectOptions, Error> {
    let options = PgConnectOptions::from_str(&config.database_url).map_err(Error::DatabaseUrl)?;
    let Some(path) = &config.database_password_file else {
        return Ok(options);
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::PasswordFile {
        path: path.clone(),
        source,
    })?;
    let password = text.strip_suffix('\n').unwrap_or(&text);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(Error::EmptyPasswordFile { path: path.clone() });
    }
    Ok(options.password(password))
}

/// Applies the embedded migrations, retrying with capped back-off while the database is
/// away; false on shutdown.
pub async fn migrate_until_done(
    pool: &PgPool,
    telemetry: &kit::Telemetry,
    shutdown: &CancellationToken,
) -> bool {
    let migrate = || sqlx::migrate!("./migrations").run(pool);
    let done = kit::retry::retry(
        shutdown,
        kit::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
        migrate,
        |e| telemetry.error(kit::contract::ErrorKind::DbMigrate, &e),
    )
    .await;
    if done.is_some() {
        tracing::info!("database migrations applied");
    }
    done.is_some()
}

fn pg_probe(pool: PgPool) -> Probe {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&pool)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn out_of_range_durations_are_refused_at_start_not_overflowed_later() {
        for (k, v) in [
            ("BATCH_WAIT_MS", "18446744073709551615"),
            ("BACKFILL_RETRY_SECS", "0"),
            ("BACKFILL_RETRY_SECS", "99999999999"),
            ("SYNC_MAX_LAG_SECS", "-1"),
            ("BATCH_MAX", "0"),
            ("SYMBOL_RETIRE_SECS", "5"),
            ("DB_STATS_INTERVAL_SECS", "0"),
        ] {
            let err = kit::config::parse_from_map::<Config>(&HashMap::from([(k, v)])).expect_err(k);
            assert!(err.to_string().contains("invalid value"), "{k}: {err}");
        }
        let c: Config = kit::config::parse_from_map(&HashMap::new()).expect("defaults");
        assert_eq!(
            (c.batch_wait_ms, c.backfill_retry_secs, c.max_lag_secs),
            (50, 10, 30)
        );
    }

    #[test]
    fn no_password_is_built_in_and_a_password_file_is_read_once_and_never_echoed() {
        let c: Config = kit::config::parse_from_map(&HashMap::new()).expect("defaults");
        let userinfo = c
            .database_url
            .trim_start_matches("postgres://")
            .split('@')
            .next();
        assert!(
            !userinfo.unwrap_or_default().contains(':'),
            "a password in {}",
            c.database_url
        );
        assert_eq!(connect_options(&c).expect("url").get_username(), "nghenhan");

        let dir = std::env::temp_dir().join(format!("verifier-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("postgres_password");
        std::fs::write(&file, "s3cret-pw\n").expect("write");
        let path = file.to_string_lossy().to_string();
        let url = "postgres://nghenhan:in-the-url@db:5432/nghenhan";
        let env = HashMap::from([
            ("DATABASE_URL", url),
            ("DATABASE_PASSWORD_FILE", path.as_str()),
        ]);
        let c: Config = kit::config::parse_from_map(&env).expect("config");
        let options = connect_options(&c).expect("options");
        assert!(
            format!("{options:?}").contains("s3cret-pw"),
            "the file's password, without its line break"
        );
        assert!(!format!("{options:?}").contains("s3cret-pw\n"));
        assert!(
            !format!("{options:?}").contains("in-the-url"),
            "the file wins over the URL"
        );

        std::fs::write(&file, "\n").expect("write");
        let err = connect_options(&c).expect_err("empty").to_string();
        assert!(
            err.contains("DATABASE_PASSWORD_FILE") && err.contains("empty"),
            "{err}"
        );
        std::fs::write(&file, "s3cret-pw").expect("write");
        std::fs::remove_file(&file).expect("rm");
        let err = connect_options(&c).expect_err("missing").to_string();
        assert!(err.contains(&path) && !err.contains("s3cret"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
