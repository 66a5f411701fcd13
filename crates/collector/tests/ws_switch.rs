//! The WebSocket read loop against a local WebSocket server, no Kafka needed: while the
//! successor of a planned reconnect (or of a `serverShutdown`) is connecting, or failing
//! to, the live socket is still read — frames are counted and pings answered — and failed
//! attempts wait for the back-off instead of retrying every tick.

use collector::metrics::CollectorMetrics;
use collector::publish::Publisher;
use collector::ws::{StreamConfig, Streams};
use futures::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// An open (never closed) 1m kline of BTCUSDT: counted, never published.
const KLINE: &str = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1,"s":"BTCUSDT","k":{"t":0,"T":59999,"s":"BTCUSDT","i":"1m","f":1,"L":2,"o":"1.0","c":"1.0","h":"1.0","l":"1.0","v":"1.0","n":2,"x":false,"q":"1.0","V":"1.0","Q":"1.0","B":"0"}}}"#;
const SERVER_SHUTDOWN: &str = r#"{"e":"serverShutdown","E":1}"#;

/// What the server does with every connection after the first.
#[derive(Clone, Copy)]
enum Later {
    /// Accepts the TCP connection and never answers the WebSocket handshake.
    Hang,
    /// Closes it at once.
    Refuse,
}

struct Server {
    url: String,
    accepted: Arc<AtomicUsize>,
    pongs: Arc<AtomicUsize>,
}

/// The first connection gets a kline every 50 ms and a ping every 200 ms (and, if asked,
/// one `serverShutdown`); later connections are treated as `later` says.
async fn server(later: Later, server_shutdown: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("ws://{}", listener.local_addr().expect("addr"));
    let (accepted, pongs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (count, pong_count) = (accepted.clone(), pongs.clone());
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            match (count.fetch_add(1, Ordering::SeqCst), later) {
                (0, _) => drop(tokio::spawn(primary(
                    socket,
                    pong_count.clone(),
                    server_shutdown,
                ))),
                (_, Later::Hang) => held.lock().expect("lock").push(socket),
                (_, Later::Refuse) => drop(socket),
            }
        }
    });
    Server {
        url,
        accepted,
        pongs,
    }
}

async fn primary(socket: TcpStream, pongs: Arc<AtomicUsize>, server_shutdown: bool) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(socket).await else {
        return;
    };
    let mut frames = tokio::time::interval(Duration::from_millis(50));
    let mut pings = tokio::time::interval(Duration::from_millis(200));
    let mut shutdown_after = server_shutdown.then_some(5);
    loop {
        let sent = tokio::select! {
            _ = frames.tick() => {
                shutdown_after = shutdown_after.map(|n: u32| n.saturating_sub(1));
                match shutdown_after.take_if(|n| *n == 0) {
                    Some(_) => ws.send(Message::text(SERVER_SHUTDOWN)).await,
                    None => ws.send(Message::text(KLINE)).await,
                }
            }
            _ = pings.tick() => ws.send(Message::Ping(b"p".to_vec().into())).await,
            msg = ws.next() => match msg {
                Some(Ok(Message::Pong(_))) => {
                    pongs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
                Some(Ok(_)) => Ok(()),
                _ => return,
            },
        };
        if sent.is_err() {
            return;
        }
    }
}

fn streams(url: &str, planned_after: Duration) -> (Streams, kit::Telemetry) {
    let telemetry = kit::Telemetry::new("collector", "test").expect("telemetry");
    let ctx = kit::kafka::KafkaContext::new(&telemetry).expect("kafka context");
    let producer = kit::kafka::producer("127.0.0.1:1", "ws-switch-test", ctx).expect("producer");
    let metrics = CollectorMetrics::register(telemetry.registry()).expect("metrics");
    let (publisher, _watcher) = Publisher::new(producer, telemetry.clone(), metrics.clone());
    let config = StreamConfig {
        ws_base: url.to_string(),
        symbols: vec!["BTCUSDT".into()],
        watchdog: Duration::from_secs(5),
        planned_after,
        backoff_min: Duration::from_secs(1),
        backoff_max: Duration::from_secs(10),
    };
    (
        Streams {
            config,
            publisher: Arc::new(publisher),
            metrics,
            telemetry: telemetry.clone(),
            pacer: Arc::new(collector::ws::Pacer::new(Duration::ZERO)),
        },
        telemetry,
    )
}

fn frames_read(telemetry: &kit::Telemetry) -> u64 {
    let text = telemetry.encode().expect("encode");
    text.lines()
        .find_map(|l| {
            l.strip_prefix(r#"binance_ws_messages_total{stream="btcusdt@kline_1m"} "#)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Starts the streams, waits until the successor's first connect began, then says how
/// many frames and pongs the live socket carried over the next `window`.
async fn reads_while_the_successor_connects(
    s: &Server,
    planned_after: Duration,
    window: Duration,
) -> (
    u64,
    usize,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), kit::KitError>>,
) {
    let (streams, telemetry) = streams(&s.url, planned_after);
    let token = CancellationToken::new();
    let task = tokio::spawn(streams.run(token.clone()));
    kit::testing::until(
        "a successor connect started",
        Duration::from_secs(10),
        async || s.accepted.load(Ordering::SeqCst) >= 2,
    )
    .await;
    let (frames, pongs) = (frames_read(&telemetry), s.pongs.load(Ordering::SeqCst));
    tokio::time::sleep(window).await; // the window the live socket must be read through
    (
        frames_read(&telemetry) - frames,
        s.pongs.load(Ordering::SeqCst) - pongs,
        token,
        task,
    )
}

async fn stops_cleanly(
    token: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kit::KitError>>,
) {
    token.cancel();
    let ended = tokio::time::timeout(Duration::from_secs(3), task)
        .await
        .expect("stops within 3 s on shutdown");
    assert!(matches!(ended, Ok(Ok(()))), "shutdown is Ok(()): {ended:?}");
}

#[tokio::test]
async fn a_hanging_planned_successor_never_stops_the_live_reads() {
    let s = server(Later::Hang, false).await;
    let (frames, pongs, token, task) =
        reads_while_the_successor_connects(&s, Duration::from_secs(1), Duration::from_secs(2))
            .await;
    assert!(
        frames >= 20,
        "{frames} frames read in 2 s (one every 50 ms is sent)"
    );
    assert!(pongs >= 5, "{pongs} pongs in 2 s (a ping every 200 ms)");
    stops_cleanly(token, task).await;
}

#[tokio::test]
async fn a_hanging_successor_after_server_shutdown_never_stops_the_live_reads() {
    let s = server(Later::Hang, true).await;
    let (frames, pongs, token, task) =
        reads_while_the_successor_connects(&s, Duration::from_secs(3600), Duration::from_secs(2))
            .await;
    assert!(
        frames >= 20,
        "{frames} frames read in 2 s (one every 50 ms is sent)"
    );
    assert!(pongs >= 5, "{pongs} pongs in 2 s (a ping every 200 ms)");
    stops_cleanly(token, task).await;
}

#[tokio::test]
async fn failed_successor_connects_back_off() {
    let s = server(Later::Refuse, false).await;
    let (frames, _, token, task) =
        reads_while_the_successor_connects(&s, Duration::from_secs(1), Duration::from_secs(4))
            .await;
    // back-off from 1 s (jittered to at least half, doubling): at most 3 more attempts in
    // 4 s; a retry on every 500 ms tick would make 8.
    let attempts = s.accepted.load(Ordering::SeqCst) - 1;
    assert!(
        (2..=4).contains(&attempts),
        "{attempts} successor attempts in about 4 s"
    );
    assert!(
        frames >= 40,
        "the primary is read meanwhile: {frames} frames"
    );
    stops_cleanly(token, task).await;
}
