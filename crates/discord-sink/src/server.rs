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
    watchdog_pings: u64,
    watchdog_last_ms: i64,
    /// Posts to the dead man's switch's failure endpoint (AlertDeliveryFailing).
    watchdog_fails: u64,
    watchdog_last_fail_ms: i64,
    watchdog_last_fail: Value,
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
            let mut state = sink.lock();
            state.watchdog_pings += 1;
            state.watchdog_last_ms = kit::time::now_ms();
            reply(StatusCode::OK, &json!({"ok": true}))
        }
        // The dead man's switch's failure endpoint (as healthchecks.io's `<ping URL>/fail`):
        // AlertDeliveryFailing's route that does not depend on Discord. Counted, and the
        // last body kept, so a test sees which alerts it carried.
        (&Method::POST, "/watchdog/fail") => {
            let mut state = sink.lock();
            state.watchdog_fails += 1;
            state.watchdog_last_fail_ms = kit::time::now_ms();
            state.watchdog_last_fail = serde_json::from_slice(&raw).unwrap_or(Value::Null);
            reply(StatusCode::OK, &json!({"ok": true}))
        }
        (&Method::GET, "/sink/watchdog") => {
            let state = sink.lock();
            reply(
                StatusCode::OK,
                &json!({
                    "pings": state.watchdog_pings,
                    "last_ms": state.watchdog_last_ms,
                    "fails": state.watchdog_fails,
                    "last_fail_ms": state.watchdog_last_fail_ms,
                    "last_fail": state.watchdog_last_fail,
                }),
            )
        }
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

    #[tokio::test]
    async fn answers_like_discord_and_records_everything() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let sink = Sink::default();
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, sink.clone(), token.clone()));
        let client = reqwest::Client::new();
        let hook = format!("{base}/api/webhooks/1/abc");

        let ok = client
            .post(&hook)
            .json(&json!({"embeds":[{"title":"t","description":"d"}]}))
            .send()
            .await
            .expect("post");
        assert_eq!(ok.status(), 204);
        let bad = client
            .post(&hook)
            .json(&json!({"embeds":[{"title":"t".repeat(300)}]}))
            .send()
            .await
            .expect("post");
        assert_eq!(bad.status(), 400);

        let mode = json!({"status":429,"count":1,"retry_after":2.5});
        assert_eq!(
            client
                .post(format!("{base}/sink/mode"))
                .json(&mode)
                .send()
                .await
                .expect("mode")
                .status(),
            204
        );
        let limited = client
            .post(&hook)
            .json(&json!({"content":"x"}))
            .send()
            .await
            .expect("post");
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()[header::RETRY_AFTER], "3");
        let body: Value = limited.json().await.expect("json");
        assert_eq!(body["retry_after"], 2.5);
        assert_eq!(
            client
                .post(&hook)
                .json(&json!({"content":"x"}))
                .send()
                .await
                .expect("post")
                .status(),
            204
        );

        let recorded: Vec<Recorded> = client
            .get(format!("{base}/sink/messages"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let statuses: Vec<u16> = recorded.iter().map(|r| r.status).collect();
        assert_eq!(statuses, vec![204, 400, 429, 204]);
        assert!(recorded[1].errors[0].contains("title"));

        assert_eq!(
            client
                .post(format!("{base}/watchdog"))
                .json(&json!({"alerts": []}))
                .send()
                .await
                .expect("ping")
                .status(),
            200
        );
        let w: Value = client
            .get(format!("{base}/sink/watchdog"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(w["pings"], 1);
        assert_eq!(w["fails"], 0);
        assert_eq!(recorded.len(), 4, "watchdog pings are not Discord messages");

        let failing = json!({"alerts": [{"labels": {"alertname": "AlertDeliveryFailing"}}]});
        assert_eq!(
            client
                .post(format!("{base}/watchdog/fail"))
                .json(&failing)
                .send()
                .await
                .expect("fail")
                .status(),
            200
        );
        let w: Value = client
            .get(format!("{base}/sink/watchdog"))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(
            (w["pings"].as_u64(), w["fails"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(w["last_fail"], failing);
        assert_eq!(
            sink.recorded().len(),
            4,
            "failure pings are not Discord messages"
        );
        token.cancel();
    }
}
