//! exchange-sim: a Binance-compatible spot market for tests and offline demos, following
//! ../shared/BINANCE.md: the REST subset with weights and 429/418, the WebSocket streams
//! with Binance's connection rules, a deterministic market per symbol whose REST, stream
//! and `/sim/truth` views agree exactly, and fault injection over `/sim/`.
//!
//! HTTP is axum's (routing, body limits, WebSocket upgrades; `server`), query strings are
//! percent-decoded by `percent-encoding`; the Binance rules, the market and the faults are this
//! crate's own, since no crate models them.
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
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Starts the simulator on `listener` until `shutdown`; returns the shared state (for
/// tests) and its two tasks, the market engine and the server.
pub async fn spawn(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(Arc<App>, JoinSet<&'static str>), kit::KitError> {
    let telemetry = kit::Telemetry::new("exchange-sim", env!("CARGO_PKG_VERSION"))?;
    let metrics = metrics::SimMetrics::register(telemetry.registry())?;
    let app = App::new(config, metrics);
    let mut tasks = JoinSet::new();
    let (engine_app, engine_stop) = (app.clone(), shutdown.clone());
    tasks.spawn(async move {
        engine::run(engine_app, engine_stop).await;
        "engine"
    });
    let server_app = app.clone();
    tasks.spawn(async move {
        server::serve(listener, server_app, telemetry, shutdown).await;
        "server"
    });
    Ok((app, tasks))
}

/// Starts the simulator and returns its shared state; its tasks run until `shutdown`
/// (tests; the binary uses [`run`], which also notices a task that stops early).
pub async fn start(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Arc<App>, kit::KitError> {
    let (app, mut tasks) = spawn(config, listener, shutdown).await?;
    tasks.detach_all();
    Ok(app)
}

/// Runs the simulator until `shutdown`. A task that ends (or panics) before shutdown is an
/// error naming it, so the process exits non-zero instead of serving a frozen market.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), kit::KitError> {
    let (_app, mut tasks) = spawn(config, listener, shutdown.clone()).await?;
    let ended = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        ended = tasks.join_next() => ended,
    };
    if shutdown.is_cancelled() {
        return Ok(());
    }
    let (task, reason) = match ended {
        Some(Ok(task)) => (task, "ended before shutdown".to_string()),
        Some(Err(join)) => ("engine or server", join.to_string()),
        None => ("none", "no task ran".to_string()),
    };
    Err(kit::KitError::TaskFailed { task, reason })
}
