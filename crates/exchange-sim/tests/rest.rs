//! REST: shapes against BINANCE.md, weights, the used-weight header, errors, 429 → 418.

mod common;
use common::*;
use serde_json::Value;

const WEIGHT: &str = "x-mbx-used-weight-1m";
/// Tests that count weight use hour-long windows (header `-60m`), so that no window ends
/// in the middle of a test.
const HOUR: (&str, &str) = ("SIM_WEIGHT_WINDOW_SECS", "3600");

fn used(r: &reqwest::Response) -> u32 {
    r.headers()["x-mbx-used-weight-60m"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

#[tokio::test]
async fn endpoints_have_binance_shapes_and_weights() {
    let sim = sim(&[("SIM_TRADES_PER_SEC", "200"), HOUR]).await;
    sim.held_trades(5).await;
    let ping = sim.get("/api/v3/ping").await;
    assert_eq!(used(&ping), 1);
    assert_eq!(
        ping.json::<Value>().await.expect("json"),
        serde_json::json!({})
    );
    assert!(
        sim.json("/api/v3/time").await["serverTime"]
            .as_i64()
            .expect("time")
            > 1_600_000_000_000
    );

    let info = sim.get("/api/v3/exchangeInfo").await;
    assert_eq!(used(&info), 1 + 1 + 20);
    let info: Value = info.json().await.expect("json");
    let weight = info["rateLimits"]
        .as_array()
        .expect("limits")
        .iter()
        .find(|l| l["rateLimitType"] == "REQUEST_WEIGHT")
        .cloned()
        .expect("weight limit");
    assert_eq!(
        (
            weight["interval"].as_str(),
            weight["intervalNum"].as_i64(),
            weight["limit"].as_i64()
        ),
        (Some("MINUTE"), Some(60), Some(6000))
    );
    assert_eq!(info["symbols"].as_array().map(Vec::len), Some(3));

    let aggs = sim.get("/api/v3/aggTrades?symbol=BTCUSDT&limit=5").await;
    assert_eq!(used(&aggs), 22 + 4);
    let aggs: Vec<Value> = aggs.json().await.expect("json");
    assert_eq!(aggs.len(), 5);
    for w in aggs.windows(2) {
        assert_eq!(
            w[1]["a"].as_u64().expect("a"),
            w[0]["a"].as_u64().expect("a") + 1
        );
    }
    let keys: Vec<&str> = aggs[0]
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["M", "T", "a", "f", "l", "m", "p", "q"]);
    assert!(aggs[0]["p"]
        .as_str()
        .expect("price string")
        .split('.')
        .nth(1)
        .is_some_and(|d| d.len() == 8));

    let klines = sim
        .get("/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=2")
        .await;
    assert_eq!(used(&klines), 26 + 2);
    let klines: Vec<Vec<Value>> = klines.json().await.expect("json");
    assert_eq!(klines[0].len(), 12);
    assert_eq!(
        klines[0][6].as_i64().expect("close"),
        klines[0][0].as_i64().expect("open") + 59_999
    );
    assert_eq!(klines[0][11], "0");

    let depth = sim.get("/api/v3/depth?symbol=BNBUSDT&limit=10").await;
    assert_eq!(used(&depth), 28 + 5);
    let depth: Value = depth.json().await.expect("json");
    assert_eq!(depth["bids"].as_array().map(Vec::len), Some(10));
    assert!(depth["lastUpdateId"].as_u64().is_some());

    let one = sim.get("/api/v3/ticker/price?symbol=BTCUSDT").await;
    assert_eq!(used(&one), 33 + 2);
    let all = sim.get("/api/v3/ticker/price").await;
    assert_eq!(used(&all), 35 + 4);
    assert_eq!(all.json::<Vec<Value>>().await.expect("json").len(), 3);
}

#[tokio::test]
async fn the_24h_ticker_has_binance_shapes_and_weights_by_symbol_count() {
    let sim = sim(&[("SIM_TRADES_PER_SEC", "200"), HOUR]).await;
    sim.held_trades(5).await;
    let one = sim
        .get("/api/v3/ticker/24hr?symbol=BTCUSDT&type=MINI")
        .await;
    assert_eq!(used(&one), 2);
    let one: Value = one.json().await.expect("json");
    for field in [
        "openPrice",
        "highPrice",
        "lowPrice",
        "lastPrice",
        "volume",
        "quoteVolume",
    ] {
        assert!(
            one[field].as_str().is_some_and(|v| v.contains('.')),
            "{field}: {one}"
        );
    }
    let (first, last) = (
        one["firstId"].as_i64().expect("firstId"),
        one["lastId"].as_i64().expect("lastId"),
    );
    assert!(last >= first && first >= 0, "{one}");
    assert_eq!(one["count"].as_i64(), Some(last - first + 1));
    assert!(
        one.get("priceChange").is_none(),
        "MINI leaves FULL's fields out"
    );

    // the newest raw trade id equals the `l` of the newest aggregate trade
    let newest: Vec<Value> = sim
        .json("/api/v3/aggTrades?symbol=ETHUSDT&limit=1")
        .await
        .as_array()
        .cloned()
        .expect("rows");
    let listed = sim
        .get("/api/v3/ticker/24hr?symbols=%5B%22ETHUSDT%22,%22BNBUSDT%22%5D")
        .await;
    assert_eq!(
        used(&listed),
        2 + 4 + 2,
        "a list of up to 20 symbols weighs 2"
    );
    let listed: Vec<Value> = listed.json().await.expect("json");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["symbol"], "ETHUSDT");
    assert!(
        listed[0]["lastId"].as_i64() >= newest[0]["l"].as_i64(),
        "{listed:?} {newest:?}"
    );
    assert!(listed[0]["priceChange"].is_string(), "FULL by default");

    let all = sim.get("/api/v3/ticker/24hr").await;
    assert_eq!(used(&all), 8 + 80, "every symbol weighs 80");
    assert_eq!(all.json::<Vec<Value>>().await.expect("json").len(), 3);
    for (path, code) in [
        ("/api/v3/ticker/24hr?symbol=NOPE", -1121),
        ("/api/v3/ticker/24hr?symbols=%5B%22NOPE%22%5D", -1121),
        ("/api/v3/ticker/24hr?symbols=BTCUSDT", -1100),
        ("/api/v3/ticker/24hr?symbol=BTCUSDT&symbols=%5B%5D", -1128),
        ("/api/v3/ticker/24hr?type=TINY", -1139),
    ] {
        let body = sim.json(path).await;
        assert_eq!(body["code"].as_i64(), Some(code), "{path}: {body}");
    }
}

#[tokio::test]
async fn bad_parameters_get_binance_error_bodies() {
    let sim = sim(&[]).await;
    for (path, code) in [
        ("/api/v3/aggTrades?symbol=NOPE", -1121),
        ("/api/v3/aggTrades", -1102),
        ("/api/v3/aggTrades?symbol=BTCUSDT&fromId=abc", -1100),
        ("/api/v3/aggTrades?symbol=BTCUSDT&limit=1001", -1130),
        (
            "/api/v3/aggTrades?symbol=BTCUSDT&startTime=0&endTime=3600001",
            -1127,
        ),
        ("/api/v3/klines?symbol=BTCUSDT&interval=7m", -1120),
        ("/api/v3/klines?symbol=BTCUSDT", -1102),
    ] {
        let r = sim.get(path).await;
        assert_eq!(r.status(), 400, "{path}");
        assert!(
            r.headers().contains_key(WEIGHT),
            "{path} lacks the weight header"
        );
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], code, "{path}: {body}");
        assert!(body["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn crossing_the_weight_limit_gives_429_then_a_418_ban() {
    let sim = sim(&[
        ("SIM_WEIGHT_LIMIT", "10"),
        ("SIM_BAN_AFTER", "2"),
        ("SIM_BAN_SECS", "120"),
        HOUR,
    ])
    .await;
    let path = "/api/v3/aggTrades?symbol=BTCUSDT&limit=1";
    assert_eq!(sim.get(path).await.status(), 200);
    assert_eq!(sim.get(path).await.status(), 200);
    for _ in 0..2 {
        let r = sim.get(path).await;
        assert_eq!(r.status(), 429);
        assert_eq!(used(&r), 8);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("secs");
        assert!((1..=3600).contains(&retry));
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], -1003);
        assert!(body["msg"]
            .as_str()
            .expect("msg")
            .starts_with("Too much request weight used"));
    }
    let banned = sim.get(path).await;
    assert_eq!(banned.status(), 418);
    assert_eq!(banned.headers()["retry-after"], "120");
    let body: Value = banned.json().await.expect("json");
    assert!(body["msg"]
        .as_str()
        .expect("msg")
        .contains("IP banned until"));
    assert_eq!(
        sim.get("/api/v3/ping").await.status(),
        418,
        "a ban covers every endpoint"
    );
}

#[tokio::test]
async fn forced_limits_lower_limits_and_latency_apply() {
    let sim = sim(&[HOUR]).await;
    let forced_at = std::time::Instant::now();
    sim.control(
        "ratelimit",
        serde_json::json!({"status": 418, "duration_ms": 1500}),
    )
    .await;
    let r = sim.get("/api/v3/ping").await;
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["retry-after"], "2");
    // a forced status costs no weight, so polling does not move the limit
    wait_for(
        "the forced 418 ends",
        std::time::Duration::from_secs(5),
        || async { (sim.get("/api/v3/ping").await.status() == 200).then_some(()) },
    )
    .await;
    assert!(
        forced_at.elapsed() >= std::time::Duration::from_millis(1_400),
        "it lasted its period: {:?}",
        forced_at.elapsed()
    );

    sim.control("weight-limit", serde_json::json!({"limit": 25}))
        .await;
    let info: Value = sim.json("/api/v3/exchangeInfo").await;
    assert_eq!(info["rateLimits"][0]["limit"], 25);
    assert_eq!(sim.get("/api/v3/exchangeInfo").await.status(), 429);

    sim.control("reset", serde_json::json!({})).await;
    sim.control("weight-limit", serde_json::json!({"limit": 6000}))
        .await;
    sim.control("latency", serde_json::json!({"rest_ms": 300}))
        .await;
    let start = std::time::Instant::now();
    assert_eq!(sim.get("/api/v3/ping").await.status(), 200);
    assert!(start.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn rate_control_and_bounded_history_show_in_state() {
    let sim = sim(&[
        ("SIM_HISTORY_TRADES", "500"),
        ("SIM_TRADES_PER_SEC", "2000"),
    ])
    .await;
    let last_id =
        |state: &Value, i: usize| state["symbols"][i]["last_id"].as_u64().expect("last id");
    let filled = sim.held_trades(500).await;
    // 500 trades more than fill the history: the oldest must have been forgotten
    let full = wait_for(
        "500 more trades",
        std::time::Duration::from_secs(10),
        || async {
            let state = sim.json("/sim/state").await;
            (0..3)
                .all(|i| last_id(&state, i) >= last_id(&filled, i) + 500)
                .then_some(state)
        },
    )
    .await;
    for s in full["symbols"].as_array().expect("symbols") {
        assert_eq!(s["held_trades"], 500, "history must stay bounded: {s}");
    }
    sim.control(
        "rate",
        serde_json::json!({"symbol": "ETHUSDT", "trades_per_sec": 0.0}),
    )
    .await;
    let before = sim.json("/sim/state").await;
    // time must pass to show that nothing happens: 300 ms is 600 trades at the old rate
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = sim.json("/sim/state").await;
    assert_eq!(
        after["symbols"][1]["last_id"], before["symbols"][1]["last_id"],
        "ETHUSDT stopped trading"
    );
    assert_eq!(after["symbols"][1]["trades_per_sec"], 0.0);
    assert!(
        after["symbols"][0]["last_id"].as_u64() > before["symbols"][0]["last_id"].as_u64(),
        "BTCUSDT traded meanwhile"
    );
}

#[tokio::test]
async fn binance_minute_windows_use_the_1m_header() {
    let sim = sim(&[]).await;
    let r = sim.get("/api/v3/ping").await;
    assert!(
        r.headers()[WEIGHT]
            .to_str()
            .expect("ascii")
            .parse::<u32>()
            .expect("number")
            >= 1
    );
    let info = sim.json("/api/v3/exchangeInfo").await;
    assert_eq!(
        (
            info["rateLimits"][0]["interval"].as_str(),
            info["rateLimits"][0]["intervalNum"].as_i64()
        ),
        (Some("MINUTE"), Some(1))
    );
}

#[tokio::test]
async fn extreme_query_numbers_are_answered_never_a_crash() {
    let sim = sim(&[HOUR]).await;
    let (min, max) = (i64::MIN, i64::MAX);
    for (query, status, code) in [
        (format!("startTime={min}&endTime={max}"), 400, Some(-1127)),
        (format!("startTime={max}"), 200, None),
        (format!("endTime={min}"), 200, None),
        (format!("startTime={min}&endTime={}", min + 1), 200, None),
        (format!("fromId={}", u64::MAX), 200, None),
        ("fromId=18446744073709551616".into(), 400, Some(-1100)),
        ("fromId=-1".into(), 400, Some(-1100)),
        ("startTime=9223372036854775808".into(), 400, Some(-1100)),
        ("limit=99999999999999999999999".into(), 400, Some(-1100)),
        (format!("limit={}", "9".repeat(10_000)), 400, Some(-1100)),
    ] {
        let r = sim
            .get(&format!("/api/v3/aggTrades?symbol=BTCUSDT&{query}"))
            .await;
        assert_eq!(r.status(), status, "{query}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"].as_i64(), code, "{query}: {body}");
    }
    let klines = sim
        .get(&format!(
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&startTime={min}&endTime={max}"
        ))
        .await;
    assert_eq!(klines.status(), 200);
}

#[tokio::test]
async fn the_control_api_refuses_hostile_numbers_and_huge_bodies() {
    let sim = sim(&[]).await;
    let post = |op: &'static str, body: String| {
        let request = sim.client.post(format!("{}/sim/{op}", sim.base)).body(body);
        async move { request.send().await.expect("control") }
    };
    for (op, body, field) in [
        (
            "stall",
            format!(r#"{{"duration_ms":{}}}"#, u64::MAX),
            "duration_ms",
        ),
        (
            "ratelimit",
            format!(r#"{{"status":418,"duration_ms":{}}}"#, u64::MAX),
            "duration_ms",
        ),
        ("drop", r#"{"duration_ms":-1}"#.to_string(), "duration_ms"),
        (
            "latency",
            r#"{"rest_ms":18446744073709551615}"#.to_string(),
            "rest_ms",
        ),
        (
            "rate",
            r#"{"trades_per_sec":1e308}"#.to_string(),
            "trades_per_sec",
        ),
        (
            "weight-limit",
            r#"{"limit":4294967296}"#.to_string(),
            "limit",
        ),
    ] {
        let r = post(op, body.clone()).await;
        assert_eq!(r.status(), 400, "{op} {body}");
        let error = r.json::<Value>().await.expect("json")["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.contains(field),
            "{op} {body}: {error:?} names the field"
        );
    }
    let huge = post(
        "stall",
        format!(r#"{{"duration_ms":1,"pad":"{}"}}"#, "x".repeat(100_000)),
    )
    .await;
    assert_eq!(huge.status(), 413);
    assert_eq!(
        sim.get("/api/v3/ping").await.status(),
        200,
        "nothing was applied: no forced status"
    );
    assert_eq!(
        sim.json("/sim/state").await["symbols"][0]["trades_per_sec"],
        20.0,
        "the rate is unchanged"
    );
}
