//! The collector's metrics (names from `kit::contract::metrics`).

use crate::publish::DropReason;
use kit::contract::metrics as names;
use kit::telemetry::registered;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct CollectorMetrics {
    pub rate_limit_used: IntGaugeVec,
    pub rate_limit_max: IntGaugeVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub rate_limited: IntCounterVec,
    pub ws_connected: IntGaugeVec,
    pub ws_reconnects: IntCounterVec,
    pub ws_messages: IntCounterVec,
    pub published: IntCounterVec,
    pub backfill_records: IntCounterVec,
    pub records_dropped: IntCounterVec,
}

impl CollectorMetrics {
    pub fn register(registry: &Registry) -> Result<Self, kit::KitError> {
        let buckets = vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            registered(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            registered(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
        };
        let latency = HistogramOpts::new(
            names::BINANCE_REQUEST_DURATION_SECONDS,
            "REST request latency.",
        );
        let m = Self {
            rate_limit_used: gauge(
                names::BINANCE_RATE_LIMIT_USED,
                "Request weight used in the current window (Binance's header, or our count).",
                &["limit", "interval"],
            )?,
            rate_limit_max: gauge(
                names::BINANCE_RATE_LIMIT_MAX,
                "The exchange's limit, from exchangeInfo.",
                &["limit", "interval"],
            )?,
            requests: counter(
                names::BINANCE_REQUESTS_TOTAL,
                "REST requests sent to Binance, by endpoint and HTTP status (or `error`).",
                &["endpoint", "status"],
            )?,
            request_duration: registered(
                registry,
                HistogramVec::new(latency.buckets(buckets), &["endpoint"])?,
            )?,
            rate_limited: counter(
                names::BINANCE_RATE_LIMITED_TOTAL,
                "429 and 418 answers received.",
                &["status"],
            )?,
            ws_connected: gauge(
                names::BINANCE_WS_CONNECTED,
                "1 while the stream's WebSocket is connected.",
                &["stream"],
            )?,
            ws_reconnects: counter(
                names::BINANCE_WS_RECONNECTS_TOTAL,
                "WebSocket reconnects, by reason.",
                &["reason"],
            )?,
            ws_messages: counter(
                names::BINANCE_WS_MESSAGES_TOTAL,
                "Stream messages received.",
                &["stream"],
            )?,
            published: counter(
                names::COLLECTOR_PUBLISHED_TOTAL,
                "Records delivered to Kafka.",
                &["topic"],
            )?,
            backfill_records: counter(
                names::COLLECTOR_BACKFILL_RECORDS_TOTAL,
                "Records fetched by back-fill.",
                &["symbol", "stream"],
            )?,
            records_dropped: counter(
                names::COLLECTOR_RECORDS_DROPPED_TOTAL,
                concat!(
                    "Stream records not published (e.g. the producer queue was full); ",
                    "back-fill heals the gap."
                ),
                &["reason"],
            )?,
        };
        for status in ["429", "418"] {
            m.rate_limited.with_label_values(&[status]);
        }
        for reason in DropReason::ALL {
            m.records_dropped.with_label_values(&[reason.label()]);
        }
        Ok(m)
    }
}
