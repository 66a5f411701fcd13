//! The contract's Kafka records (JSON, `v` = schema version, key = symbol).

use serde::{Deserialize, Serialize};

/// Schema version of every record in this module.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a record came from: the live stream or a REST back-fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Ws,
    Backfill,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Ws => "ws",
            Source::Backfill => "backfill",
        }
    }
}

/// A market data stream of the contract; also the `stream` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stream {
    AggTrade,
    Kline,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::AggTrade => "aggTrade",
            Stream::Kline => "kline",
        }
    }
}

/// One aggregate trade (`market.aggtrades.v1`). Identified by (symbol, agg_id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggTrade {
    pub v: u32,
    pub symbol: String,
    pub agg_id: u64,
    pub price: String,
    pub qty: String,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
    pub trade_time_ms: i64,
    pub buyer_is_maker: bool,
    /// The stream event time (`E`); REST rows have none.
    pub event_time_ms: Option<i64>,
    pub received_at_ms: i64,
    pub source: Source,
}

impl AggTrade {
    /// Whether two records describe the same trade identically (ignoring how and when
    /// they were received).
    pub fn same_data(&self, other: &Self) -> bool {
        self.data() == other.data()
    }

    /// What describes the trade itself: every field but `v`, `event_time_ms`,
    /// `received_at_ms` and `source`.
    fn data(&self) -> (&str, u64, &str, &str, u64, u64, i64, bool) {
        (
            &self.symbol,
            self.agg_id,
            &self.price,
            &self.qty,
            self.first_trade_id,
            self.last_trade_id,
            self.trade_time_ms,
            self.buyer_is_maker,
        )
    }
}

/// One closed kline (`market.klines.v1`). Identified by (symbol, interval, open_time_ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kline {
    pub v: u32,
    pub symbol: String,
    pub interval: String,
    pub open_time_ms: i64,
    pub close_time_ms: i64,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub quote_volume: String,
    pub trades: u64,
    pub taker_buy_base: String,
    pub taker_buy_quote: String,
    /// First and last raw trade ids; REST rows do not carry them.
    pub first_trade_id: Option<i64>,
    pub last_trade_id: Option<i64>,
    pub event_time_ms: Option<i64>,
    pub received_at_ms: i64,
    pub source: Source,
}

impl Kline {
    /// Whether two records describe the same bar identically (trade ids compared only
    /// when both carry them).
    pub fn same_data(&self, o: &Self) -> bool {
        let ids_agree = match (self.trade_ids(), o.trade_ids()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        ids_agree && self.bar() == o.bar()
    }

    fn trade_ids(&self) -> Option<(i64, i64)> {
        self.first_trade_id.zip(self.last_trade_id)
    }

    /// What describes the bar itself, trade ids aside: symbol, interval, open and close
    /// times, trade count, and the eight decimals.
    fn bar(&self) -> (&str, &str, i64, i64, u64, [&str; 8]) {
        (
            &self.symbol,
            &self.interval,
            self.open_time_ms,
            self.close_time_ms,
            self.trades,
            [
                &self.open,
                &self.high,
                &self.low,
                &self.close,
                &self.volume,
                &self.quote_volume,
                &self.taker_buy_base,
                &self.taker_buy_quote,
            ],
        )
    }
}

/// The exchange's newest records for a symbol (`market.heads.v1`), sampled by the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub v: u32,
    pub symbol: String,
    pub last_agg_id: Option<u64>,
    /// Exchange time of that trade (absent in records of older collectors).
    #[serde(default)]
    pub last_agg_time_ms: Option<i64>,
    /// The newest raw trade id (the 24 h ticker's `lastId`): compares with the stored
    /// aggregate trades' highest `last_trade_id`. Heads from the ticker carry this instead
    /// of `last_agg_id` (absent in records of older collectors).
    #[serde(default)]
    pub last_trade_id: Option<u64>,
    /// Open time of the newest closed kline of `interval`.
    pub last_closed_kline_open_ms: Option<i64>,
    pub interval: String,
    pub observed_at_ms: i64,
}

/// What to re-fetch: an id range of aggregate trades, or a time range of klines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackfillRange {
    /// Aggregate ids `from_id..=to_id`.
    Ids { from_id: u64, to_id: u64 },
    /// Klines with open time in `start_ms..=end_ms`.
    Time { start_ms: i64, end_ms: i64 },
}

/// A request to the collector to re-fetch a range over REST (`sync.backfill.v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillRequest {
    pub v: u32,
    pub request_id: String,
    pub symbol: String,
    pub stream: Stream,
    pub range: BackfillRange,
    pub reason: String,
    pub requested_at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_requests_round_trip_with_tagged_ranges() {
        let req = BackfillRequest {
            v: 1,
            request_id: "r1".into(),
            symbol: "BTCUSDT".into(),
            stream: Stream::AggTrade,
            range: BackfillRange::Ids {
                from_id: 10,
                to_id: 20,
            },
            reason: "gap".into(),
            requested_at_ms: 5,
        };
        let json = serde_json::to_value(&req).expect("json");
        assert_eq!(
            json["range"],
            serde_json::json!({"kind": "ids", "from_id": 10, "to_id": 20})
        );
        assert_eq!(json["stream"], "aggTrade");
        assert_eq!(
            serde_json::from_value::<BackfillRequest>(json).expect("parse"),
            req
        );
    }
}
