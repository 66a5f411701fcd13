//! The engine: advances every market on a 10 ms tick and publishes its events on the
//! streams: each aggregate trade, the open kline every 2 s and each closed kline at once,
//! and a depth diff every 100 ms.

use crate::app::{App, SymbolState};
use crate::faults::StreamKind;
use crate::market::DepthDiff;
use crate::records::decimal;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

const TICK: Duration = Duration::from_millis(10);
const KLINE_PUSH: Duration = Duration::from_secs(2);
const DEPTH_PUSH: Duration = Duration::from_millis(100);

/// Runs until `shutdown`.
pub async fn run(app: Arc<App>, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last = Instant::now();
    let (mut last_kline, mut last_depth) = (Instant::now(), Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let dt = last.elapsed().as_secs_f64();
        last = Instant::now();
        let push_kline = last_kline.elapsed() >= KLINE_PUSH;
        let push_depth = last_depth.elapsed() >= DEPTH_PUSH;
        for symbol in &app.symbols {
            step_symbol(&app, symbol, dt, push_kline);
            if push_depth {
                publish_depth(&app, symbol);
            }
        }
        if push_kline {
            last_kline = Instant::now();
        }
        if push_depth {
            last_depth = Instant::now();
        }
    }
}

fn step_symbol(app: &App, symbol: &SymbolState, dt: f64, push_kline: bool) {
    let now = app.clock.now_ms();
    let (step, current) = {
        let mut market = app.market(symbol);
        let step = market.step(now, dt);
        (step, push_kline.then(|| market.current_kline().clone()))
    };
    app.metrics.trades.inc_by(step.trades.len() as u64);
    let trades = step.trades.iter().map(|t| t.ws_json(&symbol.name, now));
    publish_each(app, symbol, StreamKind::AggTrade, "aggTrade", trades);
    let closed = step
        .closed
        .iter()
        .map(|k| k.ws_json(&symbol.name, now, true));
    let open = current.map(|k| k.ws_json(&symbol.name, now, false));
    publish_each(
        app,
        symbol,
        StreamKind::Kline,
        "kline_1m",
        closed.chain(open),
    );
}

/// Publishes `payloads` in order on `<symbol>@<suffix>`.
fn publish_each(
    app: &App,
    symbol: &SymbolState,
    kind: StreamKind,
    suffix: &str,
    payloads: impl Iterator<Item = String>,
) {
    let stream = format!("{}@{suffix}", symbol.lower);
    for payload in payloads {
        app.publish(symbol, kind, stream.clone(), payload);
    }
}

fn publish_depth(app: &App, symbol: &SymbolState) {
    let diff = app.market(symbol).depth_diff();
    let payload = depth_json(&symbol.name, app.clock.now_ms(), &diff);
    app.publish(
        symbol,
        StreamKind::Depth,
        format!("{}@depth@100ms", symbol.lower),
        payload,
    );
}

/// Levels as Binance prints them: `[["price","qty"], ...]`.
pub fn levels(levels: &[(i64, i64)]) -> serde_json::Value {
    levels
        .iter()
        .map(|(p, q)| json!([decimal((*p).into()), decimal((*q).into())]))
        .collect()
}

fn depth_json(symbol: &str, now: i64, d: &DepthDiff) -> String {
    json!({"e":"depthUpdate","E":now,"s":symbol,"U":d.first_update_id,"u":d.final_update_id,"b":levels(&d.bids),"a":levels(&d.asks)})
        .to_string()
}
