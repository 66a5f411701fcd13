//! collector against exchange-sim and the real Kafka (the native stack's). `make test`
//! runs these with `--ignored` once the stack is up.

mod harness;
use harness::*;
use kit::contract::topics;
use market::{AggTrade, BackfillRange, BackfillRequest, Head, Kline, Source, Stream};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);

/// Ids in id order, without duplicates (Kafka keeps one symbol's records in one partition,
/// but the verifier, not the collector, owns ordering: it sorts and counts).
fn sorted_ids(records: &[AggTrade]) -> Vec<u64> {
    let mut ids: Vec<u64> = records.iter().map(|r| r.agg_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn by_symbol(records: &[AggTrade]) -> BTreeMap<String, Vec<&AggTrade>> {
    let mut map: BTreeMap<String, Vec<&AggTrade>> = BTreeMap::new();
    for r in records {
        map.entry(r.symbol.clone()).or_default().push(r);
    }
    map
}

async fn assert_equal_to_truth(sim: &Sim, symbol: &str, records: &[&AggTrade]) {
    let (first, last) = (records[0].agg_id, records[records.len() - 1].agg_id);
    let truth = truth_aggs(sim, symbol, first, last).await;
    assert_eq!(
        truth.len(),
        records.len(),
        "{symbol}: records {first}..={last} on Kafka vs truth"
    );
    for (t, r) in truth.iter().zip(records) {
        assert!(
            t.same_data(r),
            "{symbol}: {r:?} differs from the truth {t:?}"
        );
    }
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn streamed_records_and_heads_on_kafka_equal_the_simulators_truth() {
    let syms = symbols(2);
    let sim = sim(&syms, &[("SIM_TRADES_PER_SEC", "50"), ("SIM_SPEED", "60")]).await;
    let _c = collector(&sim, &syms, &[("HEADS_INTERVAL_SECS", "1")]).await;
    let aggs = Records::new(topics::AGGTRADES, &syms);
    let klines = Records::new(topics::KLINES, &syms);
    let heads = Records::new(topics::HEADS, &syms);

    let got: Vec<AggTrade> = aggs
        .until(30 * SEC, |r: &[AggTrade]| {
            by_symbol(r).values().filter(|v| v.len() >= 100).count() == 2
        })
        .await;
    for (symbol, mut records) in by_symbol(&got) {
        records.sort_by_key(|r| r.agg_id);
        let ids: Vec<u64> = records.iter().map(|r| r.agg_id).collect();
        assert!(
            holes(&ids).is_empty() && ids.windows(2).all(|w| w[0] < w[1]),
            "{symbol}: holes {:?} or duplicates",
            holes(&ids)
        );
        assert!(records
            .iter()
            .all(|r| r.source == Source::Ws && r.event_time_ms.is_some()));
        assert_equal_to_truth(&sim, &symbol, &records).await;
    }

    let closed: Vec<Kline> = klines.until(30 * SEC, |r: &[Kline]| r.len() >= 4).await;
    for k in &closed {
        let truth = truth_klines(&sim, &k.symbol, k.open_time_ms, k.open_time_ms).await;
        assert_eq!(truth.len(), 1, "the simulator closed {k:?}");
        assert!(
            truth[0].same_data(k),
            "kline {k:?} differs from the truth {:?}",
            truth[0]
        );
    }

    // heads come from the 24 h ticker: the newest raw trade id, compared with `l`
    let complete = |h: &Head| h.last_trade_id.is_some() && h.last_closed_kline_open_ms.is_some();
    let head: Vec<Head> = heads
        .until(15 * SEC, |r: &[Head]| r.iter().any(complete))
        .await;
    let h = head.iter().find(|h| complete(h)).expect("a head");
    assert!(h.last_closed_kline_open_ms.is_some_and(|t| t % 60_000 == 0));
    assert_eq!(h.last_agg_id, None, "the ticker names no aggregate ids");
    let streamed_max = got
        .iter()
        .filter(|t| t.symbol == h.symbol)
        .map(|t| t.last_trade_id)
        .max()
        .unwrap_or(0);
    let head_id = h.last_trade_id.unwrap_or(0);
    assert!(
        head_id + 1_000 > streamed_max && streamed_max + 100_000 > head_id,
        "the head {head_id} is near the raw trade ids streamed ({streamed_max})"
    );
}

async fn request_backfill(req: &BackfillRequest) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .expect("producer");
    let payload = serde_json::to_vec(req).expect("json");
    producer
        .send(
            FutureRecord::to(topics::BACKFILL)
                .key(&req.symbol)
                .payload(&payload),
            5 * SEC,
        )
        .await
        .expect("sent");
}

fn backfill(symbol: &str, stream: Stream, range: BackfillRange) -> BackfillRequest {
    BackfillRequest {
        v: 1,
        request_id: format!("test-{symbol}-{}", kit::time::now_ms()),
        symbol: symbol.into(),
        stream,
        range,
        reason: "test".into(),
        requested_at_ms: kit::time::now_ms(),
    }
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn a_dropped_window_is_back_filled_on_request() {
    let syms = symbols(1);
    let symbol = syms[0].clone();
    let sim = sim(&syms, &[("SIM_TRADES_PER_SEC", "100")]).await;
    let c = collector(&sim, &syms, &[]).await;
    let aggs = Records::new(topics::AGGTRADES, &syms);
    aggs.until(20 * SEC, |r: &[AggTrade]| r.len() >= 20).await;
    sim.control(
        "drop",
        json!({"symbol": symbol, "stream": "aggTrade", "count": 40}),
    )
    .await;
    // The hole is in what the stream delivered: the stack's own sync-verifier sees it too
    // and may have it back-filled (by this collector) before this test looks.
    let ws = |r: &[AggTrade]| {
        r.iter()
            .filter(|t| t.source == Source::Ws)
            .cloned()
            .collect::<Vec<_>>()
    };
    let read: Vec<AggTrade> = aggs
        .until(20 * SEC, |r: &[AggTrade]| {
            !holes(&sorted_ids(&ws(r))).is_empty()
        })
        .await;
    let streamed = ws(&read);
    let ids: Vec<u64> = streamed.iter().map(|t| t.agg_id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "one symbol's records arrive in order: {ids:?}"
    );
    let (from, to) = holes(&sorted_ids(&streamed))[0];
    assert_eq!(
        to - from + 1,
        40,
        "exactly the dropped messages are missing"
    );

    request_backfill(&backfill(
        &symbol,
        Stream::AggTrade,
        BackfillRange::Ids {
            from_id: from,
            to_id: to,
        },
    ))
    .await;
    let backfilled = |r: &[AggTrade]| {
        r.iter()
            .filter(|t| t.source == Source::Backfill)
            .map(|t| t.agg_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let filled: Vec<AggTrade> = aggs
        .until(30 * SEC, |r: &[AggTrade]| backfilled(r) >= 40)
        .await;
    // The stack's own sync-verifier sees this symbol's hole too and may ask for the same
    // range: every back-fill must be exactly the missing ids, however many there were.
    let mut filled: Vec<&AggTrade> = filled
        .iter()
        .filter(|t| t.source == Source::Backfill)
        .collect();
    filled.sort_by_key(|t| t.agg_id);
    filled.dedup_by_key(|t| t.agg_id);
    assert_eq!(
        filled.iter().map(|t| t.agg_id).collect::<Vec<_>>(),
        (from..=to).collect::<Vec<_>>()
    );
    assert_equal_to_truth(&sim, &symbol, &filled).await;
    let metric =
        format!("collector_backfill_records_total{{stream=\"aggTrade\",symbol=\"{symbol}\"}}");
    let served = c.metric(&metric).await;
    assert!(
        served >= 40.0 && served % 40.0 == 0.0,
        "whole back-fills of the 40 missing ids: {served}"
    );
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn klines_are_back_filled_by_time_range_and_bad_requests_dead_lettered() {
    let syms = symbols(1);
    let symbol = syms[0].clone();
    let sim = sim(&syms, &[("SIM_SPEED", "60"), ("SIM_TRADES_PER_SEC", "30")]).await;
    let c = collector(&sim, &syms, &[]).await;
    let open_kline = || async {
        sim.json("/sim/state").await["symbols"][0]["open_kline"]
            .as_i64()
            .expect("open kline")
    };
    let first = open_kline().await;
    kit_wait("five market minutes close", || async {
        open_kline().await >= first + 5 * 60_000
    })
    .await;
    let open = open_kline().await;
    let (start, end) = (open - 4 * 60_000, open - 60_000);
    request_backfill(&backfill(
        &symbol,
        Stream::Kline,
        BackfillRange::Time {
            start_ms: start,
            end_ms: end,
        },
    ))
    .await;
    let klines = Records::new(topics::KLINES, &syms);
    let filled: Vec<Kline> = klines
        .until(30 * SEC, |r: &[Kline]| {
            r.iter().filter(|k| k.source == Source::Backfill).count() >= 4
        })
        .await;
    let filled: Vec<&Kline> = filled
        .iter()
        .filter(|k| k.source == Source::Backfill)
        .collect();
    let truth = truth_klines(&sim, &symbol, start, end).await;
    assert_eq!(truth.len(), 4);
    for (t, k) in truth.iter().zip(&filled) {
        assert!(t.same_data(k), "{k:?} vs {t:?}");
    }

    // a kline request with an id range cannot be served: dead-lettered with the reason
    let bad = backfill(
        &symbol,
        Stream::Kline,
        BackfillRange::Ids {
            from_id: 1,
            to_id: 2,
        },
    );
    request_backfill(&bad).await;
    let dlq = Records::new(&topics::dlq(topics::BACKFILL), &syms);
    let dead: Vec<BackfillRequest> = dlq
        .until(20 * SEC, |r: &[BackfillRequest]| {
            r.iter().any(|x| x == &bad)
        })
        .await;
    assert_eq!(
        dead.iter().filter(|x| *x == &bad).count(),
        1,
        "the request is dead-lettered once, unchanged"
    );
    assert!(
        c.metric("nghenhan_errors_total{kind=\"backfill_bad_request\"")
            .await
            >= 1.0
    );
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn a_429_storm_and_a_418_ban_are_obeyed() {
    let syms = symbols(1);
    let sim = sim(&syms, &[]).await;
    let c = collector(&sim, &syms, &[("HEADS_INTERVAL_SECS", "1")]).await;
    kit_wait("requests answered", || async {
        c.metric("binance_requests_total{endpoint=\"/api/v3/ticker/24hr\",status=\"200\"}")
            .await
            >= 2.0
    })
    .await;

    sim.control("ratelimit", json!({"status": 429, "duration_ms": 2000}))
        .await;
    kit_wait("429 counted", || async {
        c.metric("binance_rate_limited_total{status=\"429\"}").await >= 1.0
    })
    .await;
    let during = sim.rest_requests().await;
    // Time must pass to show that nothing happens: most of the 2 s Retry-After.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        sim.rest_requests().await,
        during,
        "no request while Retry-After lasts"
    );

    kit_wait("requests resume after the 429s", || async {
        sim.rest_requests().await > during
    })
    .await;
    sim.control("ratelimit", json!({"status": 418, "duration_ms": 4000}))
        .await;
    kit_wait("418 counted", || async {
        c.metric("binance_rate_limited_total{status=\"418\"}").await >= 1.0
    })
    .await;
    let banned_at = sim.rest_requests().await;
    // Time must pass to show that nothing happens: most of the 4 s ban.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        sim.rest_requests().await,
        banned_at,
        "zero requests sent during the ban"
    );
    kit_wait("sim.rest_requests().await > banned_at", || async {
        sim.rest_requests().await > banned_at
    })
    .await;
    assert!(
        c.metric("binance_rate_limit_max{interval=\"1m\",limit=\"request_weight\"}")
            .await
            == 6000.0
    );
}

/// Polls `check` every 200 ms for up to 30 s; `what` names the wait in a failure.
async fn kit_wait<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + 30 * SEC;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn reconnects(c: &Collector, reason: &str) -> f64 {
    c.metric(&format!(
        "binance_ws_reconnects_total{{reason=\"{reason}\"}}"
    ))
    .await
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn disconnects_stalls_and_server_shutdowns_reconnect() {
    let syms = symbols(1);
    let sim = sim(&syms, &[("SIM_TRADES_PER_SEC", "50")]).await;
    let c = collector(&sim, &syms, &[("WS_WATCHDOG_SECS", "2")]).await;
    let aggs = Records::new(topics::AGGTRADES, &syms);
    aggs.until(20 * SEC, |r: &[AggTrade]| r.len() >= 10).await;

    sim.control("disconnect", json!({})).await;
    kit_wait(
        "reconnects(&c, 'error').await + reconnects(&c, 'closed').await >= 1.0",
        || async { reconnects(&c, "error").await + reconnects(&c, "closed").await >= 1.0 },
    )
    .await;
    sim.control("stall", json!({"duration_ms": 3000})).await;
    kit_wait("reconnects(&c, 'stalled').await >= 1.0", || async {
        reconnects(&c, "stalled").await >= 1.0
    })
    .await;
    // serverShutdown goes to open sockets only: wait until the stall is over and frames
    // flow again on the new connection (no frame arrives while the sim stalls).
    let frames = format!(
        "binance_ws_messages_total{{stream=\"{}@aggTrade\"}}",
        syms[0].to_lowercase()
    );
    let stalled_at = c.metric(&frames).await;
    kit_wait("frames flow after the stall", || async {
        c.metric(&frames).await >= stalled_at + 5.0
    })
    .await;
    sim.control("server-shutdown", json!({})).await;
    kit_wait("reconnects(&c, 'server_shutdown').await >= 1.0", || async {
        reconnects(&c, "server_shutdown").await >= 1.0
    })
    .await;

    let before = aggs
        .for_a_while::<AggTrade>(Duration::from_millis(500))
        .await
        .len();
    let more: Vec<AggTrade> = aggs
        .until(20 * SEC, |r: &[AggTrade]| r.len() >= before + 20)
        .await;
    assert!(more.len() >= before + 20, "records flow again");
    let stream = format!(
        "binance_ws_connected{{stream=\"{}@aggTrade\"}}",
        syms[0].to_lowercase()
    );
    assert_eq!(c.metric(&stream).await, 1.0);
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn a_planned_reconnect_overlaps_and_loses_nothing() {
    let syms = symbols(1);
    let sim = sim(&syms, &[("SIM_TRADES_PER_SEC", "100")]).await;
    let c = collector(&sim, &syms, &[("WS_PLANNED_RECONNECT_SECS", "2")]).await;
    let aggs = Records::new(topics::AGGTRADES, &syms);
    kit_wait("reconnects(&c, 'planned').await >= 2.0", || async {
        reconnects(&c, "planned").await >= 2.0
    })
    .await;
    let records: Vec<AggTrade> = aggs.for_a_while(3 * SEC).await;
    let ids = sorted_ids(&records);
    assert!(ids.len() > 200, "{} records", ids.len());
    assert_eq!(ids.len(), records.len(), "no duplicates across the overlap");
    assert!(
        holes(&ids).is_empty(),
        "lost across switches: {:?}",
        holes(&ids)
    );
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn an_unreachable_stream_reads_down_and_a_lowered_weight_limit_is_adopted() {
    let syms = symbols(1);
    let sim = sim(&syms, &[]).await;
    // Nothing listens on port 1: the collector never connects (like a region Binance blocks).
    let vars = [
        ("BINANCE_WS_URL", "ws://127.0.0.1:1"),
        ("EXCHANGE_INFO_INTERVAL_SECS", "10"),
    ];
    let c = collector(&sim, &syms, &vars).await;
    kit_wait("a failed connection attempt", || async {
        reconnects(&c, "connect_failed").await >= 1.0
    })
    .await;
    let connected = format!(
        "binance_ws_connected{{stream=\"{}@aggTrade\"}}",
        syms[0].to_lowercase()
    );
    assert_eq!(
        c.sample(&connected).await,
        Some(0.0),
        "the stream's gauge exists at 0 though it never connected"
    );
    let limit = "binance_rate_limit_max{interval=\"1m\",limit=\"request_weight\"}";
    kit_wait("the first exchangeInfo read", || async {
        c.metric(limit).await == 6000.0
    })
    .await;
    sim.control("weight-limit", json!({"limit": 120})).await;
    kit_wait("the lowered limit is read again", || async {
        c.metric(limit).await == 120.0
    })
    .await;
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn malformed_frames_are_counted_and_skipped() {
    let syms = symbols(1);
    let sim = sim(&syms, &[("SIM_TRADES_PER_SEC", "50")]).await;
    let c = collector(&sim, &syms, &[]).await;
    let aggs = Records::new(topics::AGGTRADES, &syms);
    aggs.until(20 * SEC, |r: &[AggTrade]| r.len() >= 5).await;
    sim.control("garbage", json!({})).await;
    kit_wait("three malformed frames counted", || async {
        c.metric("nghenhan_errors_total{kind=\"ws_malformed\",service=\"collector\"}")
            .await
            >= 3.0
    })
    .await;
    let later: Vec<AggTrade> = aggs.until(20 * SEC, |r: &[AggTrade]| r.len() >= 60).await;
    let ids = sorted_ids(&later);
    assert!(holes(&ids).is_empty(), "the stream goes on without loss");
    assert_eq!(
        c.metric("nghenhan_errors_total{kind=\"ws_malformed\",service=\"collector\"}")
            .await,
        3.0
    );
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn a_full_producer_queue_drops_and_counts_while_pongs_keep_flowing() {
    let syms = symbols(1);
    let symbol = syms[0].clone();
    // Pings every second and a 3 s pong timeout: a read loop that waited on Kafka would be
    // closed (pong_timeout, or slow_consumer once the sim's buffer overflows) within seconds.
    let sim = sim(
        &syms,
        &[
            ("SIM_TRADES_PER_SEC", "2"),
            ("SIM_WS_PING_SECS", "1"),
            ("SIM_WS_PONG_TIMEOUT_SECS", "3"),
        ],
    )
    .await;
    // Two records in flight at a time: a hundred or two a second reach Kafka.
    let c = collector(&sim, &syms, &[("KAFKA_QUEUE_MAX_MESSAGES", "2")]).await;
    let aggs = Records::new(topics::AGGTRADES, &syms);
    aggs.until(20 * SEC, |r: &[AggTrade]| !r.is_empty()).await;
    assert!(
        c.metrics()
            .await
            .contains("collector_records_dropped_total{reason=\"queue_full\"} 0"),
        "every reason is exported from the start"
    );
    let last_id = || async {
        sim.json("/sim/state").await["symbols"][0]["last_id"]
            .as_u64()
            .expect("last id")
    };

    let first = last_id().await + 1;
    sim.control("rate", json!({"symbol": symbol, "trades_per_sec": 500}))
        .await;
    kit_wait("records dropped for a full queue", || async {
        c.metric("collector_records_dropped_total{reason=\"queue_full\"}")
            .await
            >= 100.0
    })
    .await;
    // Time must pass: the flood goes on over several pings and pong timeouts.
    tokio::time::sleep(5 * SEC).await;
    sim.control("rate", json!({"symbol": symbol, "trades_per_sec": 2}))
        .await;
    let last = last_id().await;

    assert_eq!(
        sim.metric_sum("exchange_sim_ws_disconnects_total").await,
        0.0,
        "the sim closed no connection (pong_timeout, slow_consumer, ...)"
    );
    assert_eq!(
        c.metric_sum_of("binance_ws_reconnects_total").await,
        0.0,
        "the collector never reconnected"
    );
    assert_eq!(sim.metric("exchange_sim_ws_connections").await, 1.0);
    let frames = c
        .metric(&format!(
            "binance_ws_messages_total{{stream=\"{}@aggTrade\"}}",
            symbol.to_lowercase()
        ))
        .await;
    let trades = (last - first + 1) as f64;
    assert!(
        frames >= 0.95 * trades,
        "the flood was read as it came: {frames} frames for {trades} trades"
    );

    // The flood's records on Kafka have holes; a back-fill of the window heals them.
    let streamed: Vec<AggTrade> = aggs.for_a_while(SEC).await;
    let in_flood = |t: &&AggTrade| (first..=last).contains(&t.agg_id);
    let ws: std::collections::HashSet<u64> = streamed
        .iter()
        .filter(in_flood)
        .filter(|t| t.source == Source::Ws)
        .map(|t| t.agg_id)
        .collect();
    assert!(
        (ws.len() as u64) < last - first + 1,
        "dropped records are missing: {} of {} streamed",
        ws.len(),
        last - first + 1
    );
    request_backfill(&backfill(
        &symbol,
        Stream::AggTrade,
        BackfillRange::Ids {
            from_id: first,
            to_id: last,
        },
    ))
    .await;
    let backfilled = |r: &[AggTrade]| {
        let have: std::collections::HashSet<u64> = r
            .iter()
            .filter(|t| t.source == Source::Backfill)
            .map(|t| t.agg_id)
            .collect();
        (first..=last).all(|id| have.contains(&id))
    };
    let healed: Vec<AggTrade> = aggs.until(90 * SEC, backfilled).await;
    let mut filled: Vec<&AggTrade> = healed
        .iter()
        .filter(in_flood)
        .filter(|t| t.source == Source::Backfill)
        .collect();
    filled.sort_by_key(|t| t.agg_id);
    filled.dedup_by_key(|t| t.agg_id);
    assert_equal_to_truth(&sim, &symbol, &filled).await;
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn a_418_ban_outlives_a_collector_restart() {
    let syms = symbols(1);
    let sim = sim(&syms, &[]).await;
    let dir = state_dir(&syms);
    let _ = std::fs::remove_dir_all(&dir);
    let dir = dir.to_string_lossy().to_string();
    let vars = [("HEADS_INTERVAL_SECS", "1"), ("STATE_DIR", dir.as_str())];
    let first = collector(&sim, &syms, &vars).await;
    kit_wait("requests answered", || async {
        first
            .metric("binance_requests_total{endpoint=\"/api/v3/ticker/24hr\",status=\"200\"}")
            .await
            >= 2.0
    })
    .await;
    sim.control("ratelimit", json!({"status": 418, "duration_ms": 8000}))
        .await;
    kit_wait("418 counted", || async {
        first
            .metric("binance_rate_limited_total{status=\"418\"}")
            .await
            >= 1.0
    })
    .await;
    drop(first); // stops it; a crash or a restart by Docker forgets nothing more than this

    let banned_at = sim.rest_requests().await;
    let second = collector(&sim, &syms, &vars).await;
    kit_wait("the new collector serves metrics", || async {
        second.metric("nghenhan_build_info").await == 1.0
    })
    .await;
    // Time must pass to show that nothing happens: the new instance would call
    // exchangeInfo and the heads at once if it forgot the ban.
    tokio::time::sleep(3 * SEC).await;
    assert_eq!(
        sim.rest_requests().await,
        banned_at,
        "no request, not even exchangeInfo, while the remembered ban lasts"
    );
    let ready = second.readyz().await;
    assert!(
        ready.contains("degraded: binance_rest: REST paused after HTTP 418"),
        "/readyz shows the ban: {ready}"
    );
    kit_wait("requests resume once the ban ends", || async {
        sim.rest_requests().await > banned_at
    })
    .await;
    assert!(
        !second.readyz().await.contains("degraded"),
        "no longer degraded"
    );
    assert_eq!(
        second
            .metric("binance_rate_limited_total{status=\"418\"}")
            .await,
        0.0,
        "the new instance never had to be told"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
#[ignore = "needs Kafka (the native stack); `make test` runs it"]
async fn all_usdt_collects_every_usdt_pair_the_exchange_lists_and_nothing_else() {
    let mut listed = symbols(3);
    let other = listed[0].replace("USDT", "BTC");
    listed.push(other.clone());
    let sim = sim(&listed, &[]).await;
    let c = collector(&sim, &["ALL_USDT".to_string()], &[]).await;
    let streams = |s: &str| {
        format!(
            "binance_ws_messages_total{{stream=\"{}@aggTrade\"}}",
            s.to_lowercase()
        )
    };
    for usdt in &listed[..3] {
        kit::testing::until(&format!("{usdt} streams"), 30 * SEC, async || {
            c.metric(&streams(usdt)).await > 0.0
        })
        .await;
    }
    let text = reqwest::get(&c.metrics_url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        !text.contains(&other.to_lowercase()),
        "{other} trades against BTC: not collected"
    );
}
