//! The simulator's own metrics (names from `kit::contract::metrics::sim`).

use kit::contract::metrics::sim as names;
use kit::telemetry::registered;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct SimMetrics {
    pub ws_connections: IntGauge,
    pub ws_sent: IntCounter,
    pub ws_dropped: IntCounter,
    pub ws_disconnects: IntCounterVec,
    pub rest_requests: IntCounterVec,
    pub trades: IntCounter,
}

impl SimMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| registered(registry, IntCounter::new(name, help)?);
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            registered(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        Ok(Self {
            ws_connections: registered(
                registry,
                IntGauge::new(names::WS_CONNECTIONS, "Open WebSocket connections.")?,
            )?,
            ws_sent: counter(names::WS_SENT_TOTAL, "Stream messages sent to clients.")?,
            ws_dropped: counter(
                names::WS_DROPPED_TOTAL,
                "Stream messages withheld by a drop fault.",
            )?,
            ws_disconnects: counter_vec(
                names::WS_DISCONNECTS_TOTAL,
                "Connections the server ended, by reason.",
                &["reason"],
            )?,
            rest_requests: counter_vec(
                names::REST_REQUESTS_TOTAL,
                "REST requests by endpoint and status.",
                &["endpoint", "status"],
            )?,
            trades: counter(names::TRADES_TOTAL, "Aggregate trades generated.")?,
        })
    }
}
