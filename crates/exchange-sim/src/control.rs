//! The control API under `/sim/` (documented in crates/exchange-sim/README.md): fault
//! injection, market rate, weight limit, and `/sim/truth`, the exact records a test
//! compares against.

use crate::app::{App, SessionCmd};
use crate::faults::DropRule;
use crate::rest::parse_query;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
struct Duration_ {
    duration_ms: u64,
}

#[derive(Deserialize)]
struct RateLimitFault {
    status: u16,
    duration_ms: u64,
}

#[derive(Deserialize)]
struct Latency {
    #[serde(default)]
    rest_ms: u64,
    #[serde(default)]
    ws_ms: u64,
}

#[derive(Deserialize)]
struct Rate {
    symbol: Option<String>,
    trades_per_sec: f64,
}

#[derive(Deserialize)]
struct WeightLimit {
    limit: u32,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, Value)> {
    serde_json::from_slice(body).map_err(|e| (StatusCode::BAD_REQUEST, json!({"error": format!("bad request body: {e}")})))
}

/// Answers one control request.
pub fn handle(app: &App, method: &Method, path: &str, query: Option<&str>, body: &[u8]) -> (StatusCode, Value) {
    let result = match (method, path) {
        (&Method::GET, "/sim/truth") => truth(app, query),
        (&Method::GET, "/sim/state") => Ok(state(app)),
        (&Method::POST, op) => post(app, op, body).map(|()| json!({"ok": true})),
        _ => Err((StatusCode::NOT_FOUND, json!({"error": format!("no control endpoint {method} {path}")}))),
    };
    match result {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => e,
    }
}

fn post(app: &App, op: &str, body: &[u8]) -> Result<(), (StatusCode, Value)> {
    let now = app.real_ms();
    match op {
        "/sim/drop" => app.faults().add_drop(parse::<DropRule>(body)?, now),
        "/sim/stall" => app.faults().stall(now, parse::<Duration_>(body)?.duration_ms),
        "/sim/disconnect" => {
            let _ = app.commands.send(SessionCmd::Disconnect);
        }
        "/sim/garbage" => {
            let _ = app.commands.send(SessionCmd::Garbage);
        }
        "/sim/server-shutdown" => {
            let _ = app.commands.send(SessionCmd::ServerShutdown);
        }
        "/sim/ratelimit" => {
            let f: RateLimitFault = parse(body)?;
            if f.status != 429 && f.status != 418 {
                return Err((StatusCode::BAD_REQUEST, json!({"error": "status must be 429 or 418"})));
            }
            app.limiter().force(f.status, app.wall_ms() + f.duration_ms);
        }
        "/sim/latency" => {
            let l: Latency = parse(body)?;
            let mut faults = app.faults();
            (faults.rest_latency_ms, faults.ws_latency_ms) = (l.rest_ms, l.ws_ms);
        }
        "/sim/rate" => set_rate(app, parse(body)?)?,
        "/sim/weight-limit" => app.limiter().set_limit(parse::<WeightLimit>(body)?.limit),
        "/sim/reset" => {
            app.faults().reset();
            app.limiter().clear_forced();
        }
        _ => return Err((StatusCode::NOT_FOUND, json!({"error": format!("no control endpoint POST {op}")}))),
    }
    tracing::info!(op, body = %String::from_utf8_lossy(body), "fault injected");
    Ok(())
}

fn set_rate(app: &App, rate: Rate) -> Result<(), (StatusCode, Value)> {
    for s in &app.symbols {
        if rate.symbol.as_deref().is_none_or(|x| x.eq_ignore_ascii_case(&s.name)) {
            app.market(s).set_rate(rate.trades_per_sec);
        }
    }
    Ok(())
}

/// `GET /sim/truth?symbol=S&stream=aggTrade&fromId=&toId=` or
/// `...&stream=kline&startTime=&endTime=` (closed klines, open time in range).
fn truth(app: &App, query: Option<&str>) -> Result<Value, (StatusCode, Value)> {
    let p = parse_query(query);
    let missing = |what: &str| (StatusCode::BAD_REQUEST, json!({"error": format!("{what} is required")}));
    let num = |k: &str| p.get(k).and_then(|v| v.parse::<i64>().ok());
    let name = p.get("symbol").ok_or_else(|| missing("symbol"))?;
    let symbol = app.symbol(name).ok_or_else(|| (StatusCode::BAD_REQUEST, json!({"error": "unknown symbol"})))?;
    let market = app.market(symbol);
    let records: Vec<Value> = match p.get("stream").map(String::as_str) {
        Some("aggTrade") => {
            let from = num("fromId").and_then(|v| u64::try_from(v).ok()).ok_or_else(|| missing("fromId"))?;
            let to = num("toId").and_then(|v| u64::try_from(v).ok()).unwrap_or(u64::MAX - 1);
            market.aggs_between_ids(from, to).iter().map(|t| t.rest_json()).collect()
        }
        Some("kline") => {
            let start = num("startTime").ok_or_else(|| missing("startTime"))?;
            market.closed_klines(start, num("endTime").unwrap_or(i64::MAX)).iter().map(|k| k.rest_json()).collect()
        }
        _ => return Err(missing("stream=aggTrade|kline")),
    };
    Ok(json!({"symbol": symbol.name, "stream": p.get("stream"), "records": records}))
}

fn state(app: &App) -> Value {
    let symbols: Vec<Value> = app
        .symbols
        .iter()
        .map(|s| {
            let m = app.market(s);
            json!({"symbol": s.name, "first_id": m.first_agg_id(), "last_id": m.last_agg_id(),
                   "trades_per_sec": m.rate(), "held_trades": m.held_trades(), "held_klines": m.held_klines(),
                   "open_kline": m.current_kline().open_time})
        })
        .collect();
    json!({"symbols": symbols, "connections": app.metrics.ws_connections.get(), "server_time": app.clock.now_ms(), "speed": app.clock.speed()})
}
