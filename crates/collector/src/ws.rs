//! The WebSocket side: one combined stream (`@aggTrade` and `@kline_1m` per symbol).
//!
//! A per-connection watchdog reconnects a connection that went silent; a planned
//! reconnect before Binance's 24 h limit (and a `serverShutdown`) opens the new connection
//! first and reads both until the new one delivers, so the switch loses nothing (the
//! publisher drops the overlap's duplicates). Lost connections reconnect with capped,
//! jittered back-off. The collector sends nothing but pongs (tungstenite answers each
//! server ping once) and close frames: far below Binance's 5 messages a second.

use crate::backoff::Backoff;
use crate::metrics::CollectorMetrics;
use crate::publish::Publisher;
use futures::StreamExt;
use kit::time::now_ms;
use kit::Telemetry;
use market::binance::{parse_frame, Frame};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
        self.symbols.iter().flat_map(|s| {
            let s = s.to_lowercase();
            [format!("{s}@aggTrade"), format!("{s}@kline_1m")]
        }).collect()
    }

    /// The combined-stream URL.
    pub fn url(&self) -> String {
        format!("{}/stream?streams={}", self.ws_base.trim_end_matches('/'), self.stream_names().join("/"))
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest overlap of the old and new connection during a switch.
const OVERLAP_MAX: Duration = Duration::from_secs(10);

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
}

impl Streams {
    /// Keeps the streams connected until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), kit::KitError> {
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            let reason = match self.connect().await {
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
                    self.telemetry.error("ws_connect", &err);
                    "connect_failed"
                }
            };
            if shutdown.is_cancelled() {
                return Ok(());
            }
            self.metrics.ws_reconnects.with_label_values(&[reason]).inc();
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let url = self.config.url();
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(&url)).await;
        let (ws, _) = connected.map_err(|_| format!("connecting to {url}: timed out"))?.map_err(|e| format!("connecting to {url}: {e}"))?;
        tracing::info!(%url, "websocket connected");
        Ok(Conn { ws, opened: Instant::now(), last_data: Instant::now(), delivered: false })
    }

    fn set_connected(&self, up: bool) {
        for stream in self.config.stream_names() {
            self.metrics.ws_connected.with_label_values(&[&stream]).set(i64::from(up));
        }
    }

    /// Reads the connection (and, during a switch, its successor) until it is lost.
    async fn serve(&self, mut primary: Conn, shutdown: &CancellationToken) -> Reason {
        let mut next: Option<(Conn, Reason)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let _ = primary.ws.close(None).await;
                    return "shutdown";
                }
                msg = primary.ws.next() => match self.receive(&mut primary, msg).await {
                    Ok(false) => {}
                    Ok(true) if next.is_none() => match self.connect().await {
                        Ok(conn) => next = Some((conn, "server_shutdown")),
                        Err(_) => return "server_shutdown",
                    },
                    Ok(true) => {}
                    Err(reason) => return reason,
                },
                msg = next_of(&mut next) => {
                    if let Some((conn, _)) = next.as_mut() {
                        if self.receive(conn, msg).await.is_err() {
                            next = None; // the successor failed; the primary goes on
                        }
                    }
                }
                _ = tick.tick() => {
                    if primary.last_data.elapsed() > self.config.watchdog {
                        tracing::warn!(silent_for = ?primary.last_data.elapsed(), "websocket stalled; reconnecting");
                        return "stalled";
                    }
                    if next.is_none() && primary.opened.elapsed() >= self.config.planned_after {
                        if let Ok(conn) = self.connect().await {
                            next = Some((conn, "planned"));
                        }
                    }
                    if let Some(reason) = self.switch_if_ready(&mut primary, &mut next).await {
                        self.metrics.ws_reconnects.with_label_values(&[reason]).inc();
                    }
                }
            }
        }
    }

    /// Replaces the primary by its successor once the successor delivered data.
    async fn switch_if_ready(&self, primary: &mut Conn, next: &mut Option<(Conn, Reason)>) -> Option<Reason> {
        let ready = next.as_ref().is_some_and(|(c, _)| c.delivered || c.opened.elapsed() > OVERLAP_MAX);
        if !ready {
            return None;
        }
        let (conn, reason) = next.take()?;
        let mut old = std::mem::replace(primary, conn);
        let _ = old.ws.close(None).await;
        tracing::info!(reason, "websocket switched to the new connection");
        Some(reason)
    }

    /// Handles one message; `Ok(true)` on `serverShutdown`, `Err` when the connection ended.
    async fn receive(&self, conn: &mut Conn, msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Result<bool, Reason> {
        match msg {
            None => Err("closed"),
            Some(Err(err)) => {
                self.telemetry.error("ws_read", &err);
                Err("error")
            }
            Some(Ok(Message::Text(text))) => {
                conn.last_data = Instant::now();
                conn.delivered = true;
                Ok(self.frame(text.as_str()).await)
            }
            Some(Ok(Message::Close(frame))) => {
                tracing::info!(?frame, "websocket closed by the server");
                Err("closed")
            }
            Some(Ok(_)) => Ok(false), // pings are answered by tungstenite
        }
    }

    /// Normalises and publishes one frame; `true` for `serverShutdown`.
    async fn frame(&self, text: &str) -> bool {
        match parse_frame(text, now_ms()) {
            Ok(Frame::AggTrade(t)) => {
                self.count(&t.symbol, "aggTrade");
                self.publisher.stream_agg(&t).await;
            }
            Ok(Frame::Kline { kline, closed }) => {
                self.count(&kline.symbol, "kline_1m");
                if closed {
                    self.publisher.stream_kline(&kline).await;
                }
            }
            Ok(Frame::ServerShutdown) => {
                tracing::warn!("serverShutdown received; switching connections");
                return true;
            }
            Ok(Frame::Reply) => {}
            Err(err) => {
                let sample: String = text.chars().take(200).collect();
                self.telemetry.error("ws_malformed", &format!("{err}; frame: {sample}"));
            }
        }
        false
    }

    fn count(&self, symbol: &str, kind: &str) {
        let stream = format!("{}@{kind}", symbol.to_lowercase());
        self.metrics.ws_messages.with_label_values(&[&stream]).inc();
    }
}

async fn next_of(next: &mut Option<(Conn, Reason)>) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match next {
        Some((conn, _)) => conn.ws.next().await,
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
}
