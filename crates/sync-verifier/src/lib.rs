//! sync-verifier: persists market data to PostgreSQL and proves it complete and current:
//! continuity per symbol and stream, a gap ledger, back-fill requests, and how far behind
//! the exchange's head each stream is.
//!
//! It must not call Binance (the collector owns that traffic): gaps are healed by asking
//! the collector over `sync.backfill.v1`. Today it runs the service frame with the database
//! (migrations, readiness); consumption, continuity and healing land with issue 5.
#![forbid(unsafe_code)]

use clap::Parser;
use kit::app::Service;
use kit::config::KitConfig;
use kit::contract::{ports, services};
use kit::http::Probe;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// sync-verifier's configuration, from the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "sync-verifier", version)]
pub struct Config {
    /// Address of the ops server (/metrics, /healthz, /readyz).
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::SYNC_VERIFIER)))]
    pub listen: SocketAddr,

    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://nghenhan:nghenhan@127.0.0.1:5432/nghenhan")]
    pub database_url: String,

    #[command(flatten)]
    pub kit: KitConfig,
}

/// Runs the verifier until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), kit::KitError> {
    let mut service = Service::start(services::SYNC_VERIFIER, env!("CARGO_PKG_VERSION"), config.kit, shutdown)?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(3))
        .connect_lazy(&config.database_url)
        .map_err(|e| kit::KitError::Io(std::io::Error::other(format!("DATABASE_URL: {e}"))))?;
    service.spawn("db_migrate", migrate_until_done(pool.clone(), service.telemetry.clone(), service.shutdown.clone()));
    let app = service.ops_app().probe("postgres", pg_probe(pool));
    service.run(listener, app).await;
    Ok(())
}

/// Applies the embedded migrations, retrying with capped back-off while the database is away.
async fn migrate_until_done(pool: PgPool, telemetry: kit::Telemetry, shutdown: CancellationToken) -> Result<(), kit::KitError> {
    let mut delay = Duration::from_millis(500);
    loop {
        match sqlx::migrate!("./migrations").run(&pool).await {
            Ok(()) => {
                tracing::info!("database migrations applied");
                return Ok(());
            }
            Err(err) => telemetry.error("db_migrate", &err),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

fn pg_probe(pool: PgPool) -> Probe {
    Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move { sqlx::query("SELECT 1").execute(&pool).await.map(|_| ()).map_err(|e| e.to_string()) })
    })
}
