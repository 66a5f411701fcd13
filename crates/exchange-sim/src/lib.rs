//! exchange-sim: a Binance-compatible spot market for tests and offline demos, following
//! ../shared/BINANCE.md: the REST subset with weights and 429/418, the WebSocket streams
//! with Binance's connection rules, a deterministic market per symbol whose REST, stream
//! and `/sim/truth` views agree exactly, and fault injection over `/sim/`.
//!
//! It must never be mistaken for Binance: the services' default configuration talks to the
//! real exchange; the simulator is chosen explicitly by URL.
#![forbid(unsafe_code)]

pub mod app;
pub mod clock;
pub mod control;
pub mod engine;
pub mod faults;
pub mod limits;
pub mod market;
pub mod metrics;
pub mod records;
pub mod rest;
pub mod rng;
pub mod server;
pub mod ws;

pub use app::{App, Config};

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Runs the simulator on `listener` until `shutdown`; returns the shared state for tests.
pub async fn start(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<Arc<App>, kit::KitError> {
    let telemetry = kit::Telemetry::new("exchange-sim", env!("CARGO_PKG_VERSION"))?;
    let metrics = metrics::SimMetrics::register(telemetry.registry())?;
    let app = App::new(config, metrics);
    tokio::spawn(engine::run(app.clone(), shutdown.clone()));
    tokio::spawn(server::serve(listener, app.clone(), telemetry, shutdown));
    Ok(app)
}
