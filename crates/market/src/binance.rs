//! Binance's JSON → contract records: stream frames (raw or wrapped in
//! `{"stream":..,"data":..}`) and REST rows, as BINANCE.md describes them. Anything else is
//! a [`CodecError`] that names what was wrong.

use crate::decimal::{self, DecimalError};
use crate::records::{AggTrade, Kline, Source, SCHEMA_VERSION};
use serde::Deserialize;
use serde_json::Value;

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{what}: {source}")]
    Shape {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Decimal(#[from] DecimalError),
    #[error("unexpected payload: {0}")]
    Unexpected(String),
}

/// One stream frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    AggTrade(AggTrade),
    /// A kline update; only `closed` ones are final.
    Kline {
        kline: Kline,
        closed: bool,
    },
    /// `{"e":"serverShutdown"}`: reconnect now.
    ServerShutdown,
    /// An answer to a request (`{"result":..,"id":..}`).
    Reply,
}

#[derive(Deserialize)]
struct WsAgg {
    #[serde(rename = "E")]
    event_ms: i64,
    s: String,
    a: u64,
    p: String,
    q: String,
    f: u64,
    l: u64,
    #[serde(rename = "T")]
    trade_ms: i64,
    m: bool,
}

#[derive(Deserialize)]
struct WsKlineEvent {
    #[serde(rename = "E")]
    event_ms: i64,
    s: String,
    k: WsKline,
}

#[derive(Deserialize)]
struct WsKline {
    t: i64,
    #[serde(rename = "T")]
    close_ms: i64,
    i: String,
    f: i64,
    #[serde(rename = "L")]
    last_id: i64,
    o: String,
    c: String,
    h: String,
    l: String,
    v: String,
    n: u64,
    x: bool,
    q: String,
    #[serde(rename = "V")]
    taker_base: String,
    #[serde(rename = "Q")]
    taker_quote: String,
}

/// Names `what` a payload failed to be.
fn shape<T>(what: &'static str, parsed: serde_json::Result<T>) -> Result<T, CodecError> {
    parsed.map_err(|source| CodecError::Shape { what, source })
}

/// Reads one stream frame received at `received_at_ms`.
pub fn parse_frame(text: &str, received_at_ms: i64) -> Result<Frame, CodecError> {
    let mut value: Value = serde_json::from_str(text)?;
    if value.get("stream").is_some() {
        value = value
            .get_mut("data")
            .map(Value::take)
            .ok_or_else(|| CodecError::Unexpected("wrapper without data".into()))?;
    }
    if value.get("result").is_some() && value.get("id").is_some() {
        return Ok(Frame::Reply);
    }
    match value.get("e").and_then(Value::as_str) {
        Some("aggTrade") => Ok(Frame::AggTrade(agg_from_ws(
            shape("aggTrade event", serde_json::from_value(value))?,
            received_at_ms,
        )?)),
        Some("kline") => {
            let event: WsKlineEvent = shape("kline event", serde_json::from_value(value))?;
            let closed = event.k.x;
            Ok(Frame::Kline {
                kline: kline_from_ws(event, received_at_ms)?,
                closed,
            })
        }
        Some("serverShutdown") => Ok(Frame::ServerShutdown),
        Some(other) => Err(CodecError::Unexpected(format!("event type {other:?}"))),
        None => Err(CodecError::Unexpected("no event type".into())),
    }
}

fn agg_from_ws(w: WsAgg, received_at_ms: i64) -> Result<AggTrade, CodecError> {
    Ok(AggTrade {
        v: SCHEMA_VERSION,
        symbol: w.s,
        agg_id: w.a,
        price: decimal::check("p", &w.p)?,
        qty: decimal::check("q", &w.q)?,
        first_trade_id: w.f,
        last_trade_id: w.l,
        trade_time_ms: w.trade_ms,
        buyer_is_maker: w.m,
        event_time_ms: Some(w.event_ms),
        received_at_ms,
        source: Source::Ws,
    })
}

fn kline_from_ws(e: WsKlineEvent, received_at_ms: i64) -> Result<Kline, CodecError> {
    let k = e.k;
    Ok(Kline {
        v: SCHEMA_VERSION,
        symbol: e.s,
        interval: k.i,
        open_time_ms: k.t,
        close_time_ms: k.close_ms,
        open: decimal::check("o", &k.o)?,
        high: decimal::check("h", &k.h)?,
        low: decimal::check("l", &k.l)?,
        close: decimal::check("c", &k.c)?,
        volume: decimal::check("v", &k.v)?,
        quote_volume: decimal::check("q", &k.q)?,
        trades: k.n,
        taker_buy_base: decimal::check("V", &k.taker_base)?,
        taker_buy_quote: decimal::check("Q", &k.taker_quote)?,
        first_trade_id: Some(k.f),
        last_trade_id: Some(k.last_id),
        event_time_ms: Some(e.event_ms),
        received_at_ms,
        source: Source::Ws,
    })
}

/// A `/api/v3/aggTrades` row: [`WsAgg`]'s trade fields. Not `#[serde(flatten)]`ed into
/// `WsAgg`: flattening buffers every field (aggTrade frames read ~1.5x slower) and changes
/// which error a frame with two faults reports.
#[derive(Deserialize)]
struct RestAgg {
    a: u64,
    p: String,
    q: String,
    f: u64,
    l: u64,
    #[serde(rename = "T")]
    trade_ms: i64,
    m: bool,
}

/// Reads a `/api/v3/aggTrades` answer (records get `source` = backfill).
pub fn parse_agg_rows(
    symbol: &str,
    body: &str,
    received_at_ms: i64,
) -> Result<Vec<AggTrade>, CodecError> {
    let rows: Vec<RestAgg> = shape("aggTrades rows", serde_json::from_str(body))?;
    rows.into_iter()
        .map(|r| {
            let ws = WsAgg {
                event_ms: 0,
                s: symbol.to_string(),
                a: r.a,
                p: r.p,
                q: r.q,
                f: r.f,
                l: r.l,
                trade_ms: r.trade_ms,
                m: r.m,
            };
            let mut t = agg_from_ws(ws, received_at_ms)?;
            (t.event_time_ms, t.source) = (None, Source::Backfill);
            Ok(t)
        })
        .collect()
}

/// A REST kline row: `[t, o, h, l, c, v, T, q, n, V, Q, ignore]`.
type RestKline = (
    i64,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    u64,
    String,
    String,
    Value,
);

/// Reads a `/api/v3/klines` answer; rows whose close time is not before `now_ms` are the
/// open bar and are left out (only closed klines are records).
pub fn parse_kline_rows(
    symbol: &str,
    interval: &str,
    body: &str,
    now_ms: i64,
) -> Result<Vec<Kline>, CodecError> {
    let rows: Vec<RestKline> = shape("klines rows", serde_json::from_str(body))?;
    rows.into_iter()
        .filter(|r| r.6 < now_ms)
        .map(|(t, o, h, l, c, v, close, q, n, tb, tq, _)| {
            Ok(Kline {
                v: SCHEMA_VERSION,
                symbol: symbol.to_string(),
                interval: interval.to_string(),
                open_time_ms: t,
                close_time_ms: close,
                open: decimal::check("open", &o)?,
                high: decimal::check("high", &h)?,
                low: decimal::check("low", &l)?,
                close: decimal::check("close", &c)?,
                volume: decimal::check("volume", &v)?,
                quote_volume: decimal::check("quoteVolume", &q)?,
                trades: n,
                taker_buy_base: decimal::check("takerBuyBase", &tb)?,
                taker_buy_quote: decimal::check("takerBuyQuote", &tq)?,
                first_trade_id: None,
                last_trade_id: None,
                event_time_ms: None,
                received_at_ms: now_ms,
                source: Source::Backfill,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGG: &str = r#"{"e":"aggTrade","E":1672515782136,"s":"BNBBTC","a":12345,"p":"0.001","q":"100","f":100,"l":105,"T":1672515782136,"m":true,"M":true}"#;
    const KLINE: &str = r#"{"e":"kline","E":1672515782136,"s":"BNBBTC","k":{"t":1672515780000,"T":1672515839999,"s":"BNBBTC","i":"1m","f":100,"L":200,"o":"0.0010","c":"0.0020","h":"0.0025","l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000","V":"500","Q":"0.500","B":"123456"}}"#;

    #[test]
    fn reads_raw_and_wrapped_agg_trades_exactly() {
        let Frame::AggTrade(t) = parse_frame(AGG, 7).expect("parse") else {
            panic!("not a trade")
        };
        assert_eq!(
            (
                t.symbol.as_str(),
                t.agg_id,
                t.price.as_str(),
                t.qty.as_str()
            ),
            ("BNBBTC", 12345, "0.001", "100")
        );
        assert_eq!(
            (
                t.first_trade_id,
                t.last_trade_id,
                t.event_time_ms,
                t.received_at_ms
            ),
            (100, 105, Some(1672515782136), 7)
        );
        let wrapped = format!(r#"{{"stream":"bnbbtc@aggTrade","data":{AGG}}}"#);
        assert_eq!(
            parse_frame(&wrapped, 7).expect("wrapped"),
            Frame::AggTrade(t)
        );
    }

    #[test]
    fn reads_klines_with_their_closed_flag() {
        let Frame::Kline { kline, closed } = parse_frame(KLINE, 1).expect("parse") else {
            panic!("not a kline")
        };
        assert!(!closed);
        assert_eq!(
            (kline.open_time_ms, kline.close_time_ms, kline.trades),
            (1672515780000, 1672515839999, 100)
        );
        assert_eq!(
            (
                kline.open.as_str(),
                kline.high.as_str(),
                kline.first_trade_id
            ),
            ("0.0010", "0.0025", Some(100))
        );
    }

    #[test]
    fn recognises_server_shutdown_and_replies() {
        assert_eq!(
            parse_frame(r#"{"e":"serverShutdown","E":1}"#, 0).expect("parse"),
            Frame::ServerShutdown
        );
        assert_eq!(
            parse_frame(r#"{"result":null,"id":1}"#, 0).expect("parse"),
            Frame::Reply
        );
    }

    #[test]
    fn malformed_frames_are_errors_that_say_why() {
        assert!(matches!(parse_frame("{nope", 0), Err(CodecError::Json(_))));
        let no_price = AGG.replace(r#""p":"0.001","#, "");
        assert!(parse_frame(&no_price, 0)
            .expect_err("no price")
            .to_string()
            .contains("aggTrade event"));
        let bad_price = AGG.replace(r#""p":"0.001""#, r#""p":"-1""#);
        assert!(matches!(
            parse_frame(&bad_price, 0),
            Err(CodecError::Decimal(_))
        ));
        assert!(matches!(
            parse_frame(r#"{"e":"trade"}"#, 0),
            Err(CodecError::Unexpected(_))
        ));
    }

    #[test]
    fn reads_rest_rows_and_drops_the_open_kline() {
        let rows = r#"[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,"T":1498793709153,"m":true,"M":true}]"#;
        let t = parse_agg_rows("BTCUSDT", rows, 9).expect("rows");
        assert_eq!(
            (t[0].agg_id, t[0].source, t[0].event_time_ms),
            (26129, Source::Backfill, None)
        );
        let klines = r#"[[1499040000000,"0.01634790","0.80000000","0.01575800","0.01577100","148976.11427815",1499040059999,"2434.19055334",308,"1756.87402397","28.46694368","0"],
                         [1499040060000,"0.01577100","0.01577100","0.01577100","0.01577100","0",1499040119999,"0",0,"0","0","0"]]"#;
        let k = parse_kline_rows("BTCUSDT", "1m", klines, 1499040100000).expect("klines");
        assert_eq!(k.len(), 1, "the open bar is not a record");
        assert_eq!(
            (k[0].trades, k[0].quote_volume.as_str()),
            (308, "2434.19055334")
        );
        assert!(parse_agg_rows("X", r#"{"code":-1121,"msg":"Invalid symbol."}"#, 0).is_err());
    }
}
