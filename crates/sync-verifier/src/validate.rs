//! What the database will cast, checked before anything is written: a record that fails
//! here is dead-lettered with the reason instead of failing a whole batch's transaction
//! (and, retried, stalling every symbol behind it).
//!
//! Prices and quantities are exact decimals (`market::decimal::check`); ids fit PostgreSQL's
//! BIGINT; times are not before 1970 nor more than a day ahead of now (a future-dated
//! record would open a gap no back-fill can heal, or hide lag); klines are 1m and aligned
//! to the minute; symbols are Binance's syntax (upper-case letters and digits).

use crate::verifier::KLINE_STEP_MS;
use market::{AggTrade, Head, Kline};

/// How far ahead of our clock a record's time may be (the exchange-sim's market clock may
/// run faster than real time in tests; Binance's is within seconds of ours).
pub const MAX_AHEAD_MS: i64 = 24 * 3_600_000;
const SYMBOL_MAX_LEN: usize = 20;

/// Why a record cannot be stored: each says which field and why (values shown truncated).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("symbol {0:?} is not a Binance symbol")]
    Symbol(String),
    #[error("{field} {value} does not fit a BIGINT")]
    TooBig { field: &'static str, value: u64 },
    #[error("{field} {ms} is before 1970")]
    BeforeEpoch { field: &'static str, ms: i64 },
    #[error("{field} {ms} is more than a day ahead of now ({now_ms})")]
    TooFarAhead {
        field: &'static str,
        ms: i64,
        now_ms: i64,
    },
    #[error(transparent)]
    Decimal(market::decimal::DecimalError),
    #[error("first_trade_id {first} is after last_trade_id {last}")]
    TradeIdsReversed { first: u64, last: u64 },
    #[error("interval {0:?} is not collected (1m only)")]
    Interval(String),
    #[error("open_time_ms {0} is not aligned to the minute")]
    Unaligned(i64),
    #[error("close_time_ms {close} does not close the minute opened at {open}")]
    BadClose { close: i64, open: i64 },
    #[error("restart service {0:?} is not a service name")]
    RestartService(String),
}

/// A Binance symbol: 2 to 20 upper-case ASCII letters and digits.
pub fn symbol(s: &str) -> Result<(), Invalid> {
    let ok = (2..=SYMBOL_MAX_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Invalid::Symbol(truncate(s)))
    }
}

fn id(field: &'static str, value: u64) -> Result<(), Invalid> {
    if i64::try_from(value).is_ok() {
        Ok(())
    } else {
        Err(Invalid::TooBig { field, value })
    }
}

fn time(field: &'static str, ms: i64, now_ms: i64) -> Result<(), Invalid> {
    if ms < 0 {
        return Err(Invalid::BeforeEpoch { field, ms });
    }
    if ms > now_ms.saturating_add(MAX_AHEAD_MS) {
        return Err(Invalid::TooFarAhead { field, ms, now_ms });
    }
    Ok(())
}

fn decimals(fields: &[(&'static str, &str)]) -> Result<(), Invalid> {
    for (field, value) in fields {
        market::decimal::check(field, value).map_err(|e| {
            Invalid::Decimal(market::decimal::DecimalError {
                field: e.field,
                value: truncate(&e.value),
            })
        })?;
    }
    Ok(())
}

/// An aggregate trade the tables accept.
pub fn agg(a: &AggTrade, now_ms: i64) -> Result<(), Invalid> {
    symbol(&a.symbol)?;
    id("agg_id", a.agg_id)?;
    id("first_trade_id", a.first_trade_id)?;
    id("last_trade_id", a.last_trade_id)?;
    if a.first_trade_id > a.last_trade_id {
        return Err(Invalid::TradeIdsReversed {
            first: a.first_trade_id,
            last: a.last_trade_id,
        });
    }
    time("trade_time_ms", a.trade_time_ms, now_ms)?;
    decimals(&[("price", &a.price), ("qty", &a.qty)])
}

/// A closed 1m kline the tables accept.
pub fn kline(k: &Kline, now_ms: i64) -> Result<(), Invalid> {
    symbol(&k.symbol)?;
    if k.interval != market::rest::KLINE_INTERVAL {
        return Err(Invalid::Interval(truncate(&k.interval)));
    }
    time("open_time_ms", k.open_time_ms, now_ms)?;
    if k.open_time_ms % KLINE_STEP_MS != 0 {
        return Err(Invalid::Unaligned(k.open_time_ms));
    }
    if k.close_time_ms < k.open_time_ms || k.close_time_ms - k.open_time_ms >= KLINE_STEP_MS {
        return Err(Invalid::BadClose {
            close: k.close_time_ms,
            open: k.open_time_ms,
        });
    }
    id("trades", k.trades)?;
    decimals(&[
        ("open", &k.open),
        ("high", &k.high),
        ("low", &k.low),
        ("close", &k.close),
        ("volume", &k.volume),
        ("quote_volume", &k.quote_volume),
        ("taker_buy_base", &k.taker_buy_base),
        ("taker_buy_quote", &k.taker_buy_quote),
    ])
}

/// A head the verifier can compare with.
pub fn head(h: &Head, now_ms: i64) -> Result<(), Invalid> {
    symbol(&h.symbol)?;
    if let Some(id_) = h.last_agg_id {
        id("last_agg_id", id_)?;
    }
    if let Some(id_) = h.last_trade_id {
        id("last_trade_id", id_)?;
    }
    if let Some(t) = h.last_closed_kline_open_ms {
        time("last_closed_kline_open_ms", t, now_ms)?;
    }
    if let Some(t) = h.last_agg_time_ms {
        time("last_agg_time_ms", t, now_ms)?;
    }
    Ok(())
}

/// A restart event the verifier can link gaps to.
pub fn restart(r: &kit::restarts::RestartEvent, now_ms: i64) -> Result<(), Invalid> {
    if r.service.is_empty() || r.service.len() > 64 {
        return Err(Invalid::RestartService(truncate(&r.service)));
    }
    time("at_ms", r.at_ms, now_ms)
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use market::Source;

    const NOW: i64 = 1_800_000_000_000;

    fn good_agg() -> AggTrade {
        AggTrade {
            v: 1,
            symbol: "BTCUSDT".into(),
            agg_id: 7,
            price: "43125.17000000".into(),
            qty: "0.5".into(),
            first_trade_id: 10,
            last_trade_id: 12,
            trade_time_ms: NOW - 5,
            buyer_is_maker: true,
            event_time_ms: None,
            received_at_ms: NOW,
            source: Source::Ws,
        }
    }

    fn good_kline() -> Kline {
        Kline {
            v: 1,
            symbol: "ETHUSDT".into(),
            interval: "1m".into(),
            open_time_ms: NOW - NOW % 60_000 - 60_000,
            close_time_ms: NOW - NOW % 60_000 - 1,
            open: "1".into(),
            high: "2".into(),
            low: "0.5".into(),
            close: "1.5".into(),
            volume: "10".into(),
            quote_volume: "15".into(),
            trades: 3,
            taker_buy_base: "4".into(),
            taker_buy_quote: "6".into(),
            first_trade_id: Some(1),
            last_trade_id: Some(3),
            event_time_ms: None,
            received_at_ms: NOW,
            source: Source::Backfill,
        }
    }

    #[test]
    fn good_records_pass() {
        assert_eq!(agg(&good_agg(), NOW), Ok(()));
        assert_eq!(kline(&good_kline(), NOW), Ok(()));
        let old = Kline {
            open_time_ms: 1_500_000_000_000,
            close_time_ms: 1_500_000_059_999,
            ..good_kline()
        };
        assert_eq!(kline(&old, NOW), Ok(()), "years-old back-fill is fine");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(AggTrade, &str)> = vec![
            (
                AggTrade {
                    price: "abc".into(),
                    ..good_agg()
                },
                "price",
            ),
            (
                AggTrade {
                    qty: "-1".into(),
                    ..good_agg()
                },
                "qty",
            ),
            (
                AggTrade {
                    agg_id: u64::MAX,
                    ..good_agg()
                },
                "agg_id",
            ),
            (
                AggTrade {
                    last_trade_id: 1 << 63,
                    ..good_agg()
                },
                "last_trade_id",
            ),
            (
                AggTrade {
                    first_trade_id: 13,
                    ..good_agg()
                },
                "first_trade_id",
            ),
            (
                AggTrade {
                    trade_time_ms: -1,
                    ..good_agg()
                },
                "before 1970",
            ),
            (
                AggTrade {
                    trade_time_ms: NOW + MAX_AHEAD_MS + 1,
                    ..good_agg()
                },
                "ahead",
            ),
            (
                AggTrade {
                    symbol: "btc-usdt".into(),
                    ..good_agg()
                },
                "symbol",
            ),
            (
                AggTrade {
                    symbol: "X\0".into(),
                    ..good_agg()
                },
                "symbol",
            ),
        ];
        for (record, field) in cases {
            let err = agg(&record, NOW).expect_err(field);
            assert!(err.to_string().contains(field), "{err} should name {field}");
        }
        let future = Kline {
            open_time_ms: NOW + 2 * MAX_AHEAD_MS - (NOW + 2 * MAX_AHEAD_MS) % 60_000,
            ..good_kline()
        };
        assert!(kline(
            &Kline {
                close_time_ms: future.open_time_ms + 59_999,
                ..future
            },
            NOW
        )
        .expect_err("future")
        .to_string()
        .contains("ahead"));
        assert!(kline(
            &Kline {
                open_time_ms: good_kline().open_time_ms + 1,
                ..good_kline()
            },
            NOW
        )
        .expect_err("unaligned")
        .to_string()
        .contains("aligned"));
        assert!(kline(
            &Kline {
                close: "1e5".into(),
                ..good_kline()
            },
            NOW
        )
        .expect_err("close")
        .to_string()
        .contains("close"));
        assert!(kline(
            &Kline {
                interval: "5m".into(),
                ..good_kline()
            },
            NOW
        )
        .expect_err("interval")
        .to_string()
        .contains("interval"));
        assert!(kline(
            &Kline {
                trades: u64::MAX,
                ..good_kline()
            },
            NOW
        )
        .expect_err("trades")
        .to_string()
        .contains("trades"));
        let long = "9".repeat(10_000);
        assert!(
            agg(
                &AggTrade {
                    price: long,
                    ..good_agg()
                },
                NOW
            )
            .expect_err("long")
            .to_string()
            .len()
                < 200,
            "reasons stay short"
        );
    }

    #[test]
    fn restart_events_with_hostile_times_are_refused() {
        let r = kit::restarts::RestartEvent {
            v: 1,
            service: "collector".into(),
            at_ms: NOW,
            exit_code: Some(137),
            reason: "killed".into(),
            restart_count: 1,
            run_time_ms: None,
        };
        assert_eq!(restart(&r, NOW), Ok(()));
        assert!(restart(
            &kit::restarts::RestartEvent {
                at_ms: i64::MIN,
                ..r.clone()
            },
            NOW
        )
        .is_err());
        assert!(restart(
            &kit::restarts::RestartEvent {
                at_ms: i64::MAX,
                ..r.clone()
            },
            NOW
        )
        .is_err());
        assert!(restart(
            &kit::restarts::RestartEvent {
                service: String::new(),
                ..r
            },
            NOW
        )
        .is_err());
    }

    #[test]
    fn heads_are_checked_too() {
        let h = Head {
            v: 1,
            symbol: "BTCUSDT".into(),
            last_agg_id: Some(5),
            last_agg_time_ms: None,
            last_trade_id: None,
            last_closed_kline_open_ms: Some(NOW - 120_000),
            interval: "1m".into(),
            observed_at_ms: NOW,
        };
        assert_eq!(head(&h, NOW), Ok(()));
        assert!(head(
            &Head {
                last_agg_id: Some(u64::MAX),
                ..h.clone()
            },
            NOW
        )
        .is_err());
        assert!(head(
            &Head {
                last_agg_time_ms: Some(-1),
                ..h.clone()
            },
            NOW
        )
        .is_err());
        assert!(head(
            &Head {
                last_trade_id: None,
                last_closed_kline_open_ms: Some(i64::MAX),
                ..h
            },
            NOW
        )
        .is_err());
    }
}
