//! The operations HTTP server every service runs (hyper + tower): `GET /metrics` (the
//! Prometheus text format), `GET /healthz` (the process is alive) and `GET /readyz` (every
//! dependency probe answers). Shuts down gracefully with the service's token.

use crate::Telemetry;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

/// A readiness probe: resolves to `Err(reason)` when a dependency does not answer.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Prometheus 3 refuses a scrape without a valid Content-Type.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Components working in a reduced mode, by name, with the reason (e.g. the collector's
/// Binance REST during a ban). `/readyz` lists them and stays 200: the process is alive
/// and its dependencies answer; restarting it would not help.
#[derive(Clone, Default)]
pub struct Degraded(Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>>);

impl Degraded {
    /// Marks `component` degraded for `reason` (replacing an earlier reason).
    pub fn set(&self, component: &'static str, reason: impl Into<String>) {
        self.lock().insert(component, reason.into());
    }

    /// Marks `component` healthy again.
    pub fn clear(&self, component: &'static str) {
        self.lock().remove(component);
    }

    /// Every degraded component with its reason, ordered by name.
    pub fn list(&self) -> Vec<(&'static str, String)> {
        self.lock().iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<&'static str, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the server needs: the registry to expose, the named readiness probes and the
/// degraded components.
pub struct OpsApp {
    telemetry: Telemetry,
    probes: Vec<(&'static str, Probe)>,
    degraded: Degraded,
}

impl OpsApp {
    pub fn new(telemetry: Telemetry) -> Self {
        Self {
            telemetry,
            probes: Vec::new(),
            degraded: Degraded::default(),
        }
    }

    /// Shows `degraded` in `/readyz`.
    pub fn degraded(mut self, degraded: Degraded) -> Self {
        self.degraded = degraded;
        self
    }

    /// Adds a readiness probe; `/readyz` answers 200 only when every probe succeeds.
    pub fn probe(mut self, name: &'static str, probe: Probe) -> Self {
        self.probes.push((name, probe));
        self
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then drains open connections.
pub async fn serve(listener: TcpListener, app: OpsApp, shutdown: CancellationToken) {
    let app = Arc::new(app);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => { app.telemetry.error(crate::contract::ErrorKind::HttpAccept, &err); continue; }
            },
        };
        let app = app.clone();
        let svc = ServiceBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .service_fn(move |req| handle(app.clone(), req));
        let conn = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

async fn handle(
    app: Arc<OpsApp>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let response = match (req.method(), path) {
        (&Method::GET, "/metrics") => metrics(&app),
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (&Method::GET, "/readyz") => ready(&app).await,
        (_, "/metrics" | "/healthz" | "/readyz") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

fn metrics(app: &OpsApp) -> Response<Full<Bytes>> {
    match app.telemetry.encode() {
        Ok(body) => Response::builder()
            .header(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default(),
        Err(err) => {
            app.telemetry
                .error(crate::contract::ErrorKind::MetricsEncode, &err);
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n"))
        }
    }
}

async fn ready(app: &OpsApp) -> Response<Full<Bytes>> {
    let mut failures = Vec::new();
    for (name, probe) in &app.probes {
        match tokio::time::timeout(PROBE_TIMEOUT, probe()).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => failures.push(format!("{name}: {reason}")),
            Err(_) => failures.push(format!("{name}: no answer within {PROBE_TIMEOUT:?}")),
        }
    }
    let degraded: String = app
        .degraded
        .list()
        .iter()
        .map(|(name, reason)| format!("degraded: {name}: {reason}\n"))
        .collect();
    if failures.is_empty() {
        text(StatusCode::OK, format!("ready\n{degraded}"))
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            failures.join("\n") + "\n" + &degraded,
        )
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    async fn start(app: OpsApp) -> (String, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let token = CancellationToken::new();
        let task = tokio::spawn(serve(listener, app, token.clone()));
        (base, token, task)
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let telemetry = Telemetry::new("collector", "test").expect("telemetry");
        let healthy = Arc::new(AtomicBool::new(false));
        let flag = healthy.clone();
        let probe: Probe = Arc::new(move || {
            let ok = flag.load(Ordering::SeqCst);
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err("broker unreachable".into())
                }
            })
        });
        let degraded = Degraded::default();
        let (base, token, task) = start(
            OpsApp::new(telemetry)
                .probe("kafka", probe)
                .degraded(degraded.clone()),
        )
        .await;
        let client = reqwest::Client::new();

        let metrics = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("metrics");
        assert_eq!(
            metrics.headers()[header::CONTENT_TYPE],
            METRICS_CONTENT_TYPE
        );
        assert!(metrics
            .text()
            .await
            .expect("body")
            .contains("nghenhan_build_info"));

        assert_eq!(
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .expect("h")
                .status(),
            200
        );
        let not_ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("r");
        assert_eq!(not_ready.status(), 503);
        assert!(not_ready
            .text()
            .await
            .expect("body")
            .contains("kafka: broker unreachable"));
        healthy.store(true, Ordering::SeqCst);
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .expect("r")
                .status(),
            200
        );
        degraded.set("binance_rest", "banned (HTTP 418) for 120 s");
        let reduced = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("r");
        assert_eq!(reduced.status(), 200, "degraded is not down");
        assert_eq!(
            reduced.text().await.expect("body"),
            "ready\ndegraded: binance_rest: banned (HTTP 418) for 120 s\n"
        );
        assert_eq!(
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .expect("h")
                .status(),
            200
        );
        degraded.clear("binance_rest");
        assert_eq!(
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .expect("r")
                .text()
                .await
                .expect("b"),
            "ready\n"
        );
        assert_eq!(
            client
                .get(format!("{base}/nope"))
                .send()
                .await
                .expect("n")
                .status(),
            404
        );
        assert_eq!(
            client
                .post(format!("{base}/metrics"))
                .send()
                .await
                .expect("p")
                .status(),
            405
        );

        token.cancel();
        tokio::time::timeout(Duration::from_secs(6), task)
            .await
            .expect("stops")
            .expect("joins");
    }
}
