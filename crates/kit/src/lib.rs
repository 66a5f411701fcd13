//! The shared kit of every Nghenhan service, written once: typed config from the
//! environment, JSON logs, the Prometheus registry with the metrics every service exports,
//! the HTTP server for `/metrics`, `/healthz` and `/readyz`, Kafka clients whose librdkafka
//! statistics become metrics, heartbeats, graceful shutdown, and the one decoder of the
//! versioned JSON records the services read ([`record`]).
//!
//! It owns no business logic: nothing here knows about trades, gaps or restarts beyond the
//! names in [`contract`], which is the single home of every topic and metric name.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod contract;
pub mod error;
pub mod heartbeat;
pub mod http;
pub mod kafka;
pub mod record;
pub mod restarts;
pub mod retry;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

pub use error::KitError;
pub use telemetry::Telemetry;
