//! The simulator's own metrics (names from `kit::contract::metrics::sim`).

use kit::contract::metrics::sim as names;
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
        let m = Self {
            ws_connections: IntGauge::new(names::WS_CONNECTIONS, "Open WebSocket connections.")?,
            ws_sent: IntCounter::new(names::WS_SENT_TOTAL, "Stream messages sent to clients.")?,
            ws_dropped: IntCounter::new(
                names::WS_DROPPED_TOTAL,
                "Stream messages withheld by a drop fault.",
            )?,
            ws_disconnects: IntCounterVec::new(
                Opts::new(
                    names::WS_DISCONNECTS_TOTAL,
                    "Connections the server ended, by reason.",
                ),
                &["reason"],
            )?,
            rest_requests: IntCounterVec::new(
                Opts::new(
                    names::REST_REQUESTS_TOTAL,
                    "REST requests by endpoint and status.",
                ),
                &["endpoint", "status"],
            )?,
            trades: IntCounter::new(names::TRADES_TOTAL, "Aggregate trades generated.")?,
        };
        registry.register(Box::new(m.ws_connections.clone()))?;
        registry.register(Box::new(m.ws_sent.clone()))?;
        registry.register(Box::new(m.ws_dropped.clone()))?;
        registry.register(Box::new(m.ws_disconnects.clone()))?;
        registry.register(Box::new(m.rest_requests.clone()))?;
        registry.register(Box::new(m.trades.clone()))?;
        Ok(m)
    }
}
