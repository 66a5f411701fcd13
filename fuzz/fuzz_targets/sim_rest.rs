//! exchange-sim's REST API (`rest::handle`, what the server runs for `/api/v3/...`) and
//! `/sim/truth` (`control::handle`) against a market that holds trades and klines, with
//! any raw query or with structured parameters (`fromId`, `startTime`, ... set to edge
//! numbers). Never panics; answers are 200, 400 or 404.
#![no_main]

use exchange_sim::{control, rest, App, Config};
use http::{Method, StatusCode};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nghenhan_fuzz::Num;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};

fn app() -> &'static Arc<App> {
    static APP: OnceLock<Arc<App>> = OnceLock::new();
    APP.get_or_init(|| {
        // No weight limit in reach: every request gets past the limiter to the handlers.
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

const PATHS: [&str; 8] = [
    "/api/v3/aggTrades",
    "/api/v3/klines",
    "/api/v3/depth",
    "/api/v3/ticker/price",
    "/api/v3/time",
    "/api/v3/exchangeInfo",
    "/sim/truth",
    "/api/v3/x",
];
const KEYS: [&str; 7] = [
    "fromId",
    "startTime",
    "endTime",
    "limit",
    "toId",
    "stream",
    "interval",
];

#[derive(Arbitrary, Debug)]
enum Query {
    Raw(String),
    Params {
        stream_kline: bool,
        params: Vec<(u8, Num)>,
    },
}

impl Query {
    fn text(&self) -> String {
        match self {
            Query::Raw(q) => q.clone(),
            Query::Params {
                stream_kline,
                params,
            } => {
                let stream = if *stream_kline { "kline" } else { "aggTrade" };
                let mut q = format!("symbol=BTCUSDT&interval=1m&stream={stream}");
                for (k, v) in params {
                    q.push_str(&format!(
                        "&{}={}",
                        KEYS[usize::from(*k) % KEYS.len()],
                        v.text()
                    ));
                }
                q
            }
        }
    }
}

fuzz_target!(|input: (u8, Query)| {
    let (pick, query) = input;
    let query = query.text();
    let app = app();
    let path = PATHS[usize::from(pick) % PATHS.len()];
    let status = if path == "/sim/truth" {
        control::handle(app, &Method::GET, path, Some(&query), b"").0
    } else {
        rest::handle(
            app,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            path,
            &rest::parse_query(Some(&query)),
        )
        .status
    };
    assert!(
        [
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND
        ]
        .contains(&status),
        "{path}?{query}: {status}"
    );
});
