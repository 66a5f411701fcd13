//! market: the records that travel on the Kafka topics of the contract
//! (`market.aggtrades.v1`, `market.klines.v1`, `market.heads.v1`, `sync.backfill.v1`) and
//! the codecs that turn Binance's JSON (stream frames and REST rows) into them.
//!
//! Pure: no I/O, no clocks. Prices and quantities stay exact decimal strings (validated,
//! never parsed to f64).
#![forbid(unsafe_code)]

pub mod binance;
pub mod decimal;
pub mod records;
pub mod rest;
pub mod ticker;

pub use records::{
    AggTrade, BackfillRange, BackfillRequest, Head, Kline, Source, Stream, SCHEMA_VERSION,
};
