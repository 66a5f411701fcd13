//! `sync_verifier::pipeline::decode` for every topic it consumes (and two it does not):
//! either any bytes, or a valid record of the topic with some fields replaced by edge
//! numbers or junk, so the checks behind the JSON shape (ids, times, alignment) see
//! extreme values. Never panics.
#![no_main]

use kit::contract::topics;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nghenhan_fuzz::Num;
use serde_json::{json, Value};

const TOPICS: [&str; 6] = [
    topics::AGGTRADES,
    topics::KLINES,
    topics::HEADS,
    topics::RESTARTS,
    topics::BACKFILL,
    "other.topic",
];

#[derive(Arbitrary, Debug)]
enum Input {
    Raw { topic: u8, payload: Option<Vec<u8>> },
    Record { topic: u8, fields: Vec<(u8, Num)> },
}

/// A valid record of `topic` at about `now`.
fn record(topic: &str, now: i64) -> Value {
    let open = now - now.rem_euclid(60_000) - 60_000;
    match topic {
        topics::AGGTRADES => {
            json!({"v": 1, "symbol": "BTCUSDT", "agg_id": 5, "price": "1.5", "qty": "2", "first_trade_id": 10, "last_trade_id": 11,
                                     "trade_time_ms": now, "buyer_is_maker": true, "event_time_ms": now, "received_at_ms": now, "source": "ws"})
        }
        topics::KLINES => {
            json!({"v": 1, "symbol": "BTCUSDT", "interval": "1m", "open_time_ms": open, "close_time_ms": open + 59_999,
                                  "open": "1", "high": "2", "low": "0.5", "close": "1.5", "volume": "10", "quote_volume": "15", "trades": 3,
                                  "taker_buy_base": "5", "taker_buy_quote": "7.5", "first_trade_id": 1, "last_trade_id": 3,
                                  "event_time_ms": now, "received_at_ms": now, "source": "ws"})
        }
        topics::HEADS => {
            json!({"v": 1, "symbol": "BTCUSDT", "last_agg_id": 5, "last_closed_kline_open_ms": open, "interval": "1m", "observed_at_ms": now})
        }
        _ => {
            json!({"v": 1, "service": "collector", "at_ms": now, "exit_code": 137, "reason": "oom", "restart_count": 2, "run_time_ms": 9000})
        }
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { topic, payload } => {
            let _ = sync_verifier::pipeline::decode(
                TOPICS[usize::from(topic) % TOPICS.len()],
                payload.as_deref(),
            );
        }
        Input::Record { topic, fields } => {
            let topic = TOPICS[usize::from(topic) % TOPICS.len()];
            let mut r = record(topic, kit::time::now_ms());
            let keys: Vec<String> = r
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default();
            for (k, v) in &fields {
                if let Some(key) = keys.get(usize::from(*k) % keys.len().max(1)) {
                    r[key.as_str()] = v.json();
                }
            }
            let _ = sync_verifier::pipeline::decode(topic, Some(r.to_string().as_bytes()));
        }
    }
});
