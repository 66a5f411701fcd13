//! Heads for many symbols from one request: `GET /api/v3/ticker/24hr?type=MINI&symbols=[..]`
//! (rest-api.md). Its `lastId` is the newest raw trade id, which an aggregate trade's `l`
//! (its last raw trade id) compares with directly; its `closeTime` is the exchange's clock
//! when the ticker was computed, so the newest closed one-minute kline opened one minute
//! before the minute it falls in.

use crate::binance::CodecError;
use crate::rest::KLINE_MS;
use serde::Deserialize;

/// One symbol's head as the ticker gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickerHead {
    pub symbol: String,
    /// The newest raw trade id of the last 24 h; `None` when nothing traded (Binance: -1).
    pub last_trade_id: Option<u64>,
    /// Open time of the newest closed one-minute kline at `close_time_ms`.
    pub last_closed_kline_open_ms: i64,
    /// The exchange's time of the ticker.
    pub close_time_ms: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Row {
    symbol: String,
    last_id: i64,
    close_time: i64,
}

/// The weight of one ticker request listing `symbols` symbols (rest-api.md: 2 up to 20,
/// 40 up to 100, 80 beyond).
pub fn weight(symbols: usize) -> u32 {
    match symbols {
        0..=20 => 2,
        21..=100 => 40,
        _ => 80,
    }
}

/// The `symbols` parameter: a JSON array of names.
pub fn symbols_param(symbols: &[String]) -> String {
    serde_json::to_string(symbols).unwrap_or_else(|_| "[]".into())
}

/// Reads the rows of a ticker answer (an array, or one object for `symbol=`).
pub fn parse_ticker_rows(body: &str) -> Result<Vec<TickerHead>, CodecError> {
    let value: serde_json::Value = serde_json::from_str(body)?;
    let rows: Vec<Row> = match value {
        serde_json::Value::Array(_) => serde_json::from_value(value),
        one => serde_json::from_value(one).map(|r| vec![r]),
    }
    .map_err(|source| CodecError::Shape {
        what: "ticker rows",
        source,
    })?;
    rows.into_iter().map(head).collect()
}

fn head(r: Row) -> Result<TickerHead, CodecError> {
    if r.close_time < KLINE_MS || r.last_id < -1 {
        return Err(CodecError::Unexpected(format!(
            "ticker of {}: lastId {} closeTime {}",
            r.symbol, r.last_id, r.close_time
        )));
    }
    Ok(TickerHead {
        last_trade_id: u64::try_from(r.last_id).ok(),
        last_closed_kline_open_ms: r.close_time - r.close_time % KLINE_MS - KLINE_MS,
        close_time_ms: r.close_time,
        symbol: r.symbol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_give_raw_trade_ids_and_the_newest_closed_minute() {
        let body = r#"[{"symbol":"BNBBTC","openPrice":"99.00000000","highPrice":"100.00000000",
            "lowPrice":"0.10000000","lastPrice":"4.00000200","volume":"8913.30000000",
            "quoteVolume":"15.30000000","openTime":1499783499040,"closeTime":1499869899040,
            "firstId":28385,"lastId":28460,"count":76},
            {"symbol":"LTCBTC","openPrice":"0.07","highPrice":"0.07","lowPrice":"0.07",
            "lastPrice":"0.07","volume":"0","quoteVolume":"0","openTime":1656908192899,
            "closeTime":1656994592899,"firstId":-1,"lastId":-1,"count":0}]"#;
        let heads = parse_ticker_rows(body).expect("rows");
        assert_eq!(heads[0].symbol, "BNBBTC");
        assert_eq!(heads[0].last_trade_id, Some(28460));
        assert_eq!(heads[0].last_closed_kline_open_ms, 1_499_869_800_000);
        assert_eq!(heads[1].last_trade_id, None, "nothing traded in 24 h");
        let one = r#"{"symbol":"BTCUSDT","lastId":7,"closeTime":120000}"#;
        assert_eq!(
            parse_ticker_rows(one).expect("one")[0].last_closed_kline_open_ms,
            60_000
        );
    }

    #[test]
    fn hostile_rows_are_refused_with_a_reason() {
        for body in [
            "{",
            r#"[{"symbol":"X","lastId":"7","closeTime":1}]"#,
            r#"[{"symbol":"X","lastId":-5,"closeTime":1700000000000}]"#,
            r#"[{"symbol":"X","lastId":5,"closeTime":-1}]"#,
            r#"{"code":-1121,"msg":"Invalid symbol."}"#,
        ] {
            assert!(parse_ticker_rows(body).is_err(), "{body}");
        }
    }

    #[test]
    fn weights_follow_the_symbol_count() {
        assert_eq!(
            (weight(3), weight(20), weight(21), weight(100)),
            (2, 2, 40, 40)
        );
        assert_eq!((weight(101), weight(400)), (80, 80));
        assert_eq!(symbols_param(&["A".into(), "B".into()]), r#"["A","B"]"#);
    }
}
