//! WebSocket sessions with Binance's rules: streams `<symbol>@aggTrade`, `<symbol>@kline_1m`
//! and `<symbol>@depth@100ms` (raw at `/ws/<stream>`, wrapped as
//! `{"stream":..,"data":..}` at `/stream?streams=a/b`), a ping every 20 s and a close after
//! 1 min without a pong, at most 5 incoming messages a second, a 24 h lifetime, and
//! `SUBSCRIBE`/`UNSUBSCRIBE`/`LIST_SUBSCRIPTIONS`. A client too slow for the stream is
//! disconnected. Faults: stalls (no data, no pings, socket open), latency, disconnects,
//! `serverShutdown` (sent as a top-level `{"e":"serverShutdown","E":ms}` on every kind of
//! connection).

use crate::app::{App, Event, SessionCmd};
use axum::extract::ws::{close_code, CloseCode, CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// What `POST /sim/garbage` sends to every socket: three frames a client must reject.
pub const MALFORMED: &[&str] = &[
    "{not json",
    r#"{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"q":"1.0","f":1,"l":1,"T":1,"m":true,"M":true}"#,
    r#"{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"p":"1.0","q":"-5","f":1,"l":1,"T":1,"m":true,"M":true}"#,
];

/// Most events written before one flush.
const BATCH: usize = 512;

/// The canonical name of a stream this market serves, or `None`.
pub fn canonical_stream(app: &App, name: &str) -> Option<String> {
    let (symbol, kind) = name.split_once('@')?;
    let symbol = app.symbol(&symbol.to_uppercase())?;
    let kind = match kind {
        "aggTrade" => "aggTrade",
        "kline_1m" => "kline_1m",
        "depth" | "depth@100ms" => "depth@100ms",
        _ => return None,
    };
    Some(format!("{}@{kind}", symbol.lower))
}

/// Counts incoming messages in 1-second windows.
struct InboundLimit {
    max: u32,
    window_start: Instant,
    count: u32,
}

impl InboundLimit {
    fn allow(&mut self) -> bool {
        if self.window_start.elapsed() >= Duration::from_secs(1) {
            self.window_start = Instant::now();
            self.count = 0;
        }
        self.count += 1;
        self.count <= self.max
    }
}

struct Session {
    app: Arc<App>,
    streams: BTreeSet<String>,
    combined: bool,
    last_pong: Instant,
    inbound: InboundLimit,
}

/// Serves one connection until it ends; counts it in the simulator's metrics.
pub async fn serve(ws: WebSocket, streams: BTreeSet<String>, combined: bool, app: Arc<App>) {
    app.metrics.ws_connections.inc();
    let max = app.config.ws_max_client_msgs_per_sec;
    let inbound = InboundLimit {
        max,
        window_start: Instant::now(),
        count: 0,
    };
    let mut session = Session {
        app: app.clone(),
        streams,
        combined,
        last_pong: Instant::now(),
        inbound,
    };
    let reason = session.drive(ws).await;
    tracing::debug!(reason, "websocket session ended");
    app.metrics.ws_connections.dec();
    app.metrics
        .ws_disconnects
        .with_label_values(&[reason])
        .inc();
}

impl Session {
    async fn drive(&mut self, mut ws: WebSocket) -> &'static str {
        let mut events = self.app.events.subscribe();
        let mut commands = self.app.commands.subscribe();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + self.app.ping_interval(),
            self.app.ping_interval(),
        );
        let lifetime = tokio::time::sleep(Duration::from_secs(self.app.config.ws_lifetime_secs));
        tokio::pin!(lifetime);
        let pong_timeout = Duration::from_secs(self.app.config.ws_pong_timeout_secs);
        loop {
            let outcome = tokio::select! {
                _ = &mut lifetime => Err(close(&mut ws, close_code::NORMAL, "connection lifetime reached", "lifetime").await),
                cmd = commands.recv() => self.command(&mut ws, cmd).await,
                _ = ping.tick() => self.ping(&mut ws, pong_timeout).await,
                event = events.recv() => self.forward(&mut ws, event, &mut events).await,
                incoming = ws.next() => self.incoming(&mut ws, incoming).await,
            };
            if let Err(reason) = outcome {
                return reason;
            }
        }
    }

    fn stalled(&self) -> bool {
        self.app.faults().stalled(self.app.real_ms())
    }

    async fn command(
        &self,
        ws: &mut WebSocket,
        cmd: Result<SessionCmd, RecvError>,
    ) -> Result<(), &'static str> {
        match cmd {
            Ok(SessionCmd::Disconnect) => Err("forced_disconnect"), // dropped without a close frame
            Ok(SessionCmd::ServerShutdown) => {
                let event =
                    json!({"e": "serverShutdown", "E": self.app.clock.now_ms()}).to_string();
                ws.send(Message::text(event))
                    .await
                    .map_err(|_| "write_failed")
            }
            Ok(SessionCmd::Garbage) => {
                for frame in MALFORMED {
                    ws.send(Message::text(*frame))
                        .await
                        .map_err(|_| "write_failed")?;
                }
                Ok(())
            }
            Err(_) => Ok(()),
        }
    }

    async fn ping(&self, ws: &mut WebSocket, pong_timeout: Duration) -> Result<(), &'static str> {
        if self.stalled() {
            return Ok(());
        }
        if self.last_pong.elapsed() > pong_timeout {
            return Err(close(
                ws,
                close_code::POLICY,
                "no pong within the timeout",
                "pong_timeout",
            )
            .await);
        }
        let payload = self.app.clock.now_ms().to_string();
        ws.send(Message::Ping(payload.into_bytes().into()))
            .await
            .map_err(|_| "write_failed")
    }

    async fn forward(
        &self,
        ws: &mut WebSocket,
        first: Result<Arc<Event>, RecvError>,
        events: &mut tokio::sync::broadcast::Receiver<Arc<Event>>,
    ) -> Result<(), &'static str> {
        let mut next = Some(first);
        let mut written = 0usize;
        while let Some(received) = next.take() {
            match received {
                Ok(event) => written += self.write_event(ws, &event).await?,
                Err(RecvError::Lagged(_)) => {
                    return Err(close(
                        ws,
                        close_code::POLICY,
                        "client too slow for the stream",
                        "slow_consumer",
                    )
                    .await)
                }
                Err(RecvError::Closed) => return Err("server_stopped"),
            }
            if written < BATCH {
                next = events.try_recv().ok().map(Ok);
            }
        }
        if written > 0 {
            ws.flush().await.map_err(|_| "write_failed")?;
            self.app.metrics.ws_sent.inc_by(written as u64);
        }
        Ok(())
    }

    /// Feeds one event if this session wants it; returns how many messages were written.
    async fn write_event(&self, ws: &mut WebSocket, event: &Event) -> Result<usize, &'static str> {
        if !self.streams.contains(&event.stream) || self.stalled() {
            return Ok(0);
        }
        let latency = self.app.faults().ws_latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let text = if self.combined {
            format!(
                r#"{{"stream":"{}","data":{}}}"#,
                event.stream, event.payload
            )
        } else {
            event.payload.clone()
        };
        ws.feed(Message::text(text))
            .await
            .map_err(|_| "write_failed")?;
        Ok(1)
    }

    async fn incoming(
        &mut self,
        ws: &mut WebSocket,
        msg: Option<Result<Message, axum::Error>>,
    ) -> Result<(), &'static str> {
        let msg = match msg {
            None | Some(Err(_)) => return Err("client_gone"),
            Some(Ok(msg)) => msg,
        };
        if !self.inbound.allow() {
            return Err(close(
                ws,
                close_code::POLICY,
                "too many messages",
                "client_message_rate",
            )
            .await);
        }
        match msg {
            Message::Pong(_) => self.last_pong = Instant::now(),
            Message::Ping(_) => ws.flush().await.map_err(|_| "write_failed")?, // pong queued by tungstenite (under axum)
            Message::Text(text) => {
                let reply = self.method(text.as_str());
                ws.send(Message::text(reply.to_string()))
                    .await
                    .map_err(|_| "write_failed")?;
            }
            Message::Close(_) => return Err("client_closed"),
            _ => {}
        }
        Ok(())
    }

    /// `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`.
    fn method(&mut self, text: &str) -> Value {
        let Ok(request) = serde_json::from_str::<Value>(text) else {
            return json!({"error": {"code": 3, "msg": "Invalid JSON"}, "id": null});
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let params: Vec<String> = request["params"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(String::from))
            .collect();
        let streams: Option<Vec<String>> = params
            .iter()
            .map(|p| canonical_stream(&self.app, p))
            .collect();
        match (request["method"].as_str(), streams) {
            (Some("SUBSCRIBE"), Some(s)) => self.streams.extend(s),
            (Some("UNSUBSCRIBE"), Some(s)) => s.iter().for_each(|x| {
                self.streams.remove(x);
            }),
            (Some("LIST_SUBSCRIPTIONS"), _) => return json!({"result": self.streams, "id": id}),
            _ => {
                return json!({"error": {"code": 2, "msg": format!("Invalid request: {text}")}, "id": id})
            }
        }
        json!({"result": null, "id": id})
    }
}

async fn close(
    ws: &mut WebSocket,
    code: CloseCode,
    why: &str,
    reason: &'static str,
) -> &'static str {
    let frame = CloseFrame {
        code,
        reason: why.to_string().into(),
    };
    let _ =
        tokio::time::timeout(Duration::from_secs(1), ws.send(Message::Close(Some(frame)))).await;
    reason
}
