//! collector: owns every call to Binance (REST and WebSocket), because Binance's limits are
//! per IP and one governor must see all of them. It publishes normalised records to Kafka.
//!
//! It must not persist or verify data (sync-verifier does) and must not call Binance from
//! anywhere but its governor. Today it runs the service frame (ops server, heartbeats);
//! streams, governor and back-fill land with issue 4.
#![forbid(unsafe_code)]

use clap::Parser;
use kit::app::Service;
use kit::config::KitConfig;
use kit::contract::{ports, services};
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// collector's configuration, from the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "collector", version)]
pub struct Config {
    /// Address of the ops server (/metrics, /healthz, /readyz).
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::COLLECTOR)))]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub kit: KitConfig,
}

/// Runs the collector until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), kit::KitError> {
    let service = Service::start(services::COLLECTOR, env!("CARGO_PKG_VERSION"), config.kit, shutdown)?;
    let app = service.ops_app();
    service.run(listener, app).await;
    Ok(())
}
