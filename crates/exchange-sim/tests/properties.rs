//! Property tests of what reaches the simulator from outside (random input on every
//! `cargo test`; `make fuzz` goes further): control bodies, `/sim/truth` and REST query
//! parameters never panic, out-of-range numbers are 400s, and the limiter and fault state
//! stay consistent whatever times and sizes they are given.

use exchange_sim::control::{
    parse_control, parse_truth, Command, ControlError, TruthRange, MAX_DURATION_MS, MAX_LATENCY_MS,
};
use exchange_sim::faults::{DropRule, Faults, StreamKind};
use exchange_sim::limits::{Decision, LimitConfig, Limiter};
use exchange_sim::{rest, App, Config};
use http::StatusCode;
use proptest::prelude::*;
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const PATHS: [&str; 12] = [
    "/sim/drop",
    "/sim/stall",
    "/sim/disconnect",
    "/sim/garbage",
    "/sim/server-shutdown",
    "/sim/ws-outage",
    "/sim/ratelimit",
    "/sim/latency",
    "/sim/rate",
    "/sim/weight-limit",
    "/sim/reset",
    "/sim/other",
];

/// Integers as a client might send them: extremes, around the bounds, anything.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just(i64::MIN.to_string()),
        Just("18446744073709551616".to_string()),
        Just(MAX_DURATION_MS.to_string()),
        (MAX_DURATION_MS + 1..MAX_DURATION_MS + 3).prop_map(|n| n.to_string()),
        "[0-9]{19,30}",
        "-?[0-9]{0,4}[.eE+-]?[0-9]{0,3}",
        any::<String>(),
    ]
}

/// The simulator's state with a few minutes of market, no weight limit in reach.
fn app() -> &'static Arc<App> {
    static APP: OnceLock<Arc<App>> = OnceLock::new();
    APP.get_or_init(|| {
        let vars = HashMap::from([
            ("SIM_WEIGHT_LIMIT", "4294967295"),
            ("SIM_HISTORY_TRADES", "5000"),
        ]);
        let config: Config = kit::config::parse_from_map(&vars).expect("config");
        let metrics = exchange_sim::metrics::SimMetrics::register(&prometheus::Registry::new())
            .expect("metrics");
        let app = App::new(config, metrics);
        app.warm_up(5);
        app
    })
}

fn get(path: &str, query: &str) -> rest::Reply {
    rest::handle(
        app(),
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        path,
        &rest::parse_query(Some(query)),
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn control_bodies_never_panic(pick in 0..PATHS.len(), body in prop_oneof![any::<Vec<u8>>(), any::<String>().prop_map(String::into_bytes)]) {
        let _ = parse_control(PATHS[pick], &body);
    }

    #[test]
    fn durations_are_accepted_exactly_up_to_the_bound(d in prop_oneof![any::<u64>(), 0..=MAX_DURATION_MS + 10]) {
        let ok = d <= MAX_DURATION_MS;
        let stall = parse_control("/sim/stall", json!({"duration_ms": d}).to_string().as_bytes());
        prop_assert_eq!(stall.is_ok(), ok, "{:?}", stall);
        let drop = parse_control("/sim/drop", json!({"duration_ms": d, "count": d}).to_string().as_bytes());
        prop_assert_eq!(drop.is_ok(), ok, "{:?}", drop);
        let limit = parse_control("/sim/ratelimit", json!({"status": 429, "duration_ms": d}).to_string().as_bytes());
        match limit {
            Ok(cmd) => prop_assert_eq!(cmd, Command::RateLimit { status: 429, duration_ms: d }),
            Err(ControlError::Invalid { field, .. }) => prop_assert!(!ok && field == "duration_ms"),
            Err(other) => prop_assert!(false, "{other}"),
        }
    }

    #[test]
    fn latencies_and_rates_are_bounded(ms in any::<u64>(), rate in any::<f64>()) {
        let latency = parse_control("/sim/latency", json!({"ws_ms": ms}).to_string().as_bytes());
        prop_assert_eq!(latency.is_ok(), ms <= MAX_LATENCY_MS);
        let body = format!(r#"{{"trades_per_sec":{rate:e}}}"#);
        let accepted = parse_control("/sim/rate", body.as_bytes()).is_ok();
        prop_assert_eq!(accepted, (0.0..=100_000.0).contains(&rate), "{}", body);
    }

    #[test]
    fn truth_queries_never_panic_and_read_ids_exactly(text in any::<String>(), from in any::<u64>(), to in any::<u64>(), n in number()) {
        prop_assume!(!n.contains(['&', '%']), "the query syntax itself, not a number");
        let _ = parse_truth(Some(&text));
        let q = parse_truth(Some(&format!("symbol=BTCUSDT&stream=aggTrade&fromId={from}&toId={to}"))).expect("ids");
        prop_assert_eq!(q.range, TruthRange::Ids { from, to });
        let by_time = parse_truth(Some(&format!("symbol=BTCUSDT&stream=kline&startTime={n}")));
        prop_assert_eq!(by_time.is_ok(), n.parse::<i64>().is_ok());
    }

    #[test]
    fn rest_parameters_never_panic(
        path in prop::sample::select(vec!["/api/v3/aggTrades", "/api/v3/klines", "/api/v3/depth"]),
        params in prop::collection::vec((prop::sample::select(vec!["fromId", "startTime", "endTime", "limit"]), number()), 0..4),
    ) {
        let mut query = "symbol=BTCUSDT&interval=1m".to_string();
        for (k, v) in &params {
            query.push_str(&format!("&{k}={v}"));
        }
        let reply = get(path, &query);
        prop_assert!(reply.status == StatusCode::OK || reply.status == StatusCode::BAD_REQUEST, "{query}: {reply:?}");
    }

    #[test]
    fn agg_trades_by_time_stay_in_their_range(start in any::<i64>(), span in 0..=3_600_000i64) {
        let end = start.saturating_add(span);
        let reply = get("/api/v3/aggTrades", &format!("symbol=BTCUSDT&startTime={start}&endTime={end}&limit=1000"));
        prop_assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        for t in reply.body.as_array().expect("rows") {
            let time = t["T"].as_i64().expect("T");
            prop_assert!((start..=end).contains(&time), "{time} outside {start}..={end}");
        }
    }

    #[test]
    fn the_limiter_never_allows_past_the_limit(
        limit in any::<u32>(), window_ms in 1..=u64::MAX, ban_ms in any::<u64>(), ban_after in any::<u32>(),
        requests in prop::collection::vec((any::<u32>(), any::<u64>()), 1..20),
    ) {
        let mut l = Limiter::new(LimitConfig { weight_limit: limit, window_ms, ban_after, ban_ms });
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for (weight, now) in requests {
            match l.check(ip, weight, now) {
                Decision::Allow { used } => prop_assert!(used <= limit),
                Decision::Limited { retry_after_secs, .. } | Decision::Banned { retry_after_secs, .. } => prop_assert!(retry_after_secs >= 1),
            }
        }
    }

    #[test]
    fn faults_take_any_times(ops in prop::collection::vec((any::<u64>(), prop::option::of(any::<u64>()), prop::option::of(any::<u64>())), 1..10)) {
        let mut f = Faults::default();
        for (now, count, duration_ms) in ops {
            f.add_drop(DropRule { symbol: None, stream: Some(StreamKind::AggTrade), count, duration_ms }, now);
            f.stall(now, duration_ms.unwrap_or(0));
            let dropped = f.should_drop("BTCUSDT", StreamKind::AggTrade, now);
            let lasts = count != Some(0) && duration_ms.is_none_or(|d| now.saturating_add(d) > now);
            prop_assert!(dropped || !lasts, "a fresh rule that lasts drops at once");
            prop_assert!(!f.should_drop("BTCUSDT", StreamKind::Depth, now), "other streams pass");
        }
    }
}
