//! One HTTP port for everything, like Binance's hosts: REST under `/api/v3`, WebSocket
//! streams at `/ws/<stream>` and `/stream?streams=`, the control API under `/sim/`, and
//! `/metrics` and `/healthz` for Prometheus.
//!
//! Served by axum (on hyper and tower, as the services' ops servers are): its router, its
//! body limit for the control API and its WebSocket upgrade; Binance's own error shapes
//! (JSON `{"code","msg"}`) replace axum's plain-text rejections.

use crate::app::App;
use crate::{control, rest, ws};
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, State, WebSocketUpgrade};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use kit::Telemetry;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The largest control body read (the real ones are a few dozen bytes).
const MAX_CONTROL_BODY: usize = 64 * 1024;

#[derive(Clone)]
struct Shared {
    app: Arc<App>,
    telemetry: Telemetry,
}

/// The simulator's routes.
fn router(app: Arc<App>, telemetry: Telemetry) -> Router {
    Router::new()
        .route("/api/{*path}", any(api))
        .route("/ws", any(upgrade))
        .route("/ws/", any(upgrade)) // the wildcard below needs a non-empty tail
        .route("/ws/{*stream}", any(upgrade))
        .route("/stream", any(upgrade))
        .route("/sim/{*command}", any(sim_control))
        .route("/metrics", get(metrics))
        .route("/healthz", get(ok))
        .route("/readyz", get(ok))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_CONTROL_BODY))
        .with_state(Shared { app, telemetry })
}

/// Serves until `shutdown`. Open WebSocket sessions are not closed by it: they end when
/// their client leaves or their lifetime does (as before axum).
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) {
    let service = router(app, telemetry).into_make_service_with_connect_info::<SocketAddr>();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        served = axum::serve(listener, service) => {
            if let Err(err) = served {
                tracing::error!(error = %err, "the simulator's server stopped");
            }
        }
    }
}

async fn sim_control(
    State(s): State<Shared>,
    method: Method,
    uri: Uri,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        let error = format!("control body unreadable or larger than {MAX_CONTROL_BODY} bytes");
        return json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": error}));
    };
    let (status, value) = control::handle(&s.app, &method, uri.path(), uri.query(), &body);
    json_response(status, &value)
}

async fn api(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    RawQuery(query): RawQuery,
) -> Response {
    let app = &s.app;
    let latency = app.faults().rest_latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let params = rest::parse_query(query.as_deref());
    let reply = rest::handle(app, peer.ip(), uri.path(), &params);
    let mut response = json_response(reply.status, &reply.body);
    let headers = response.headers_mut();
    let window = app.config.weight_window_secs.max(1);
    if let Ok(name) = header::HeaderName::try_from(rest::used_weight_header(window)) {
        headers.insert(name, HeaderValue::from(reply.used_weight));
    }
    if let Some(secs) = reply.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

async fn metrics(State(s): State<Shared>) -> Response {
    match s.telemetry.encode() {
        Ok(text) => (
            [(header::CONTENT_TYPE, kit::http::METRICS_CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(err) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": err.to_string()}),
        ),
    }
}

async fn ok() -> Response {
    json_response(StatusCode::OK, &json!({"ok": true}))
}

async fn not_found() -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &json!({"code": -1000, "msg": "Unknown endpoint."}),
    )
}

/// The streams a WebSocket URL asks for: `/ws/<stream>`, `/ws` (subscribe later) or
/// `/stream?streams=a/b/c` (combined). `Err` names the first unknown stream.
fn requested_streams(
    app: &App,
    path: &str,
    query: Option<&str>,
) -> Result<(BTreeSet<String>, bool), String> {
    let (names, combined): (Vec<&str>, bool) = if path == "/stream" {
        let q = query.unwrap_or_default();
        let list = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("streams="))
            .unwrap_or_default();
        (list.split('/').filter(|s| !s.is_empty()).collect(), true)
    } else {
        (
            path.trim_start_matches("/ws")
                .split('/')
                .filter(|s| !s.is_empty())
                .collect(),
            false,
        )
    };
    let streams = names
        .iter()
        .map(|n| ws::canonical_stream(app, n).ok_or_else(|| n.to_string()))
        .collect::<Result<_, _>>()?;
    Ok((streams, combined))
}

async fn upgrade(
    State(s): State<Shared>,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let app = s.app;
    if app.faults().ws_refused(app.real_ms()) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"code": -1001, "msg": "Service unavailable (simulated outage)."}),
        );
    }
    let (streams, combined) = match requested_streams(&app, uri.path(), uri.query()) {
        Ok(s) => s,
        Err(bad) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": -1121, "msg": format!("Invalid stream: {bad}")}),
            )
        }
    };
    let Ok(upgrade) = upgrade else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"code": -1000, "msg": "WebSocket upgrade required."}),
        );
    };
    upgrade.on_upgrade(move |socket| ws::serve(socket, streams, combined, app))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}
