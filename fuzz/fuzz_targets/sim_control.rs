//! exchange-sim's control API: `parse_control` for every `/sim/` endpoint, on any bytes or
//! on a JSON object whose fields (`duration_ms`, `count`, `status`, `rest_ms`, `ws_ms`,
//! `trades_per_sec`, `limit`, ...) are edge numbers or junk; `parse_truth` on any query.
//! Never panics; an accepted command is within the documented bounds.
#![no_main]

use exchange_sim::control::{parse_control, parse_truth, Command, MAX_DURATION_MS, MAX_LATENCY_MS};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nghenhan_fuzz::Num;
use serde_json::{Map, Value};

const PATHS: [&str; 11] = [
    "/sim/drop",
    "/sim/stall",
    "/sim/disconnect",
    "/sim/garbage",
    "/sim/server-shutdown",
    "/sim/ratelimit",
    "/sim/latency",
    "/sim/rate",
    "/sim/weight-limit",
    "/sim/reset",
    "/sim/unknown",
];
const FIELDS: [&str; 9] = [
    "duration_ms",
    "count",
    "status",
    "rest_ms",
    "ws_ms",
    "trades_per_sec",
    "limit",
    "symbol",
    "stream",
];

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Fields(Vec<(u8, Num)>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    path: u8,
    body: Body,
    truth_query: String,
}

fn check(command: Command) {
    match command {
        Command::Drop(rule) => assert!(rule.duration_ms.is_none_or(|d| d <= MAX_DURATION_MS)),
        Command::Stall { duration_ms } => assert!(duration_ms <= MAX_DURATION_MS),
        Command::RateLimit {
            status,
            duration_ms,
        } => assert!((status == 429 || status == 418) && duration_ms <= MAX_DURATION_MS),
        Command::Latency { rest_ms, ws_ms } => {
            assert!(rest_ms <= MAX_LATENCY_MS && ws_ms <= MAX_LATENCY_MS)
        }
        Command::Rate { trades_per_sec, .. } => {
            assert!((0.0..=100_000.0).contains(&trades_per_sec))
        }
        _ => {}
    }
}

fuzz_target!(|input: Input| {
    let body = match &input.body {
        Body::Raw(bytes) => bytes.clone(),
        Body::Fields(fields) => {
            let object: Map<String, Value> = fields
                .iter()
                .map(|(k, v)| (FIELDS[usize::from(*k) % FIELDS.len()].to_string(), v.json()))
                .collect();
            Value::Object(object).to_string().into_bytes()
        }
    };
    if let Ok(command) = parse_control(PATHS[usize::from(input.path) % PATHS.len()], &body) {
        check(command);
    }
    let _ = parse_truth(Some(&input.truth_query));
});
