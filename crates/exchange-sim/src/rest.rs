//! The REST subset of `/api/v3` with Binance's weights, the `X-MBX-USED-WEIGHT-1M`
//! header on every answer, 429/418 with `Retry-After`, and Binance's error bodies.

use crate::app::App;
use crate::engine::levels;
use crate::limits::Decision;
use crate::market::Market;
use crate::records::decimal;
use http::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;

/// `(intervalNum, interval, letter)` of a weight window, as exchangeInfo and the
/// `X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter)` header name it.
pub fn window_name(window_secs: u64) -> (u64, &'static str, char) {
    if window_secs.is_multiple_of(60) {
        (window_secs / 60, "MINUTE", 'm')
    } else {
        (window_secs, "SECOND", 's')
    }
}

/// The used-weight header of a window (`x-mbx-used-weight-1m` for Binance's minute).
pub fn used_weight_header(window_secs: u64) -> String {
    let (num, _, letter) = window_name(window_secs);
    format!("x-mbx-used-weight-{num}{letter}")
}
const MAX_LIMIT: usize = 1000;
const HOUR_MS: i64 = 3_600_000;

/// One REST answer: status, JSON body, used weight, and `Retry-After` when limited.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub used_weight: u32,
    pub retry_after: Option<u64>,
}

/// A Binance error: HTTP status, code and message.
#[derive(Debug)]
struct ApiError(StatusCode, i64, String);

fn bad(code: i64, msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, code, msg.into())
}

type Params = HashMap<String, String>;

/// A query string's parameters, every `%XX` escape decoded (`symbols=%5B%22A%22%2C%22B%22%5D`).
/// A `+` stays a `+`, as this simulator always read it: `startTime=+0` is the number +0,
/// not " 0" (the sim's property tests hold it to that).
pub fn parse_query(query: Option<&str>) -> Params {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The weight of a request to `path` (BINANCE.md's table), or `None` for unknown paths.
pub fn weight(path: &str, params: &Params) -> Option<u32> {
    Some(match path {
        "/api/v3/ping" | "/api/v3/time" => 1,
        "/api/v3/exchangeInfo" => 20,
        "/api/v3/aggTrades" => 4,
        "/api/v3/klines" => 2,
        "/api/v3/ticker/24hr" => ticker_weight(params),
        "/api/v3/ticker/price" => {
            if params.contains_key("symbol") {
                2
            } else {
                4
            }
        }
        "/api/v3/depth" => match params
            .get("limit")
            .and_then(|l| l.parse::<u32>().ok())
            .unwrap_or(100)
        {
            0..=100 => 5,
            101..=500 => 25,
            501..=1000 => 50,
            _ => 250,
        },
        _ => return None,
    })
}

/// `/api/v3/ticker/24hr`'s weight (rest-api.md): 2 for one symbol or up to 20 listed, 40
/// for 21–100, 80 for more or for all (no `symbol` nor `symbols`).
fn ticker_weight(params: &Params) -> u32 {
    if params.contains_key("symbol") {
        return 2;
    }
    match params
        .get("symbols")
        .map(|s| symbol_list(s).map_or(0, |l| l.len()))
    {
        Some(0..=20) => 2,
        Some(21..=100) => 40,
        _ => 80,
    }
}

/// A `symbols` parameter: a JSON array of names (`["BTCUSDT","BNBUSDT"]`).
fn symbol_list(raw: &str) -> Option<Vec<String>> {
    serde_json::from_str(raw).ok()
}

/// Answers one REST request from `ip`.
pub fn handle(app: &App, ip: IpAddr, path: &str, params: &Params) -> Reply {
    let Some(weight) = weight(path, params) else {
        return Reply {
            status: StatusCode::NOT_FOUND,
            body: json!({"code": -1000, "msg": "Unknown endpoint."}),
            used_weight: 0,
            retry_after: None,
        };
    };
    let decision = app.limiter().check(ip, weight, app.wall_ms());
    let reply = match decision {
        Decision::Allow { used } => match route(app, path, params) {
            Ok(body) => Reply {
                status: StatusCode::OK,
                body,
                used_weight: used,
                retry_after: None,
            },
            Err(ApiError(status, code, msg)) => Reply {
                status,
                body: json!({"code": code, "msg": msg}),
                used_weight: used,
                retry_after: None,
            },
        },
        Decision::Limited {
            used,
            retry_after_secs,
        } => limited(used, retry_after_secs, app.limiter().limit()),
        Decision::Banned {
            used,
            retry_after_secs,
        } => banned(used, retry_after_secs),
    };
    app.metrics
        .rest_requests
        .with_label_values(&[path, reply.status.as_str()])
        .inc();
    reply
}

fn limited(used: u32, retry_after: u64, limit: u32) -> Reply {
    let msg = format!(
        "Too much request weight used; current limit is {limit} request weight per 1 MINUTE. \
         Please use WebSocket Streams for live updates to avoid polling the API."
    );
    Reply {
        status: StatusCode::TOO_MANY_REQUESTS,
        body: json!({"code": -1003, "msg": msg}),
        used_weight: used,
        retry_after: Some(retry_after),
    }
}

fn banned(used: u32, retry_after: u64) -> Reply {
    let until = kit::time::now_ms()
        .saturating_add(i64::try_from(retry_after.saturating_mul(1000)).unwrap_or(i64::MAX));
    let msg = format!(
        "Way too much request weight used; IP banned until {until}. \
         Please use WebSocket Streams for live updates to avoid bans."
    );
    Reply {
        status: StatusCode::IM_A_TEAPOT,
        body: json!({"code": -1003, "msg": msg}),
        used_weight: used,
        retry_after: Some(retry_after),
    }
}

fn route(app: &App, path: &str, p: &Params) -> Result<Value, ApiError> {
    match path {
        "/api/v3/ping" => Ok(json!({})),
        "/api/v3/time" => Ok(json!({"serverTime": app.clock.now_ms()})),
        "/api/v3/exchangeInfo" => Ok(exchange_info(app)),
        "/api/v3/aggTrades" => with_market(app, p, |m| agg_trades(m, p)),
        "/api/v3/klines" => with_market(app, p, |m| klines(m, p)),
        "/api/v3/depth" => with_market(app, p, |m| depth(m, p)),
        "/api/v3/ticker/24hr" => ticker_24h(app, p),
        _ => ticker_price(app, p),
    }
}

fn with_market(
    app: &App,
    p: &Params,
    f: impl FnOnce(&mut Market) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let name = p
        .get("symbol")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| mandatory("symbol"))?;
    let symbol = app
        .symbol(name)
        .ok_or_else(|| bad(-1121, "Invalid symbol."))?;
    let mut market = app.market(symbol);
    f(&mut market)
}

fn mandatory(name: &str) -> ApiError {
    bad(
        -1102,
        format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."),
    )
}

fn number<T: std::str::FromStr>(p: &Params, name: &str) -> Result<Option<T>, ApiError> {
    match p.get(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| bad(-1100, format!("Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."))),
    }
}

fn limit(p: &Params, default: usize, max: usize) -> Result<usize, ApiError> {
    let limit = number::<usize>(p, "limit")?.unwrap_or(default);
    if limit == 0 || limit > max {
        return Err(bad(-1130, "Data sent for parameter 'limit' is not valid."));
    }
    Ok(limit)
}

fn agg_trades(m: &mut Market, p: &Params) -> Result<Value, ApiError> {
    let limit = limit(p, 500, MAX_LIMIT)?;
    let from_id: Option<u64> = number(p, "fromId")?;
    let (start, end): (Option<i64>, Option<i64>) = (number(p, "startTime")?, number(p, "endTime")?);
    let trades = match (from_id, start, end) {
        (Some(id), _, _) => m.aggs_from_id(id, limit),
        (None, Some(s), Some(e)) if e.saturating_sub(s) > HOUR_MS => {
            return Err(bad(
                -1127,
                "More than 1 hours between startTime and endTime.",
            ))
        }
        (None, Some(s), e) => m.aggs_by_time(s, e.unwrap_or(s.saturating_add(HOUR_MS)), limit),
        (None, None, Some(e)) => m.aggs_by_time(e.saturating_sub(HOUR_MS), e, limit),
        (None, None, None) => m.aggs_recent(limit),
    };
    Ok(trades.iter().map(|t| t.rest_json()).collect())
}

fn klines(m: &mut Market, p: &Params) -> Result<Value, ApiError> {
    match p.get("interval").map(String::as_str) {
        None | Some("") => return Err(mandatory("interval")),
        Some("1m") => {}
        Some(_) => return Err(bad(-1120, "Invalid interval.")),
    }
    let limit = limit(p, 500, MAX_LIMIT)?;
    let rows = m.klines(number(p, "startTime")?, number(p, "endTime")?, limit);
    Ok(rows.iter().map(|k| k.rest_json()).collect())
}

fn depth(m: &mut Market, p: &Params) -> Result<Value, ApiError> {
    let limit = limit(p, 100, 5000)?;
    let (last_update_id, bids, asks) = m.depth_snapshot(limit.min(100));
    Ok(json!({"lastUpdateId": last_update_id, "bids": levels(&bids), "asks": levels(&asks)}))
}

fn ticker_price(app: &App, p: &Params) -> Result<Value, ApiError> {
    let price = |s: &crate::app::SymbolState| json!({"symbol": s.name, "price": decimal(app.market(s).last_price().into())});
    match p.get("symbol") {
        Some(name) => app
            .symbol(name)
            .map(price)
            .ok_or_else(|| bad(-1121, "Invalid symbol.")),
        None => Ok(app.symbols.iter().map(price).collect()),
    }
}

/// `/api/v3/ticker/24hr`: one symbol (an object), a list, or every symbol (arrays);
/// `type` FULL (default) or MINI.
fn ticker_24h(app: &App, p: &Params) -> Result<Value, ApiError> {
    let mini = match p.get("type").map(String::as_str) {
        None | Some("FULL") => false,
        Some("MINI") => true,
        Some(_) => return Err(bad(-1139, "Invalid ticker type.")),
    };
    let now = app.clock.now_ms();
    let one =
        |s: &crate::app::SymbolState| ticker_json(&s.name, &app.market(s).ticker_24h(now), mini);
    let named = |name: &str| {
        app.symbol(name)
            .ok_or_else(|| bad(-1121, "Invalid symbol."))
    };
    match (p.get("symbol"), p.get("symbols")) {
        (Some(_), Some(_)) => Err(bad(-1128, "Combination of optional parameters invalid.")),
        (Some(name), None) => named(name).map(one),
        (None, Some(list)) => {
            let names = symbol_list(list)
                .ok_or_else(|| bad(-1100, "Illegal characters found in parameter 'symbols'."))?;
            names
                .iter()
                .map(|n| named(n).map(one))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::from)
        }
        (None, None) => Ok(app.symbols.iter().map(one).collect()),
    }
}

fn ticker_json(symbol: &str, t: &crate::market::Ticker, mini: bool) -> Value {
    let d = |v: i64| decimal(v.into());
    let mut body = json!({"symbol": symbol, "openPrice": d(t.open), "highPrice": d(t.high),
        "lowPrice": d(t.low), "lastPrice": d(t.last), "volume": decimal(t.volume),
        "quoteVolume": decimal(t.quote_volume), "openTime": t.open_time, "closeTime": t.close_time,
        "firstId": t.first_id, "lastId": t.last_id, "count": t.count});
    if !mini {
        let change = t.last - t.open;
        let percent = if t.open == 0 {
            0
        } else {
            i128::from(change) * 100 * 1000 / i128::from(t.open)
        };
        let full = json!({"priceChange": d(change), "priceChangePercent": format!("{:.3}", percent as f64 / 1000.0),
            "weightedAvgPrice": d(t.last), "prevClosePrice": d(t.open), "lastQty": "0.00000000",
            "bidPrice": d(t.last), "bidQty": "0.00000000", "askPrice": d(t.last), "askQty": "0.00000000"});
        if let (Some(b), Some(f)) = (body.as_object_mut(), full.as_object()) {
            b.extend(f.clone());
        }
    }
    body
}

fn exchange_info(app: &App) -> Value {
    let limit = app.limiter().limit();
    let (num, interval, _) = window_name(app.config.weight_window_secs.max(1));
    let symbols: Vec<Value> = app
        .symbols
        .iter()
        .map(|s| {
            // the quote asset from the name's end, as Binance's usual quotes read
            let quote = ["USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB"]
                .into_iter()
                .find(|q| s.name.len() > q.len() && s.name.ends_with(q))
                .unwrap_or("USDT");
            let base = s.name.strip_suffix(quote).unwrap_or(&s.name);
            json!({"symbol": s.name, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8,
                   "quoteAsset": quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                   "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": true, "permissions": ["SPOT"]})
        })
        .collect();
    json!({
        "timezone": "UTC",
        "serverTime": app.clock.now_ms(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": interval, "intervalNum": num, "limit": limit},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000}
        ],
        "exchangeFilters": [],
        "symbols": symbols
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_fully_percent_decoded_and_a_plus_stays() {
        let p = parse_query(Some(
            "symbols=%5B%22BTCUSDT%22%2C%22ETHUSDT%22%5D&x=a+b&y=%2F%25&flag",
        ));
        assert_eq!(p["symbols"], r#"["BTCUSDT","ETHUSDT"]"#);
        assert_eq!(p["x"], "a+b");
        assert_eq!(p["y"], "/%");
        assert_eq!(p["flag"], "");
        assert!(parse_query(None).is_empty());
        assert_eq!(
            parse_query(Some("bad=%zz%"))["bad"],
            "%zz%",
            "a broken escape stays as sent"
        );
    }
}
