//! WebSocket streams: shapes, REST/stream/truth agreement, each fault, Binance's rules.

mod common;
use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const SEC: Duration = Duration::from_secs(1);

fn id(v: &Value) -> u64 {
    v["a"].as_u64().expect("aggregate id")
}

/// The REST row of a stream event: the same fields without e/E/s.
fn as_rest(event: &Value) -> Value {
    let mut row = event.clone();
    let obj = row.as_object_mut().expect("object");
    for k in ["e", "E", "s"] {
        obj.remove(k);
    }
    row
}

#[tokio::test]
async fn agg_trade_stream_equals_rest_and_truth() {
    let sim = sim(&[("SIM_TRADES_PER_SEC", "300")]).await;
    let mut ws = connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws)).await;
    let events = take(&mut ws, 100, 2 * SEC).await;
    assert_eq!(events[0]["e"], "aggTrade");
    assert_eq!(events[0]["s"], "BTCUSDT");
    for w in events.windows(2) {
        assert_eq!(id(&w[1]), id(&w[0]) + 1, "contiguous ids on the stream");
    }
    let first = id(&events[0]);
    let rest: Vec<Value> = sim
        .json(&format!(
            "/api/v3/aggTrades?symbol=BTCUSDT&fromId={first}&limit=100"
        ))
        .await
        .as_array()
        .cloned()
        .expect("rows");
    let streamed: Vec<Value> = events.iter().map(as_rest).collect();
    assert_eq!(
        rest, streamed,
        "REST back-fill returns exactly what was streamed"
    );
    let truth = sim
        .json(&format!(
            "/sim/truth?symbol=BTCUSDT&stream=aggTrade&fromId={first}&toId={}",
            first + 99
        ))
        .await;
    assert_eq!(truth["records"].as_array().expect("records"), &rest);
}

#[tokio::test]
async fn combined_stream_wraps_and_closed_klines_equal_rest_and_truth() {
    // speed 60: one market minute per real second
    let sim = sim(&[("SIM_SPEED", "60"), ("SIM_TRADES_PER_SEC", "100")]).await;
    let mut ws = connect(&format!(
        "{}/stream?streams=ethusdt@kline_1m/btcusdt@depth@100ms",
        sim.ws
    ))
    .await;
    let mut closed = None;
    let mut saw_depth = false;
    while closed.is_none() || !saw_depth {
        let msg = next_json(&mut ws, 3 * SEC).await.expect("message");
        let stream = msg["stream"].as_str().expect("wrapped with stream");
        let data = &msg["data"];
        if stream == "btcusdt@depth@100ms" {
            assert_eq!(data["e"], "depthUpdate");
            assert!(data["u"].as_u64() >= data["U"].as_u64());
            saw_depth = true;
        } else {
            assert_eq!(stream, "ethusdt@kline_1m");
            assert_eq!(data["k"]["i"], "1m");
            if data["k"]["x"] == true {
                closed = Some(data["k"].clone());
            }
        }
    }
    let k = closed.expect("a closed kline");
    let open = k["t"].as_i64().expect("t");
    let rows: Vec<Value> = sim
        .json(&format!(
            "/api/v3/klines?symbol=ETHUSDT&interval=1m&startTime={open}&endTime={open}"
        ))
        .await
        .as_array()
        .cloned()
        .expect("rows");
    let row = &rows[0];
    let fields = [
        (1, "o"),
        (2, "h"),
        (3, "l"),
        (4, "c"),
        (5, "v"),
        (7, "q"),
        (9, "V"),
        (10, "Q"),
    ];
    for (i, key) in fields {
        assert_eq!(row[i], k[key], "kline field {key}");
    }
    assert_eq!(
        (row[0].as_i64(), row[6].as_i64(), row[8].as_u64()),
        (k["t"].as_i64(), k["T"].as_i64(), k["n"].as_u64())
    );
    let truth = sim
        .json(&format!(
            "/sim/truth?symbol=ETHUSDT&stream=kline&startTime={open}&endTime={open}"
        ))
        .await;
    assert_eq!(&truth["records"][0], row);
}

#[tokio::test]
async fn dropped_messages_leave_a_gap_that_rest_back_fills_exactly() {
    let sim = sim(&[("SIM_TRADES_PER_SEC", "300")]).await;
    let mut ws = connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws)).await;
    take(&mut ws, 5, 2 * SEC).await;
    sim.control(
        "drop",
        json!({"symbol": "BTCUSDT", "stream": "aggTrade", "count": 25}),
    )
    .await;
    // read until the gap shows (a loaded machine may deliver a burst from before the drop first)
    let (mut previous, mut gap) = (None::<u64>, None);
    let deadline = tokio::time::Instant::now() + 5 * SEC;
    while gap.is_none() && tokio::time::Instant::now() < deadline {
        let current = id(&next_json(&mut ws, 2 * SEC).await.expect("message"));
        if let Some(p) = previous.filter(|p| current != p + 1) {
            gap = Some((p, current));
        }
        previous = Some(current);
    }
    let (last_before, first_after) = gap.expect("a gap");
    assert_eq!(
        first_after - last_before - 1,
        25,
        "exactly the dropped count is missing"
    );
    let backfill: Vec<Value> = sim
        .json(&format!(
            "/api/v3/aggTrades?symbol=BTCUSDT&fromId={}&limit=25",
            last_before + 1
        ))
        .await
        .as_array()
        .cloned()
        .expect("rows");
    let ids: Vec<u64> = backfill.iter().map(id).collect();
    assert_eq!(ids, ((last_before + 1)..first_after).collect::<Vec<_>>());
    let metrics = sim.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("exchange_sim_ws_messages_dropped_total 25"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_drop_window_withholds_every_stream_for_its_duration() {
    let sim = sim(&[("SIM_TRADES_PER_SEC", "300")]).await;
    let mut ws = connect(&format!("{}/ws/ethusdt@aggTrade", sim.ws)).await;
    take(&mut ws, 1, 2 * SEC).await;
    sim.control("drop", json!({"duration_ms": 500})).await;
    let started = std::time::Instant::now();
    let state = sim.json("/sim/state").await;
    let at_drop = state["symbols"][1]["last_id"]
        .as_u64()
        .expect("ETHUSDT last id");
    // events up to `at_drop` were published before the window; nothing after it may
    // arrive until the window ends
    let first_after = loop {
        let e = next_json(&mut ws, 2 * SEC).await.expect("message");
        if id(&e) > at_drop {
            break e;
        }
    };
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the window withheld messages ({:?})",
        started.elapsed()
    );
    assert!(
        id(&first_after) > at_drop + 50,
        "the trades of the window are missing from the stream"
    );
}

#[tokio::test]
async fn forced_disconnect_drops_every_socket_without_a_close_frame() {
    let sim = sim(&[]).await;
    let mut a = connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws)).await;
    let mut b = connect(&format!("{}/stream?streams=bnbusdt@aggTrade", sim.ws)).await;
    take(&mut a, 1, 2 * SEC).await;
    sim.control("disconnect", json!({})).await;
    for ws in [&mut a, &mut b] {
        let ended = tokio::time::timeout(2 * SEC, async {
            loop {
                match ws.next().await {
                    None | Some(Err(_)) => return true,
                    Some(Ok(Message::Close(_))) => return false,
                    Some(Ok(_)) => {}
                }
            }
        });
        assert!(
            ended.await.expect("socket ends"),
            "ended without a close frame"
        );
    }
}

#[tokio::test]
async fn a_stall_keeps_the_socket_open_but_silent() {
    let sim = sim(&[("SIM_TRADES_PER_SEC", "200")]).await;
    let mut ws = connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws)).await;
    take(&mut ws, 1, 2 * SEC).await;
    sim.control("stall", json!({"duration_ms": 1500})).await;
    // drain what was sent before the stall: until 100 ms pass without a message
    while tokio::time::timeout(Duration::from_millis(100), ws.next())
        .await
        .is_ok()
    {}
    // silence is shown by time passing without a message (200 trades/s would be 180 here)
    assert!(
        tokio::time::timeout(Duration::from_millis(900), ws.next())
            .await
            .is_err(),
        "silent while stalled"
    );
    assert!(
        next_json(&mut ws, 2 * SEC).await.is_some(),
        "data flows again after the stall"
    );
}

#[tokio::test]
async fn server_shutdown_event_reaches_clients() {
    let sim = sim(&[]).await;
    let mut ws = connect(&format!("{}/ws/btcusdt@kline_1m", sim.ws)).await;
    sim.control("server-shutdown", json!({})).await;
    let event = loop {
        let e = next_json(&mut ws, 2 * SEC).await.expect("message");
        if e["e"] == "serverShutdown" {
            break e;
        }
    };
    assert!(event["E"].as_i64().is_some());
}

async fn close_reason(ws: &mut Ws, within: Duration) -> Option<String> {
    tokio::time::timeout(within, async {
        while let Some(msg) = ws.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame.map(|f| f.reason.to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test]
async fn more_than_five_client_messages_a_second_disconnects() {
    let sim = sim(&[]).await;
    let mut ws = connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws)).await;
    for i in 0..6 {
        ws.send(Message::Ping(vec![i].into())).await.expect("send");
    }
    assert_eq!(
        close_reason(&mut ws, 3 * SEC).await.as_deref(),
        Some("too many messages")
    );
}

#[tokio::test]
async fn five_client_messages_a_second_are_allowed() {
    let sim = sim(&[]).await;
    // `/ws/` (empty stream list, as `/ws`) opens a session to subscribe in
    let mut ws = connect(&format!("{}/ws/", sim.ws)).await;
    let subscribe =
        json!({"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 1}).to_string();
    ws.send(Message::text(subscribe)).await.expect("send");
    for i in 0..4 {
        ws.send(Message::Ping(vec![i].into())).await.expect("send");
    }
    let reply = next_json(&mut ws, 2 * SEC).await.expect("reply");
    assert_eq!(reply, json!({"result": null, "id": 1}));
    let event = next_json(&mut ws, 2 * SEC)
        .await
        .expect("subscribed stream flows");
    assert_eq!(event["e"], "aggTrade");
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_closed() {
    let sim = sim(&[
        ("SIM_WS_PING_SECS", "1"),
        ("SIM_WS_PONG_TIMEOUT_SECS", "2"),
        ("SIM_TRADES_PER_SEC", "0"),
    ])
    .await;
    let mut ws = connect(&format!("{}/ws/btcusdt@kline_1m", sim.ws)).await;
    // the test needs time to pass without reading, so no pong goes back: past the 2 s
    // timeout plus the next 1 s ping that notices it
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(
        close_reason(&mut ws, 3 * SEC).await.as_deref(),
        Some("no pong within the timeout")
    );
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let sim = sim(&[
        ("SIM_WS_PING_SECS", "1"),
        ("SIM_WS_PONG_TIMEOUT_SECS", "2"),
        ("SIM_TRADES_PER_SEC", "1"),
    ])
    .await;
    let mut ws = connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws)).await;
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(4_500);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg.expect("no error") {
            Message::Ping(_) => pings += 1, // tungstenite answers with a pong
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
    assert!(pings >= 3, "server pings every second, saw {pings}");
}

#[tokio::test]
async fn connections_end_at_their_lifetime() {
    let sim = sim(&[("SIM_WS_LIFETIME_SECS", "1")]).await;
    let mut ws = connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws)).await;
    assert_eq!(
        close_reason(&mut ws, 3 * SEC).await.as_deref(),
        Some("connection lifetime reached")
    );
}

#[tokio::test]
async fn unknown_streams_are_refused() {
    let sim = sim(&[]).await;
    assert!(
        tokio_tungstenite::connect_async(format!("{}/ws/nopeusdt@aggTrade", sim.ws))
            .await
            .is_err()
    );
    assert!(
        tokio_tungstenite::connect_async(format!("{}/stream?streams=btcusdt@trade", sim.ws))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn garbage_frames_reach_clients_and_the_stream_goes_on() {
    let sim = sim(&[]).await;
    let mut ws = connect(&format!("{}/ws/btcusdt@aggTrade", sim.ws)).await;
    sim.control("garbage", json!({})).await;
    let mut malformed = 0;
    let deadline = tokio::time::Instant::now() + 2 * SEC;
    while malformed < exchange_sim::ws::MALFORMED.len() {
        let Ok(Some(Ok(Message::Text(t)))) = tokio::time::timeout_at(deadline, ws.next()).await
        else {
            panic!("stream ended")
        };
        if exchange_sim::ws::MALFORMED.contains(&t.as_str()) {
            malformed += 1;
        }
    }
    assert!(
        next_json(&mut ws, 2 * SEC).await.is_some(),
        "valid data follows"
    );
}

#[tokio::test]
async fn a_ws_outage_closes_the_streams_and_refuses_new_ones_until_it_ends() {
    let sim = sim(&[]).await;
    let url = format!("{}/ws/btcusdt@kline_1m", sim.ws);
    let mut ws = connect(&url).await;
    sim.control("ws-outage", json!({"duration_ms": 1_500}))
        .await;
    let ended = tokio::time::timeout(2 * SEC, async {
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the open stream is closed");
    let refused = tokio_tungstenite::connect_async(&url)
        .await
        .expect_err("no upgrade during the outage");
    assert!(refused.to_string().contains("503"), "{refused}");
    wait_for("streams are accepted again", 5 * SEC, || async {
        tokio_tungstenite::connect_async(&url)
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}
