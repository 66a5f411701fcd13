//! Heads: every interval, the exchange's newest aggregate trade id and newest closed 1m
//! kline per symbol (three cheap requests through the governor: weight 4 + 2 + 1) go to `market.heads.v1`,
//! so sync-verifier can count what it is missing.

use crate::governor::Class;
use crate::publish::Publisher;
use crate::rest::{BinanceRest, RestError, AGG_TRADES, KLINES};
use kit::contract::topics;
use kit::time::now_ms;
use kit::Telemetry;
use market::binance::{parse_agg_rows, parse_kline_rows};
use market::rest::KLINE_INTERVAL;
use market::{Head, SCHEMA_VERSION};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Samples the head of `symbol`.
pub async fn sample(rest: &BinanceRest, symbol: &str) -> Result<Head, String> {
    let s = symbol.to_string();
    let aggs = rest
        .get(
            Class::Heads,
            AGG_TRADES,
            &[("symbol", s.clone()), ("limit", "1".into())],
        )
        .await
        .map_err(|e: RestError| e.to_string())?;
    let klines = rest
        .get(
            Class::Heads,
            KLINES,
            &[
                ("symbol", s.clone()),
                ("interval", KLINE_INTERVAL.into()),
                ("limit", "2".into()),
            ],
        )
        .await
        .map_err(|e| e.to_string())?;
    let exchange_now = rest.server_time().await.map_err(|e| e.to_string())?;
    let now = now_ms();
    let last_agg = parse_agg_rows(symbol, &aggs, now)
        .map_err(|e| e.to_string())?
        .pop();
    let last_closed = parse_kline_rows(symbol, KLINE_INTERVAL, &klines, exchange_now)
        .map_err(|e| e.to_string())?
        .last()
        .map(|k| k.open_time_ms);
    Ok(Head {
        v: SCHEMA_VERSION,
        symbol: s,
        last_agg_id: last_agg.as_ref().map(|t| t.agg_id),
        last_agg_time_ms: last_agg.map(|t| t.trade_time_ms),
        last_closed_kline_open_ms: last_closed,
        interval: KLINE_INTERVAL.into(),
        observed_at_ms: now,
    })
}

/// Publishes every symbol's head every `interval` until `shutdown`.
pub async fn run(
    rest: Arc<BinanceRest>,
    publisher: Arc<Publisher>,
    symbols: Vec<String>,
    interval: Duration,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> Result<(), kit::KitError> {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        for symbol in &symbols {
            // A sample may wait out a Binance ban inside the governor: shutdown must not.
            let sampled = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                sampled = sample(&rest, symbol) => sampled,
            };
            match sampled {
                Ok(head) => {
                    publisher.enqueue(topics::HEADS, symbol, &head);
                }
                Err(err) => telemetry.error(kit::contract::ErrorKind::Heads, &err),
            }
        }
    }
}
