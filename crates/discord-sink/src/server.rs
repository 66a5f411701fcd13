//! The sink's HTTP server and its recorded state.

use crate::validate::validate;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One POST as received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorded {
    pub received_at_ms: i64,
    pub path: String,
    pub status: u16,
    pub body: Value,
    /// Why Discord would refuse it; empty when accepted.
    pub errors: Vec<String>,
}

/// How to answer the next POSTs: `status` 429 for `count` requests, with `retry_after` seconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Mode {
    pub status: Option<u16>,
    #[serde(default)]
    pub count: u32,
    #[serde(default = "default_retry_after")]
    pub retry_after: f64,
}

fn default_retry_after() -> f64 {
    1.0
}

#[derive(Debug, Default)]
struct State {
    recorded: Vec<Recorded>,
    mode: Mode,
    watchdog_pings: Beats,
    /// Posts to the dead man's switch's failure endpoint (AlertDeliveryFailing).
    watchdog_fails: Beats,
    watchdog_last_fail: Value,
}

impl State {
    /// The watchdog counters, as `GET /sink/watchdog` answers them.
    fn watchdog_json(&self) -> Value {
        json!({
            "pings": self.watchdog_pings.count,
            "last_ms": self.watchdog_pings.last_ms,
            "fails": self.watchdog_fails.count,
            "last_fail_ms": self.watchdog_fails.last_ms,
            "last_fail": self.watchdog_last_fail,
        })
    }
}

/// Posts to one watchdog endpoint: how many, and when the last came.
#[derive(Debug, Default)]
struct Beats {
    count: u64,
    last_ms: i64,
}

impl Beats {
    fn record(&mut self) {
        self.count += 1;
        self.last_ms = kit::time::now_ms();
    }
}

/// The sink's shared state.
#[derive(Debug, Clone, Default)]
pub struct Sink {
    state: Arc<Mutex<State>>,
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything recorded so far, oldest first.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.lock().recorded.clone()
    }

    /// Takes one webhook POST and decides the answer.
    pub fn receive(&self, path: &str, raw: &[u8]) -> (StatusCode, Value) {
        let body: Value =
            serde_json::from_slice(raw).unwrap_or_else(|e| json!({"unparsable": e.to_string()}));
        let errors = if body.get("unparsable").is_some() {
            vec!["body is not JSON".into()]
        } else {
            validate(&body)
        };
        let mut state = self.lock();
        let (status, answer) = if state.mode.status == Some(429) && state.mode.count > 0 {
            state.mode.count -= 1;
            let retry = state.mode.retry_after;
            (
                StatusCode::TOO_MANY_REQUESTS,
                json!({"message":"You are being rate limited.","retry_after":retry,"global":false}),
            )
        } else if !errors.is_empty() {
            (
                StatusCode::BAD_REQUEST,
                json!({"code":50035,"message":"Invalid Form Body","errors":errors}),
            )
        } else {
            (StatusCode::NO_CONTENT, Value::Null)
        };
        let received_at_ms = kit::time::now_ms();
        state.recorded.push(Recorded {
            received_at_ms,
            path: path.into(),
            status: status.as_u16(),
            body,
            errors,
        });
        (status, answer)
    }
}

/// Serves `sink` on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, sink: Sink, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => { tracing::warn!(error = %err, "accept failed"); continue; }
            },
        };
        let sink = sink.clone();
        let svc = hyper::service::service_fn(move |req| handle(sink.clone(), req));
        tokio::spawn(
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc),
        );
    }
}

async fn handle(sink: Sink, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let raw = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path();
    let response = match (&parts.method, path) {
        (&Method::POST, p) if p.starts_with("/api/webhooks/") => webhook(&sink, p, &raw),
        (&Method::GET, "/sink/messages") => reply(StatusCode::OK, &json!(sink.recorded())),
        (&Method::DELETE, "/sink/messages") => {
            sink.lock().recorded.clear();
            reply(StatusCode::NO_CONTENT, &Value::Null)
        }
        (&Method::POST, "/sink/mode") => set_mode(&sink, &raw),
        // Alertmanager's webhook for the always-firing Watchdog: a heartbeat, counted.
        (&Method::POST, "/watchdog") => {
            sink.lock().watchdog_pings.record();
            reply(StatusCode::OK, &json!({"ok": true}))
        }
        // The dead man's switch's failure endpoint (as healthchecks.io's `<ping URL>/fail`):
        // AlertDeliveryFailing's route that does not depend on Discord. Counted, and the
        // last body kept, so a test sees which alerts it carried.
        (&Method::POST, "/watchdog/fail") => {
            let mut state = sink.lock();
            state.watchdog_fails.record();
            state.watchdog_last_fail = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            reply(StatusCode::OK, &json!({"ok": true}))
        }
        (&Method::GET, "/sink/watchdog") => reply(StatusCode::OK, &sink.lock().watchdog_json()),
        (&Method::GET, "/" | "/healthz") => reply(
            StatusCode::OK,
            &json!({"recorded": sink.lock().recorded.len()}),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            &json!({"message":"404: Not Found","code":0}),
        ),
    };
    Ok(response)
}

fn webhook(sink: &Sink, path: &str, raw: &[u8]) -> Response<Full<Bytes>> {
    let (status, answer) = sink.receive(path, raw);
    let mut response = reply(status, &answer);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let secs = answer["retry_after"]
            .as_f64()
            .unwrap_or(1.0)
            .ceil()
            .to_string();
        if let Ok(value) = secs.parse() {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

fn set_mode(sink: &Sink, raw: &[u8]) -> Response<Full<Bytes>> {
    match serde_json::from_slice::<Mode>(raw) {
        Ok(mode) => {
            sink.lock().mode = mode;
            reply(StatusCode::NO_CONTENT, &Value::Null)
        }
        Err(e) => reply(
            StatusCode::BAD_REQUEST,
            &json!({"message": format!("bad mode: {e}")}),
        ),
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let bytes = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink served on a free port: its base URL, its state, and the token that stops it.
    async fn start() -> (String, Sink, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let sink = Sink::default();
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, sink.clone(), token.clone()));
        (base, sink, token)
    }

    async fn post(url: &str, body: &Value) -> reqwest::Response {
        let client = reqwest::Client::new();
        client.post(url).json(body).send().await.expect("post")
    }

    async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
        let response = reqwest::get(url).await.expect("get");
        response.json().await.expect("json")
    }

    #[tokio::test]
    async fn answers_like_discord_and_records_everything() {
        let (base, _sink, token) = start().await;
        let hook = format!("{base}/api/webhooks/1/abc");
        let ok = json!({"embeds":[{"title":"t","description":"d"}]});
        assert_eq!(post(&hook, &ok).await.status(), 204);
        let bad = json!({"embeds":[{"title":"t".repeat(300)}]});
        assert_eq!(post(&hook, &bad).await.status(), 400);

        let mode = json!({"status":429,"count":1,"retry_after":2.5});
        assert_eq!(
            post(&format!("{base}/sink/mode"), &mode).await.status(),
            204
        );
        let limited = post(&hook, &json!({"content":"x"})).await;
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "3");
        let body: Value = limited.json().await.expect("json");
        assert_eq!(body["retry_after"], 2.5);
        assert_eq!(post(&hook, &json!({"content":"x"})).await.status(), 204);

        let recorded: Vec<Recorded> = get_json(&format!("{base}/sink/messages")).await;
        let statuses: Vec<u16> = recorded.iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![204, 400, 429, 204]);
        assert!(recorded[1].errors[0].contains("title"));
        token.cancel();
    }

    #[tokio::test]
    async fn watchdog_posts_are_counted_not_recorded() {
        let (base, sink, token) = start().await;
        let counters = format!("{base}/sink/watchdog");
        let ping = post(&format!("{base}/watchdog"), &json!({"alerts": []})).await;
        assert_eq!(ping.status(), 200);
        let w: Value = get_json(&counters).await;
        assert_eq!(
            (w["pings"].as_u64(), w["fails"].as_u64()),
            (Some(1), Some(0))
        );
        assert!(w["last_ms"].as_i64() > Some(0), "{w}");

        let failing = json!({"alerts": [{"labels": {"alertname": "AlertDeliveryFailing"}}]});
        let fail = post(&format!("{base}/watchdog/fail"), &failing).await;
        assert_eq!(fail.status(), 200);
        let w: Value = get_json(&counters).await;
        assert_eq!(
            (w["pings"].as_u64(), w["fails"].as_u64()),
            (Some(1), Some(1))
        );
        assert!(w["last_fail_ms"].as_i64() > Some(0), "{w}");
        assert_eq!(w["last_fail"], failing);
        assert!(
            sink.recorded().is_empty(),
            "watchdog posts are not Discord messages"
        );
        token.cancel();
    }
}
