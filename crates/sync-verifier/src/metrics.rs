//! sync-verifier's metrics (names from `kit::contract::metrics`).

use kit::contract::metrics as names;
use kit::telemetry::registered;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

#[derive(Clone)]
pub struct SyncMetrics {
    pub last_event: GaugeVec,
    pub lag: GaugeVec,
    pub missing: IntGaugeVec,
    pub gaps_open: IntGaugeVec,
    pub gaps_detected: IntCounterVec,
    pub gaps_healed: IntCounterVec,
    pub heal_seconds: Histogram,
    pub end_to_end: Histogram,
    pub persisted: IntCounterVec,
    pub duplicates: IntCounterVec,
    pub mismatches: IntCounterVec,
    pub in_sync: IntGaugeVec,
    pub head_time: GaugeVec,
    pub retired: IntCounter,
}

impl SyncMetrics {
    pub fn register(registry: &Registry) -> Result<Self, kit::KitError> {
        let ss = &["symbol", "stream"];
        let heal_buckets = vec![1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
        let m = Self {
            last_event: registered(registry, GaugeVec::new(
                Opts::new(
                    names::SYNC_LAST_EVENT_TIMESTAMP_SECONDS,
                    "Exchange time of the newest stored record.",
                ),
                ss,
            )?)?,
            lag: registered(registry, GaugeVec::new(
                Opts::new(
                    names::SYNC_LAG_SECONDS,
                    "Now minus the exchange time of the newest stored record.",
                ),
                ss,
            )?)?,
            missing: registered(registry, IntGaugeVec::new(
                Opts::new(
                    names::SYNC_MISSING_RECORDS,
                    "Records between the contiguous watermark and the exchange head, not stored.",
                ),
                ss,
            )?)?,
            gaps_open: registered(registry, IntGaugeVec::new(
                Opts::new(names::SYNC_GAPS_OPEN, "Gaps not yet healed."),
                ss,
            )?)?,
            gaps_detected: registered(registry, IntCounterVec::new(
                Opts::new(names::SYNC_GAPS_DETECTED_TOTAL, "Gaps opened."),
                ss,
            )?)?,
            gaps_healed: registered(registry, IntCounterVec::new(
                Opts::new(names::SYNC_GAPS_HEALED_TOTAL, "Gaps healed."),
                ss,
            )?)?,
            heal_seconds: registered(registry, Histogram::with_opts(
                HistogramOpts::new(
                    names::SYNC_GAP_HEAL_SECONDS,
                    "Time from a gap's detection to its healing.",
                )
                .buckets(heal_buckets),
            )?)?,
            end_to_end: registered(registry, Histogram::with_opts(
                HistogramOpts::new(
                    names::SYNC_END_TO_END_LATENCY_SECONDS,
                    "Live aggregate trades: from the exchange's event time to the row committed.",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )?)?,
            persisted: registered(registry, IntCounterVec::new(
                Opts::new(names::SYNC_RECORDS_PERSISTED_TOTAL, "Records newly stored."),
                &["stream"],
            )?)?,
            duplicates: registered(registry, IntCounterVec::new(
                Opts::new(
                    names::SYNC_DUPLICATES_TOTAL,
                    "Records received again (already stored).",
                ),
                &["stream"],
            )?)?,
            mismatches: registered(registry, IntCounterVec::new(
                Opts::new(
                    names::SYNC_MISMATCHES_TOTAL,
                    "Records received again with different data.",
                ),
                &["stream"],
            )?)?,
            in_sync: registered(registry, IntGaugeVec::new(
                Opts::new(
                    names::SYNC_IN_SYNC,
                    "1 when the stream has no open gap, nothing missing and a small lag.",
                ),
                ss,
            )?)?,
            head_time: registered(registry, GaugeVec::new(
                Opts::new(
                    names::SYNC_EXCHANGE_HEAD_TIMESTAMP_SECONDS,
                    concat!(
                        "Exchange time of the exchange's newest record (newest trade; ",
                        "newest closed kline's close), from the heads."
                    ),
                ),
                ss,
            )?)?,
            retired: registered(registry, IntCounter::new(
                names::SYNC_SYMBOLS_RETIRED_TOTAL,
                concat!(
                    "Symbols dropped from the sync metrics after nothing named them ",
                    "for SYMBOL_RETIRE_SECS."
                ),
            )?)?,
        };
        for stream in ["aggTrade", "kline"] {
            for c in [&m.persisted, &m.duplicates, &m.mismatches] {
                c.with_label_values(&[stream]);
            }
        }
        Ok(m)
    }
}
