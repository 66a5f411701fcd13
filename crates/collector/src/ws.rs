//! The WebSocket side: combined streams (`@aggTrade` and `@kline_1m` per symbol), split
//! over several connections ([`shards`]: at most `WS_STREAMS_PER_CONNECTION` streams
//! each, Binance allows 1,024), so one slow socket stalls only its own symbols. Each
//! connection has its own watchdog and back-off; every connection attempt of every shard
//! waits its turn at one [`Pacer`], so attempts stay under Binance's 300 per 5 minutes.
//!
//! A per-connection watchdog reconnects a connection that went silent; a planned
//! reconnect before Binance's 24 h limit (and a `serverShutdown`) opens the new connection
//! first and reads both until the new one delivers, so the switch loses nothing (the
//! publisher drops the overlap's duplicates). Lost connections reconnect with capped,
//! jittered back-off. The collector sends nothing but pongs (tungstenite answers each
//! server ping once) and close frames: far below Binance's 5 messages a second.
//!
//! The live socket is always read: publishing never waits on Kafka (see
//! [`crate::publish`]), and the successor's connect runs beside the reads (polled in the
//! same `select!`), retried with the back-off when it fails, so pongs keep flowing.

use crate::metrics::CollectorMetrics;
use crate::publish::Publisher;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use kit::retry::Backoff;
use kit::time::now_ms;
use kit::Telemetry;
use market::binance::{parse_frame, Frame};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {0}: timed out")]
    Timeout(String),
    #[error("connecting to {url}: {source}")]
    Ws {
        url: String,
        source: tokio_tungstenite::tungstenite::Error,
    },
}

/// Spaces connection attempts: one every `every`, however many shards ask (Binance: 300
/// attempts per 5 minutes per IP, i.e. one a second on average).
#[derive(Debug)]
pub struct Pacer {
    every: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this attempt's turn.
    pub async fn turn(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + self.every;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Splits `config`'s symbols over connections of at most `streams_per_connection`
/// streams (two per symbol), in order.
pub fn shards(config: &StreamConfig, streams_per_connection: usize) -> Vec<StreamConfig> {
    let per = (streams_per_connection / 2).max(1);
    config
        .symbols
        .chunks(per)
        .map(|symbols| StreamConfig {
            symbols: symbols.to_vec(),
            ..config.clone()
        })
        .collect()
}
type Received = Option<Result<Message, tokio_tungstenite::tungstenite::Error>>;

/// How the streams connect and when they reconnect.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub ws_base: String,
    pub symbols: Vec<String>,
    /// Reconnect a connection silent for this long.
    pub watchdog: Duration,
    /// Planned reconnect after this long (before Binance's 24 h cut).
    pub planned_after: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl StreamConfig {
    /// The stream names, e.g. `btcusdt@aggTrade`, `btcusdt@kline_1m`.
    pub fn stream_names(&self) -> Vec<String> {
        self.symbols
            .iter()
            .flat_map(|s| {
                let s = s.to_lowercase();
                [format!("{s}@aggTrade"), format!("{s}@kline_1m")]
            })
            .collect()
    }

    /// The combined-stream URL.
    pub fn url(&self) -> String {
        format!(
            "{}/stream?streams={}",
            self.ws_base.trim_end_matches('/'),
            self.stream_names().join("/")
        )
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_min, self.backoff_max).with_jitter()
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest overlap of the old and new connection during a switch.
const OVERLAP_MAX: Duration = Duration::from_secs(10);
/// Longest wait for a close frame to go out before a socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

struct Conn {
    ws: Socket,
    opened: Instant,
    last_data: Instant,
    delivered: bool,
}

/// Why a connection ended, or why it was replaced (the `reason` label).
type Reason = &'static str;

pub struct Streams {
    pub config: StreamConfig,
    pub publisher: Arc<Publisher>,
    pub metrics: CollectorMetrics,
    pub telemetry: Telemetry,
    /// Shared by every shard: connection attempts take turns.
    pub pacer: Arc<Pacer>,
}

impl Streams {
    /// Keeps the streams connected until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), kit::KitError> {
        // 0 before the first connection: a collector that never connects (a region Binance
        // blocks) must still raise BinanceWebSocketDown.
        self.set_connected(false);
        let mut backoff = self.config.backoff();
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                connected = connect(self.pacer.clone(), self.config.url()) => connected,
            };
            let reason = match connected {
                Ok(conn) => {
                    self.set_connected(true);
                    let opened = conn.opened;
                    let reason = self.serve(conn, &shutdown).await;
                    self.set_connected(false);
                    if opened.elapsed() > Duration::from_secs(30) {
                        backoff.reset();
                    }
                    reason
                }
                Err(err) => {
                    self.telemetry
                        .error(kit::contract::ErrorKind::WsConnect, &err);
                    "connect_failed"
                }
            };
            if shutdown.is_cancelled() {
                return Ok(());
            }
            self.metrics
                .ws_reconnects
                .with_label_values(&[reason])
                .inc();
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    fn set_connected(&self, up: bool) {
        for stream in self.config.stream_names() {
            self.metrics
                .ws_connected
                .with_label_values(&[&stream])
                .set(i64::from(up));
        }
    }

    /// Reads the connection (and, during a switch, its successor) until it is lost.
    async fn serve(&self, mut primary: Conn, shutdown: &CancellationToken) -> Reason {
        let mut next = Successor::new(self.config.url(), self.config.backoff(), self.pacer.clone());
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    close(primary.ws).await;
                    return "shutdown";
                }
                msg = primary.ws.next() => match self.receive(&mut primary, msg) {
                    Ok(false) => {}
                    Ok(true) => next.want("server_shutdown"),
                    Err(reason) => return reason,
                },
                msg = next_of(&mut next.conn) => {
                    if let Some(conn) = next.conn.as_mut() {
                        if self.receive(conn, msg).is_err() {
                            next.lost(); // the successor failed; the primary goes on
                        }
                    }
                }
                connected = connecting(&mut next.connecting) => next.connected(connected, &self.telemetry),
                _ = tick.tick() => {
                    if primary.last_data.elapsed() > self.config.watchdog {
                        tracing::warn!(silent_for = ?primary.last_data.elapsed(), "websocket stalled; reconnecting");
                        return "stalled";
                    }
                    if primary.opened.elapsed() >= self.config.planned_after {
                        next.want("planned");
                    }
                    next.start_if_due();
                    if let Some(reason) = self.switch_if_ready(&mut primary, &mut next).await {
                        self.metrics.ws_reconnects.with_label_values(&[reason]).inc();
                    }
                }
            }
        }
    }

    /// Replaces the primary by its successor once the successor delivered data.
    async fn switch_if_ready(&self, primary: &mut Conn, next: &mut Successor) -> Option<Reason> {
        let (conn, reason) = next.take_ready()?;
        let old = std::mem::replace(primary, conn);
        close(old.ws).await;
        tracing::info!(reason, "websocket switched to the new connection");
        Some(reason)
    }

    /// Handles one message; `Ok(true)` on `serverShutdown`, `Err` when the connection ended.
    fn receive(&self, conn: &mut Conn, msg: Received) -> Result<bool, Reason> {
        match msg {
            None => Err("closed"),
            Some(Err(err)) => {
                self.telemetry.error(kit::contract::ErrorKind::WsRead, &err);
                Err("error")
            }
            Some(Ok(Message::Text(text))) => {
                conn.last_data = Instant::now();
                conn.delivered = true;
                Ok(self.frame(text.as_str()))
            }
            Some(Ok(Message::Close(frame))) => {
                tracing::info!(?frame, "websocket closed by the server");
                Err("closed")
            }
            Some(Ok(_)) => Ok(false), // pings are answered by tungstenite
        }
    }

    /// Normalises and publishes one frame (never waiting); `true` for `serverShutdown`.
    fn frame(&self, text: &str) -> bool {
        match parse_frame(text, now_ms()) {
            Ok(Frame::AggTrade(t)) => {
                self.count(&t.symbol, "aggTrade");
                self.publisher.stream_agg(&t);
            }
            Ok(Frame::Kline { kline, closed }) => {
                self.count(&kline.symbol, "kline_1m");
                if closed {
                    self.publisher.stream_kline(&kline);
                }
            }
            Ok(Frame::ServerShutdown) => {
                tracing::warn!("serverShutdown received; switching connections");
                return true;
            }
            Ok(Frame::Reply) => {}
            Err(err) => {
                let sample: String = text.chars().take(200).collect();
                self.telemetry.error(
                    kit::contract::ErrorKind::WsMalformed,
                    &format!("{err}; frame: {sample}"),
                );
            }
        }
        false
    }

    fn count(&self, symbol: &str, kind: &str) {
        let stream = format!("{}@{kind}", symbol.to_lowercase());
        self.metrics.ws_messages.with_label_values(&[&stream]).inc();
    }
}

/// The connection that will replace the primary: wanted (for a reason), connecting (a
/// future polled beside the primary's reads), or open and read until it delivers. Failed
/// attempts wait for the back-off before the next.
struct Successor {
    url: String,
    pacer: Arc<Pacer>,
    wanted: Option<Reason>,
    connecting: Option<BoxFuture<'static, Result<Conn, ConnectError>>>,
    conn: Option<Conn>,
    backoff: Backoff,
    retry_at: Option<Instant>,
}

impl Successor {
    fn new(url: String, backoff: Backoff, pacer: Arc<Pacer>) -> Self {
        Self {
            url,
            pacer,
            wanted: None,
            connecting: None,
            conn: None,
            backoff,
            retry_at: None,
        }
    }

    /// A successor is needed for `reason` (the first reason given stays).
    fn want(&mut self, reason: Reason) {
        self.wanted.get_or_insert(reason);
        self.start_if_due();
    }

    /// Starts connecting if a successor is wanted, none is open or connecting, and the
    /// back-off after a failure has passed.
    fn start_if_due(&mut self) {
        let due = self.retry_at.is_none_or(|at| Instant::now() >= at);
        if self.wanted.is_some() && self.conn.is_none() && self.connecting.is_none() && due {
            self.connecting = Some(connect(self.pacer.clone(), self.url.clone()).boxed());
        }
    }

    fn connected(&mut self, result: Result<Conn, ConnectError>, telemetry: &Telemetry) {
        self.connecting = None;
        match result {
            Ok(conn) => self.conn = Some(conn),
            Err(err) => {
                telemetry.error(kit::contract::ErrorKind::WsConnect, &err);
                self.retry_later();
            }
        }
    }

    /// The open successor failed before it took over.
    fn lost(&mut self) {
        self.conn = None;
        self.retry_later();
    }

    fn retry_later(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// The successor and why it was opened, once it delivered data (or overlapped long enough).
    fn take_ready(&mut self) -> Option<(Conn, Reason)> {
        let ready = self
            .conn
            .as_ref()
            .is_some_and(|c| c.delivered || c.opened.elapsed() > OVERLAP_MAX);
        if !ready {
            return None;
        }
        let conn = self.conn.take()?;
        self.backoff.reset();
        self.retry_at = None;
        Some((conn, self.wanted.take().unwrap_or("planned")))
    }
}

/// Opens the combined stream at `url` at its turn, within [`CONNECT_TIMEOUT`].
async fn connect(pacer: Arc<Pacer>, url: String) -> Result<Conn, ConnectError> {
    pacer.turn().await;
    let connected =
        tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(&url)).await;
    let (ws, _) = connected
        .map_err(|_| ConnectError::Timeout(url.clone()))?
        .map_err(|source| ConnectError::Ws {
            url: url.clone(),
            source,
        })?;
    tracing::info!(%url, "websocket connected");
    Ok(Conn {
        ws,
        opened: Instant::now(),
        last_data: Instant::now(),
        delivered: false,
    })
}

/// Sends a close frame if the socket takes it within [`CLOSE_TIMEOUT`], then drops it.
async fn close(mut ws: Socket) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
}

async fn next_of(next: &mut Option<Conn>) -> Received {
    match next {
        Some(conn) => conn.ws.next().await,
        None => std::future::pending().await,
    }
}

async fn connecting(
    pending: &mut Option<BoxFuture<'static, Result<Conn, ConnectError>>>,
) -> Result<Conn, ConnectError> {
    match pending {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_url_lists_both_streams_per_symbol() {
        let c = StreamConfig {
            ws_base: "wss://stream.binance.com:9443/".into(),
            symbols: vec!["BTCUSDT".into(), "ETHUSDT".into()],
            watchdog: Duration::from_secs(10),
            planned_after: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        };
        assert_eq!(c.url(), "wss://stream.binance.com:9443/stream?streams=btcusdt@aggTrade/btcusdt@kline_1m/ethusdt@aggTrade/ethusdt@kline_1m");
    }

    #[test]
    fn symbols_split_over_connections_of_bounded_streams() {
        let config = StreamConfig {
            ws_base: "ws://x".into(),
            symbols: (0..401).map(|i| format!("S{i}USDT")).collect(),
            watchdog: Duration::from_secs(10),
            planned_after: Duration::from_secs(60),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
        };
        let split = shards(&config, 200);
        let sizes: Vec<usize> = split.iter().map(|s| s.stream_names().len()).collect();
        assert_eq!(sizes, [200, 200, 200, 200, 2]);
        let joined: Vec<String> = split.iter().flat_map(|s| s.symbols.clone()).collect();
        assert_eq!(joined, config.symbols, "every symbol once, in order");
        assert_eq!(shards(&config, 1024).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn connection_attempts_take_turns() {
        let pacer = Arc::new(Pacer::new(Duration::from_secs(1)));
        let start = tokio::time::Instant::now();
        let mut turns = Vec::new();
        for _ in 0..4 {
            pacer.turn().await;
            turns.push(start.elapsed().as_secs());
        }
        assert_eq!(turns, [0, 1, 2, 3], "one attempt a second");
        tokio::time::advance(Duration::from_secs(10)).await;
        let idle = tokio::time::Instant::now();
        pacer.turn().await;
        assert_eq!(
            idle.elapsed(),
            Duration::ZERO,
            "after a quiet spell, at once"
        );
    }
}
