//! Heads: the exchange's newest raw trade id and newest closed 1m kline of every symbol,
//! from one `GET /api/v3/ticker/24hr?type=MINI&symbols=[..]` per round (weight 2 up to 20
//! symbols, 40 up to 100, 80 beyond), published to `market.heads.v1` so sync-verifier can
//! count what it is missing.
//!
//! The cost does not grow with the symbol count: a round costs at most 80, and rounds are
//! spaced so heads spend at most `HEADS_WEIGHT_PER_MIN` ([`spacing`]). Heads ask the
//! governor as [`Class::Heads`], below back-fill.

use crate::governor::Class;
use crate::publish::Publisher;
use crate::rest::{BinanceRest, RestError};
use kit::contract::topics;
use kit::time::now_ms;
use kit::Telemetry;
use market::rest::KLINE_INTERVAL;
use market::ticker::{self, TickerHead};
use market::{Head, SCHEMA_VERSION};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Why a round of heads failed.
#[derive(Debug, thiserror::Error)]
pub enum HeadsError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error(transparent)]
    Decode(#[from] market::binance::CodecError),
}

/// The time between rounds: `interval`, stretched so one round's weight, repeated, stays
/// within `weight_per_min`.
pub fn spacing(symbols: usize, interval: Duration, weight_per_min: u32) -> Duration {
    let weight = u64::from(ticker::weight(symbols));
    let floor = Duration::from_millis(weight * 60_000 / u64::from(weight_per_min.max(1)));
    interval.max(floor)
}

/// Samples the heads of `symbols` in one request.
pub async fn sample(rest: &BinanceRest, symbols: &[String]) -> Result<Vec<Head>, HeadsError> {
    let endpoint = crate::rest::ticker_24hr(symbols.len());
    let query = [
        ("symbols", ticker::symbols_param(symbols)),
        ("type", "MINI".to_string()),
    ];
    let body = rest.get(Class::Heads, endpoint, &query).await?;
    let now = now_ms();
    Ok(ticker::parse_ticker_rows(&body)?
        .into_iter()
        .map(|t| head(t, now))
        .collect())
}

fn head(t: TickerHead, observed_at_ms: i64) -> Head {
    Head {
        v: SCHEMA_VERSION,
        symbol: t.symbol,
        last_agg_id: None,
        last_agg_time_ms: None,
        last_trade_id: t.last_trade_id,
        last_closed_kline_open_ms: Some(t.last_closed_kline_open_ms),
        interval: KLINE_INTERVAL.into(),
        observed_at_ms,
    }
}

/// Publishes every symbol's head once per [`spacing`] until `shutdown`.
pub async fn run(
    rest: Arc<BinanceRest>,
    publisher: Arc<Publisher>,
    symbols: Vec<String>,
    every: Duration,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> Result<(), kit::KitError> {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        // A round may wait out a Binance ban inside the governor: shutdown must not.
        let sampled = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            sampled = sample(&rest, &symbols) => sampled,
        };
        match sampled {
            Ok(heads) => {
                for head in &heads {
                    publisher.enqueue(topics::HEADS, &head.symbol, head);
                }
            }
            Err(err) => telemetry.error(kit::contract::ErrorKind::Heads, &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_spaced_so_heads_stay_within_their_weight_per_minute() {
        let five = Duration::from_secs(5);
        assert_eq!(spacing(3, five, 240), five, "2 every 5 s: 24 a minute");
        assert_eq!(
            spacing(400, five, 240),
            Duration::from_secs(20),
            "80 every 20 s"
        );
        assert_eq!(
            spacing(60, five, 240),
            Duration::from_secs(10),
            "40 every 10 s"
        );
        for n in [1, 3, 20, 21, 100, 101, 400, 2_000] {
            let per_min = 60.0 / spacing(n, five, 240).as_secs_f64() * f64::from(ticker::weight(n));
            assert!(per_min <= 240.0 + 1e-9, "{n} symbols: {per_min} a minute");
        }
        assert_eq!(
            spacing(400, five, 0),
            Duration::from_secs(4_800),
            "a zero budget is 1"
        );
    }
}
