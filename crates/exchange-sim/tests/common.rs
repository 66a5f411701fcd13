//! Test helpers: a simulator on a free port, REST and WebSocket clients.
#![allow(dead_code)]

use exchange_sim::Config;
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub struct Sim {
    pub base: String,
    pub ws: String,
    pub client: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

/// Starts a simulator with `vars` as its environment.
pub async fn sim(vars: &[(&str, &str)]) -> Sim {
    let vars: HashMap<&str, &str> = vars.iter().copied().collect();
    let config: Config = kit::config::parse_from_map(&vars).expect("config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    exchange_sim::start(config, listener, token.clone())
        .await
        .expect("start");
    Sim {
        base: format!("http://{addr}"),
        ws: format!("ws://{addr}"),
        client: reqwest::Client::new(),
        _stop: token.drop_guard(),
    }
}

impl Sim {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    pub async fn json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("json")
    }

    pub async fn control(&self, op: &str, body: Value) {
        let r = self
            .client
            .post(format!("{}/sim/{op}", self.base))
            .json(&body)
            .send()
            .await
            .expect("control");
        assert_eq!(
            r.status(),
            200,
            "control {op}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Waits until every symbol holds at least `n` trades (`/sim/state`, which costs no
    /// request weight); returns that state.
    pub async fn held_trades(&self, n: u64) -> Value {
        wait_for(
            &format!("every symbol holds {n} trades"),
            Duration::from_secs(10),
            || async {
                let state = self.json("/sim/state").await;
                let all = state["symbols"]
                    .as_array()?
                    .iter()
                    .all(|s| s["held_trades"].as_u64().is_some_and(|h| h >= n));
                all.then_some(state)
            },
        )
        .await
    }
}

/// Polls `check` until it gives `Some`; panics naming `what` after `within`.
pub use kit::testing::until_some as wait_for;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("ws connect")
        .0
}

/// The next text message as JSON, skipping control frames; `None` when the socket ends.
pub async fn next_json(ws: &mut Ws, within: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(within, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Collects `n` messages (panics after `within`).
pub async fn take(ws: &mut Ws, n: usize, within: Duration) -> Vec<Value> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next_json(ws, within).await.expect("stream message"));
    }
    out
}
