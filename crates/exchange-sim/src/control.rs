//! The control API under `/sim/` (documented in crates/exchange-sim/README.md): fault
//! injection, market rate, weight limit, and `/sim/truth`, the exact records a test
//! compares against.
//!
//! Reading a request ([`parse_control`], [`parse_truth`]) is pure and separate from applying
//! it, so the fuzz targets and property tests exercise exactly what the server runs. Every
//! number from outside is range-checked there: a hostile value is a 400 that names the
//! field, never an overflow, a hang or a panic.

use crate::app::{App, SessionCmd};
use crate::faults::DropRule;
use crate::market::MAX_TRADES_PER_SEC;
use crate::rest::parse_query;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

/// The longest fault period (`duration_ms`): a week, longer than Binance's longest ban
/// (3 days).
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3_600_000;
/// The longest injected latency: a minute, longer than any client's request timeout.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// Why a control request was refused (answered 400, or 404 for an unknown endpoint).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no control endpoint POST {0}")]
    NotFound(String),
    #[error("bad request body: {0}")]
    Body(String),
    #[error("{field} must be {want}, not {value}")]
    Invalid {
        field: &'static str,
        value: String,
        want: &'static str,
    },
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("unknown symbol {0:?}")]
    UnknownSymbol(String),
}

impl ControlError {
    fn status(&self) -> StatusCode {
        match self {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// At most 60 characters of an outside value, for an error message.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// One `POST /sim/...` request, read and checked, not yet applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Drop(DropRule),
    Stall {
        duration_ms: u64,
    },
    Disconnect,
    Garbage,
    ServerShutdown,
    /// Closes every stream and refuses new ones for `duration_ms`.
    WsOutage {
        duration_ms: u64,
    },
    RateLimit {
        status: u16,
        duration_ms: u64,
    },
    Latency {
        rest_ms: u64,
        ws_ms: u64,
    },
    Rate {
        symbol: Option<String>,
        trades_per_sec: f64,
    },
    WeightLimit(u32),
    Reset,
}

/// An integer field of a body: its name, its largest value, and what the error says.
struct Field {
    name: &'static str,
    max: u64,
    want: &'static str,
}

impl Field {
    const fn new(name: &'static str, max: u64, want: &'static str) -> Self {
        Self { name, max, want }
    }
}

/// What an error says a field must be; each names its field's `max` (a test checks).
const ANY_U64: &str = "an integer in 0..=18446744073709551615";
const UP_TO_A_MINUTE: &str = "an integer in 0..=60000";
const UP_TO_A_WEEK: &str = "an integer in 0..=604800000 (7 days)";

const DURATION: Field = Field::new("duration_ms", MAX_DURATION_MS, UP_TO_A_WEEK);
const COUNT: Field = Field::new("count", u64::MAX, ANY_U64);
const REST_MS: Field = Field::new("rest_ms", MAX_LATENCY_MS, UP_TO_A_MINUTE);
const WS_MS: Field = Field::new("ws_ms", MAX_LATENCY_MS, UP_TO_A_MINUTE);
const STATUS: Field = Field::new("status", u64::MAX, "429 or 418");
const LIMIT: Field = Field::new("limit", u32::MAX as u64, "an integer in 0..=4294967295");

fn invalid(name: &'static str, value: &Value, want: &'static str) -> ControlError {
    ControlError::Invalid {
        field: name,
        value: clip(&value.to_string()),
        want,
    }
}

fn json(raw: &[u8]) -> Result<Value, ControlError> {
    serde_json::from_slice(raw).map_err(|e| ControlError::Body(clip(&e.to_string())))
}

/// `field` of `body`: absent or null is `None`; anything but an integer in range is an error.
fn uint(body: &Value, field: &Field) -> Result<Option<u64>, ControlError> {
    let v = &body[field.name];
    if v.is_null() {
        return Ok(None);
    }
    v.as_u64()
        .filter(|n| *n <= field.max)
        .map(Some)
        .ok_or_else(|| invalid(field.name, v, field.want))
}

fn required(body: &Value, field: &Field) -> Result<u64, ControlError> {
    uint(body, field)?.ok_or(ControlError::Missing(field.name))
}

/// Reads the body of `POST <path>`; the body of the calls without one is ignored.
pub fn parse_control(path: &str, raw: &[u8]) -> Result<Command, ControlError> {
    Ok(match path {
        "/sim/drop" => drop_rule(&json(raw)?)?,
        "/sim/stall" => Command::Stall {
            duration_ms: required(&json(raw)?, &DURATION)?,
        },
        "/sim/disconnect" => Command::Disconnect,
        "/sim/garbage" => Command::Garbage,
        "/sim/server-shutdown" => Command::ServerShutdown,
        "/sim/ws-outage" => Command::WsOutage {
            duration_ms: required(&json(raw)?, &DURATION)?,
        },
        "/sim/ratelimit" => rate_limit(&json(raw)?)?,
        "/sim/latency" => {
            let body = json(raw)?;
            Command::Latency {
                rest_ms: uint(&body, &REST_MS)?.unwrap_or(0),
                ws_ms: uint(&body, &WS_MS)?.unwrap_or(0),
            }
        }
        "/sim/rate" => rate(&json(raw)?)?,
        "/sim/weight-limit" => {
            let limit = required(&json(raw)?, &LIMIT)?;
            Command::WeightLimit(u32::try_from(limit).unwrap_or(u32::MAX)) // LIMIT.max is u32::MAX
        }
        "/sim/reset" => Command::Reset,
        _ => return Err(ControlError::NotFound(clip(path))),
    })
}

fn drop_rule(body: &Value) -> Result<Command, ControlError> {
    uint(body, &COUNT)?;
    uint(body, &DURATION)?;
    let rule = DropRule::deserialize(body).map_err(|e| ControlError::Body(clip(&e.to_string())))?;
    Ok(Command::Drop(rule))
}

fn rate_limit(body: &Value) -> Result<Command, ControlError> {
    let status = required(body, &STATUS)?;
    let status = [429, 418]
        .into_iter()
        .find(|s| u64::from(*s) == status)
        .ok_or_else(|| invalid("status", &body["status"], STATUS.want))?;
    Ok(Command::RateLimit {
        status,
        duration_ms: required(body, &DURATION)?,
    })
}

fn rate(body: &Value) -> Result<Command, ControlError> {
    let symbol = match &body["symbol"] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => return Err(invalid("symbol", other, "a symbol name")),
    };
    let v = &body["trades_per_sec"];
    if v.is_null() {
        return Err(ControlError::Missing("trades_per_sec"));
    }
    // JSON has no NaN or infinity, so a number in range is all there is to check.
    let trades_per_sec = v
        .as_f64()
        .filter(|r| (0.0..=MAX_TRADES_PER_SEC).contains(r))
        .ok_or_else(|| invalid("trades_per_sec", v, "a number in 0..=100000"))?;
    Ok(Command::Rate {
        symbol,
        trades_per_sec,
    })
}

/// Answers one control request.
pub fn handle(
    app: &App,
    method: &Method,
    path: &str,
    query: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value) {
    let result = match (method, path) {
        (&Method::GET, "/sim/truth") => parse_truth(query).and_then(|q| truth(app, &q)),
        (&Method::GET, "/sim/state") => Ok(state(app)),
        (&Method::POST, op) => parse_control(op, body).map(|cmd| {
            tracing::info!(op, command = ?cmd, "fault injected");
            apply(app, cmd);
            json!({"ok": true})
        }),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                json!({"error": format!("no control endpoint {method} {path}")}),
            )
        }
    };
    match result {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (e.status(), json!({"error": e.to_string()})),
    }
}

/// Applies a checked command.
fn apply(app: &App, cmd: Command) {
    let now = app.real_ms();
    match cmd {
        Command::Drop(rule) => app.faults().add_drop(rule, now),
        Command::Stall { duration_ms } => app.faults().stall(now, duration_ms),
        Command::Disconnect => send(app, SessionCmd::Disconnect),
        Command::Garbage => send(app, SessionCmd::Garbage),
        Command::ServerShutdown => send(app, SessionCmd::ServerShutdown),
        Command::WsOutage { duration_ms } => {
            app.faults().refuse_ws(now, duration_ms);
            send(app, SessionCmd::Disconnect);
        }
        Command::RateLimit {
            status,
            duration_ms,
        } => app
            .limiter()
            .force(status, app.wall_ms().saturating_add(duration_ms)),
        Command::Latency { rest_ms, ws_ms } => {
            let mut faults = app.faults();
            (faults.rest_latency_ms, faults.ws_latency_ms) = (rest_ms, ws_ms);
        }
        Command::Rate {
            symbol,
            trades_per_sec,
        } => set_rate(app, symbol.as_deref(), trades_per_sec),
        Command::WeightLimit(limit) => app.limiter().set_limit(limit),
        Command::Reset => {
            app.faults().reset();
            app.limiter().clear_forced();
        }
    }
}

fn send(app: &App, cmd: SessionCmd) {
    let _ = app.commands.send(cmd); // no session listening is fine
}

fn set_rate(app: &App, symbol: Option<&str>, trades_per_sec: f64) {
    for s in &app.symbols {
        if symbol.is_none_or(|x| x.eq_ignore_ascii_case(&s.name)) {
            app.market(s).set_rate(trades_per_sec);
        }
    }
}

/// A checked `GET /sim/truth` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    pub symbol: String,
    pub range: TruthRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruthRange {
    /// Aggregate trades with `from ≤ id ≤ to`.
    Ids { from: u64, to: u64 },
    /// Closed klines with `start ≤ open time ≤ end`.
    Time { start: i64, end: i64 },
}

/// An optional integer query parameter; present but not an integer of `T` is an error.
fn param<T: std::str::FromStr>(
    p: &std::collections::HashMap<String, String>,
    field: &'static str,
    want: &'static str,
) -> Result<Option<T>, ControlError> {
    p.get(field)
        .map(|v| {
            v.parse::<T>().map_err(|_| ControlError::Invalid {
                field,
                value: clip(v),
                want,
            })
        })
        .transpose()
}

/// Reads `?symbol=S&stream=aggTrade&fromId=&toId=` or `...&stream=kline&startTime=&endTime=`.
pub fn parse_truth(query: Option<&str>) -> Result<Truth, ControlError> {
    const TIMES: &str = "an integer in -9223372036854775808..=9223372036854775807";
    let p = parse_query(query);
    let symbol = p
        .get("symbol")
        .ok_or(ControlError::Missing("symbol"))?
        .clone();
    let range = match p.get("stream").map(String::as_str) {
        Some("aggTrade") => TruthRange::Ids {
            from: param(&p, "fromId", ANY_U64)?.ok_or(ControlError::Missing("fromId"))?,
            to: param(&p, "toId", ANY_U64)?.unwrap_or(u64::MAX - 1),
        },
        Some("kline") => TruthRange::Time {
            start: param(&p, "startTime", TIMES)?.ok_or(ControlError::Missing("startTime"))?,
            end: param(&p, "endTime", TIMES)?.unwrap_or(i64::MAX),
        },
        _ => return Err(ControlError::Missing("stream=aggTrade|kline")),
    };
    Ok(Truth { symbol, range })
}

fn truth(app: &App, q: &Truth) -> Result<Value, ControlError> {
    let symbol = app
        .symbol(&q.symbol)
        .ok_or_else(|| ControlError::UnknownSymbol(clip(&q.symbol)))?;
    let market = app.market(symbol);
    let (stream, records): (&str, Vec<Value>) = match q.range {
        TruthRange::Ids { from, to } => (
            "aggTrade",
            market
                .aggs_between_ids(from, to)
                .iter()
                .map(|t| t.rest_json())
                .collect(),
        ),
        TruthRange::Time { start, end } => (
            "kline",
            market
                .closed_klines(start, end)
                .iter()
                .map(|k| k.rest_json())
                .collect(),
        ),
    };
    Ok(json!({"symbol": symbol.name, "stream": stream, "records": records}))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::StreamKind;

    fn parse(path: &str, body: &str) -> Result<Command, ControlError> {
        parse_control(path, body.as_bytes())
    }

    fn refused(path: &str, body: &str, field: &str) {
        let err = parse(path, body).expect_err(body);
        assert!(
            matches!(err, ControlError::Invalid { .. } | ControlError::Body(_)),
            "{path} {body}: {err:?}"
        );
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(
            err.to_string().contains(field),
            "{path} {body}: {err} does not name {field}"
        );
    }

    #[test]
    fn reads_every_command() {
        let drop = parse(
            "/sim/drop",
            r#"{"symbol":"BTCUSDT","stream":"kline","count":3,"duration_ms":500}"#,
        )
        .expect("drop");
        let rule = DropRule {
            symbol: Some("BTCUSDT".into()),
            stream: Some(StreamKind::Kline),
            count: Some(3),
            duration_ms: Some(500),
        };
        assert_eq!(drop, Command::Drop(rule));
        assert_eq!(
            parse("/sim/stall", r#"{"duration_ms":1500}"#).expect("stall"),
            Command::Stall { duration_ms: 1_500 }
        );
        assert_eq!(
            parse("/sim/ws-outage", r#"{"duration_ms":60000}"#).expect("outage"),
            Command::WsOutage {
                duration_ms: 60_000
            }
        );
        assert!(matches!(
            parse("/sim/ws-outage", "{}"),
            Err(ControlError::Missing("duration_ms"))
        ));
        assert_eq!(
            parse("/sim/ratelimit", r#"{"status":418,"duration_ms":60000}"#).expect("rl"),
            Command::RateLimit {
                status: 418,
                duration_ms: 60_000
            }
        );
        assert_eq!(
            parse("/sim/latency", r#"{"rest_ms":300}"#).expect("latency"),
            Command::Latency {
                rest_ms: 300,
                ws_ms: 0
            }
        );
        assert_eq!(
            parse("/sim/rate", r#"{"trades_per_sec":0.0}"#).expect("rate"),
            Command::Rate {
                symbol: None,
                trades_per_sec: 0.0
            }
        );
        assert_eq!(
            parse("/sim/weight-limit", r#"{"limit":4294967295}"#).expect("limit"),
            Command::WeightLimit(u32::MAX)
        );
        assert_eq!(
            parse("/sim/disconnect", "not even json").expect("no body needed"),
            Command::Disconnect
        );
        assert_eq!(parse("/sim/reset", "{}").expect("reset"), Command::Reset);
        assert_eq!(
            parse("/sim/nope", "{}").expect_err("unknown").status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn each_integer_field_names_its_own_bound() {
        for f in [DURATION, COUNT, REST_MS, WS_MS, LIMIT] {
            let want = format!("an integer in 0..={}", f.max);
            assert!(f.want.starts_with(&want), "{}: {}", f.name, f.want);
        }
    }

    #[test]
    fn extreme_durations_are_400s_that_name_the_field() {
        let max = u64::MAX;
        refused(
            "/sim/stall",
            &format!(r#"{{"duration_ms":{max}}}"#),
            "duration_ms",
        );
        refused(
            "/sim/drop",
            &format!(r#"{{"duration_ms":{max}}}"#),
            "duration_ms",
        );
        refused(
            "/sim/ratelimit",
            &format!(r#"{{"status":429,"duration_ms":{max}}}"#),
            "duration_ms",
        );
        refused(
            "/sim/ratelimit",
            &format!(r#"{{"status":429,"duration_ms":{}}}"#, MAX_DURATION_MS + 1),
            "duration_ms",
        );
        refused(
            "/sim/stall",
            r#"{"duration_ms":18446744073709551616}"#,
            "duration_ms",
        ); // u64::MAX + 1
        refused("/sim/stall", r#"{"duration_ms":-1}"#, "duration_ms");
        assert_eq!(
            parse(
                "/sim/stall",
                &format!(r#"{{"duration_ms":{MAX_DURATION_MS}}}"#)
            )
            .expect("the bound"),
            Command::Stall {
                duration_ms: MAX_DURATION_MS
            }
        );
    }

    #[test]
    fn extreme_latencies_rates_limits_and_statuses_are_400s() {
        refused(
            "/sim/latency",
            &format!(r#"{{"rest_ms":{}}}"#, u64::MAX),
            "rest_ms",
        );
        refused("/sim/latency", r#"{"ws_ms":60001}"#, "ws_ms");
        refused("/sim/rate", r#"{"trades_per_sec":-1}"#, "trades_per_sec");
        refused("/sim/rate", r#"{"trades_per_sec":1e300}"#, "trades_per_sec");
        refused(
            "/sim/rate",
            r#"{"trades_per_sec":1e999}"#,
            "number out of range",
        );
        refused("/sim/rate", r#"{"trades_per_sec":NaN}"#, "bad request body");
        refused("/sim/weight-limit", r#"{"limit":4294967296}"#, "limit");
        refused("/sim/weight-limit", r#"{"limit":-5}"#, "limit");
        refused(
            "/sim/ratelimit",
            r#"{"status":500,"duration_ms":1}"#,
            "status",
        );
        refused(
            "/sim/ratelimit",
            r#"{"status":65536,"duration_ms":1}"#,
            "status",
        );
        refused("/sim/drop", r#"{"count":-1}"#, "count");
    }

    #[test]
    fn huge_bodies_are_refused_without_echoing_them_whole() {
        let huge = format!(r#"{{"duration_ms":"{}"}}"#, "9".repeat(100_000));
        let err = parse("/sim/stall", &huge).expect_err("a string is not a duration");
        assert!(
            err.to_string().len() < 1_000,
            "the error does not carry the body"
        );
        assert!(
            parse("/sim/stall", &"[".repeat(100_000)).is_err(),
            "deep nesting is refused, not a stack overflow"
        );
    }

    #[test]
    fn truth_queries_check_their_numbers() {
        let t = parse_truth(Some(
            "symbol=BTCUSDT&stream=aggTrade&fromId=18446744073709551615",
        ))
        .expect("max id");
        assert_eq!(
            t.range,
            TruthRange::Ids {
                from: u64::MAX,
                to: u64::MAX - 1
            }
        );
        let t = parse_truth(Some(
            "symbol=X&stream=kline&startTime=-9223372036854775808&endTime=-1",
        ))
        .expect("min time");
        assert_eq!(
            t.range,
            TruthRange::Time {
                start: i64::MIN,
                end: -1
            }
        );
        for (query, field) in [
            ("symbol=X&stream=aggTrade&fromId=-1", "fromId"),
            (
                "symbol=X&stream=aggTrade&fromId=18446744073709551616",
                "fromId",
            ),
            ("symbol=X&stream=aggTrade&fromId=1&toId=abc", "toId"),
            (
                "symbol=X&stream=kline&startTime=9223372036854775808",
                "startTime",
            ),
            ("symbol=X&stream=kline&startTime=0&endTime=1e3", "endTime"),
            ("symbol=X&stream=aggTrade", "fromId"),
            ("symbol=X&stream=trades", "stream"),
            ("stream=kline&startTime=0", "symbol"),
        ] {
            let err = parse_truth(Some(query)).expect_err(query);
            assert!(err.to_string().contains(field), "{query}: {err}");
        }
        let long = format!("symbol=X&stream=aggTrade&fromId={}", "1".repeat(10_000));
        assert!(
            parse_truth(Some(&long))
                .expect_err("huge")
                .to_string()
                .len()
                < 200,
            "the error quotes a bounded prefix"
        );
    }
}
