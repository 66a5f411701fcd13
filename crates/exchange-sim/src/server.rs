//! One HTTP port for everything, like Binance's hosts: REST under `/api/v3`, WebSocket
//! streams at `/ws/<stream>` and `/stream?streams=`, the control API under `/sim/`, and
//! `/metrics` and `/healthz` for Prometheus.

use crate::app::App;
use crate::{control, rest, ws};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use kit::Telemetry;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

type Body = Full<Bytes>;

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => { telemetry.error(kit::contract::ErrorKind::Accept, &err); continue; }
            },
        };
        let (app, telemetry) = (app.clone(), telemetry.clone());
        let svc = hyper::service::service_fn(move |req| {
            handle(app.clone(), telemetry.clone(), peer, req)
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        tokio::spawn(conn);
    }
}

async fn handle(
    app: Arc<App>,
    telemetry: Telemetry,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let response = if path.starts_with("/ws") || path == "/stream" {
        upgrade(app, req)
    } else if path.starts_with("/api/") {
        api(&app, peer.ip(), &path, req.uri().query()).await
    } else if path.starts_with("/sim/") {
        sim_control(&app, &path, req).await
    } else {
        ops(&telemetry, req.method(), &path)
    };
    Ok(response)
}

/// The largest control body read (the real ones are a few dozen bytes).
const MAX_CONTROL_BODY: usize = 64 * 1024;

async fn sim_control(app: &App, path: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let Ok(body) = http_body_util::Limited::new(body, MAX_CONTROL_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
    else {
        let error = format!("control body unreadable or larger than {MAX_CONTROL_BODY} bytes");
        return json_response(StatusCode::PAYLOAD_TOO_LARGE, &json!({"error": error}));
    };
    let (status, value) = control::handle(app, &parts.method, path, parts.uri.query(), &body);
    json_response(status, &value)
}

async fn api(app: &App, ip: IpAddr, path: &str, query: Option<&str>) -> Response<Body> {
    let latency = app.faults().rest_latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let reply = rest::handle(app, ip, path, &rest::parse_query(query));
    let mut response = json_response(reply.status, &reply.body);
    let headers = response.headers_mut();
    if let Ok(name) = http::HeaderName::try_from(rest::used_weight_header(
        app.config.weight_window_secs.max(1),
    )) {
        headers.insert(name, HeaderValue::from(reply.used_weight));
    }
    if let Some(secs) = reply.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn ops(telemetry: &Telemetry, method: &Method, path: &str) -> Response<Body> {
    match (method, path) {
        (&Method::GET, "/metrics") => match telemetry.encode() {
            Ok(text) => Response::builder()
                .header(header::CONTENT_TYPE, kit::http::METRICS_CONTENT_TYPE)
                .body(Full::new(Bytes::from(text)))
                .unwrap_or_default(),
            Err(err) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": err.to_string()}),
            ),
        },
        (&Method::GET, "/healthz" | "/readyz") => {
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"code": -1000, "msg": "Unknown endpoint."}),
        ),
    }
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

fn upgrade(app: Arc<App>, mut req: Request<Incoming>) -> Response<Body> {
    if app.faults().ws_refused(app.real_ms()) {
        return json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"code": -1001, "msg": "Service unavailable (simulated outage)."}),
        );
    }
    let (streams, combined) = match requested_streams(&app, req.uri().path(), req.uri().query()) {
        Ok(s) => s,
        Err(bad) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": -1121, "msg": format!("Invalid stream: {bad}")}),
            )
        }
    };
    let is_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| is_ws)
        .cloned()
    else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"code": -1000, "msg": "WebSocket upgrade required."}),
        );
    };
    let upgraded = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => {
                let socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, None).await;
                ws::serve(socket, streams, combined, app).await;
            }
            Err(err) => tracing::warn!(error = %err, "websocket upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Full::new(Bytes::new()))
        .unwrap_or_default()
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json;charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_default()
}
