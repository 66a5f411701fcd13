//! The Docker source against a scripted Engine API server on a unix socket (no Docker
//! engine runs here): the server replays real event shapes (../shared/STACK.md: `die` with
//! `exitCode`, `execDuration` and compose labels, then `start`; `oom`; `health_status`),
//! breaks the event stream, and on the reconnect replays from `since` — events the watcher
//! already handled must not be counted twice.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use restart_watcher::docker::{self, Endpoint, Seen};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;
type Frames =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

fn streamed(frames: Frames) -> Body {
    use http_body_util::BodyExt;
    StreamBody::new(frames).boxed_unsync()
}

fn event(action: &str, service: &str, secs: i64, attrs: Value) -> Value {
    let mut a = json!({"com.docker.compose.service": service, "com.docker.compose.project": "nghenhan", "name": format!("nghenhan-{service}-1"), "image": "nghenhan/services:local"});
    a.as_object_mut()
        .expect("object")
        .extend(attrs.as_object().cloned().unwrap_or_default());
    json!({"status": action, "id": format!("id-{service}"), "from": "nghenhan/services:local", "Type": "container", "Action": action,
           "Actor": {"ID": format!("id-{service}"), "Attributes": a}, "scope": "local", "time": secs, "timeNano": secs * 1_000_000_000})
}

/// The script: the first stream sends two restarts of `collector` (a crash, an OOM kill),
/// then breaks; the second (asked with `since`) replays the last restart and adds one of
/// `sync-verifier` after it went unhealthy.
fn first_stream() -> Vec<Value> {
    vec![
        event(
            "die",
            "collector",
            100,
            json!({"exitCode": "1", "execDuration": "2"}),
        ),
        event("start", "collector", 101, json!({})),
        event("oom", "collector", 110, json!({})),
        event(
            "die",
            "collector",
            110,
            json!({"exitCode": "137", "execDuration": "9"}),
        ),
        event("start", "collector", 111, json!({})),
    ]
}

fn second_stream() -> Vec<Value> {
    vec![
        event("oom", "collector", 110, json!({})),
        event(
            "die",
            "collector",
            110,
            json!({"exitCode": "137", "execDuration": "9"}),
        ),
        event("start", "collector", 111, json!({})),
        event("health_status: unhealthy", "sync-verifier", 120, json!({})),
        event(
            "die",
            "sync-verifier",
            121,
            json!({"exitCode": "143", "execDuration": "30"}),
        ),
        event("start", "sync-verifier", 122, json!({})),
    ]
}

#[derive(Default)]
struct Server {
    event_requests: Mutex<Vec<String>>,
    /// Every request that reached the Engine: `METHOD path`.
    requests: Mutex<Vec<String>>,
}

async fn handle(server: Arc<Server>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    server
        .requests
        .lock()
        .expect("lock")
        .push(format!("{} {path}", req.method()));
    use http_body_util::BodyExt;
    let json_body = |v: Value| {
        Ok(Response::new(
            Full::new(Bytes::from(v.to_string())).boxed_unsync(),
        ))
    };
    match path.as_str() {
        "/_ping" => Ok(Response::new(Full::new(Bytes::from("OK")).boxed_unsync())),
        "/version" => {
            json_body(json!({"ApiVersion": "1.51", "MinAPIVersion": "1.24", "Version": "28.2.2"}))
        }
        "/v1.47/containers/json" => json_body(json!([
            {"Id": "id-collector", "Labels": {"com.docker.compose.service": "collector", "com.docker.compose.project": "nghenhan"}, "State": "running"},
            {"Id": "id-sync-verifier", "Labels": {"com.docker.compose.service": "sync-verifier", "com.docker.compose.project": "nghenhan"}, "State": "restarting"},
            {"Id": "id-kafka", "Labels": {"com.docker.compose.service": "kafka", "com.docker.compose.project": "nghenhan"}, "State": "running"}
        ])),
        p if p.starts_with("/v1.47/containers/") => {
            let restarting = p.contains("sync-verifier");
            json_body(
                json!({"RestartCount": 2, "State": {"Restarting": restarting, "ExitCode": 137, "OOMKilled": false, "StartedAt": "2026-11-26T10:00:00Z"}}),
            )
        }
        "/v1.47/events" => {
            let n = {
                let mut reqs = server.event_requests.lock().expect("lock");
                reqs.push(query);
                reqs.len()
            };
            let events = if n == 1 {
                first_stream()
            } else {
                second_stream()
            };
            // one object per line, split mid-object across frames as a real stream may be;
            // the first stream has a line that is not JSON in the middle (a proxy's noise):
            // the events after it must still arrive on this connection
            let mut lines: Vec<String> = events.iter().map(|e| e.to_string() + "\n").collect();
            if n == 1 {
                lines.insert(
                    lines.len() / 2,
                    "<html>502 Bad Gateway</html>\n".to_string(),
                );
            }
            let text: String = lines.concat();
            let (a, b) = text.split_at(text.len() / 2 + 7);
            let frames = vec![
                Ok(Frame::data(Bytes::from(a.to_string()))),
                Ok(Frame::data(Bytes::from(b.to_string()))),
            ];
            use futures::StreamExt;
            let frames: Frames = if n == 1 {
                Box::pin(futures::stream::iter(frames)) // the stream ends here: the watcher must reconnect
            } else {
                Box::pin(futures::stream::iter(frames).chain(futures::stream::pending()))
                // open, like Docker's
            };
            Ok(Response::new(streamed(frames)))
        }
        _ => Ok(Response::builder()
            .status(404)
            .body(Full::new(Bytes::from("{}")).boxed_unsync())
            .expect("404")),
    }
}

async fn serve(listener: UnixListener, server: Arc<Server>) {
    while let Ok((stream, _)) = listener.accept().await {
        let server = server.clone();
        let svc = hyper::service::service_fn(move |req| handle(server.clone(), req));
        tokio::spawn(
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc),
        );
    }
}

/// A scripted Engine on a fresh unix socket; (its folder, the socket, what it saw).
fn scripted_engine(name: &str) -> (std::path::PathBuf, std::path::PathBuf, Arc<Server>) {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    let server = Arc::new(Server::default());
    tokio::spawn(serve(
        UnixListener::bind(&socket).expect("bind"),
        server.clone(),
    ));
    (dir, socket, server)
}

#[tokio::test]
async fn restarts_causes_and_a_broken_event_stream() {
    let (_dir, socket, server) = scripted_engine("docker-api");
    let endpoint = Endpoint::Unix(socket.to_string_lossy().to_string());
    watch_the_script(endpoint, &server).await;
}

/// Runs the watcher against the script and checks all it must have seen.
async fn watch_the_script(endpoint: Endpoint, server: &Server) {
    let (mut rx, token, telemetry) = start_watch(endpoint, 64);

    // Read until the end of the script: the last event (sync-verifier's start) gives a
    // restart and then its inspection, `Restarting`. A replayed event counted twice would
    // arrive before it, since the replay comes first in the second stream.
    let finished = |seen: &[Seen]| {
        seen.iter()
            .filter(|s| matches!(s, Seen::Restart { .. }))
            .count()
            >= 3
            && matches!(seen.last(), Some(Seen::Restarting { service, .. }) if service == "sync-verifier")
    };
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !finished(&seen) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(s)) => seen.push(s),
            _ => panic!("watcher stopped early; saw {seen:?}"),
        }
    }
    token.cancel();

    let restarts: Vec<(String, String, Option<i64>, Option<i64>)> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Restart {
                service,
                reason,
                exit_code,
                run_ms,
                ..
            } => Some((service.clone(), reason.clone(), *exit_code, *run_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        restarts,
        vec![
            ("collector".into(), "crash".into(), Some(1), Some(2_000)),
            ("collector".into(), "oom".into(), Some(137), Some(9_000)),
            (
                "sync-verifier".into(),
                "unhealthy".into(),
                Some(143),
                Some(30_000)
            ),
        ],
        "each restart once, with its cause, across the reconnect"
    );
    assert!(
        seen.contains(&Seen::Restarting {
            service: "sync-verifier".into(),
            restarting: true
        }),
        "inspect: State.Restarting"
    );
    assert!(
        seen.contains(&Seen::Connected(false)),
        "the broken stream was noticed"
    );
    assert_eq!(
        seen.iter().filter(|s| **s == Seen::Connected(true)).count(),
        2,
        "and reconnected"
    );
    assert!(
        seen.contains(&Seen::Restarting {
            service: "kafka".into(),
            restarting: false
        }),
        "every container of the project is reported at connect, heartbeats or not"
    );
    zeroed_for_every_container_seen(&seen);
    let requests = server.event_requests.lock().expect("lock").clone();
    assert!(requests[0].contains("filters=") && !requests[0].contains("since="));
    assert!(
        requests[1].contains("since=111"),
        "reconnect resumes from the last event: {}",
        requests[1]
    );
    assert!(
        telemetry.error_count(kit::contract::ErrorKind::DockerEvents) >= 1,
        "the break is counted"
    );
}

/// An Engine whose event stream either delivers one event and ends (a healthy connection
/// that breaks) or answers 500: the times of the watcher's `/events` requests.
#[derive(Default)]
struct Reconnects {
    fail_events: bool,
    /// Every stream replays the same event (as `since` does) and ends: nothing new.
    same_event: bool,
    at: Mutex<Vec<std::time::Instant>>,
}

async fn reconnects(
    server: Arc<Reconnects>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    use http_body_util::BodyExt;
    let body = |status: u16, text: String| {
        Ok(Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(text)).boxed_unsync())
            .expect("response"))
    };
    match req.uri().path() {
        "/version" => body(200, json!({"ApiVersion": "1.47"}).to_string()),
        "/v1.47/containers/json" => body(200, "[]".into()),
        "/v1.47/events" => {
            let n = {
                let mut at = server.at.lock().expect("lock");
                at.push(std::time::Instant::now());
                at.len()
            };
            if server.fail_events {
                return body(500, "{}".into());
            }
            let n = if server.same_event { 1 } else { n };
            let secs = 1_700_000_000 + i64::try_from(n).expect("small");
            body(
                200,
                event("health_status: healthy", "collector", secs, json!({})).to_string() + "\n",
            )
        }
        p if p.starts_with("/v1.47/containers/") => {
            body(200, json!({"State": {"Restarting": false}}).to_string())
        }
        _ => body(404, "{}".into()),
    }
}

/// The Docker source on `endpoint` for the project `nghenhan`, reporting into a channel of
/// `capacity`: (what it reports, its stop, its telemetry).
fn start_watch(
    endpoint: Endpoint,
    capacity: usize,
) -> (mpsc::Receiver<Seen>, CancellationToken, kit::Telemetry) {
    let (tx, rx) = mpsc::channel(capacity);
    let token = CancellationToken::new();
    let telemetry = kit::Telemetry::new("restart-watcher", "test").expect("telemetry");
    let watch = docker::watch(
        endpoint,
        "nghenhan".into(),
        tx,
        telemetry.clone(),
        token.clone(),
    );
    tokio::spawn(watch);
    (rx, token, telemetry)
}

/// A scripted Engine on a fresh unix socket in a folder named `name`, answering with
/// `handle(state, request)`; (the folder, an endpoint to it, the accept task).
fn engine_with<S, F, Fut>(
    name: &str,
    state: Arc<S>,
    handle: F,
) -> (std::path::PathBuf, Endpoint, tokio::task::JoinHandle<()>)
where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("bind");
    let accept = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (
        dir,
        Endpoint::Unix(socket.to_string_lossy().to_string()),
        accept,
    )
}

/// The gaps between the watcher's first `count` event-stream requests.
async fn reconnect_gaps(fail_events: bool, same_event: bool, count: usize) -> Vec<Duration> {
    let server = Arc::new(Reconnects {
        fail_events,
        same_event,
        ..Default::default()
    });
    let name = format!("docker-reconnects-{fail_events}-{same_event}");
    let (dir, endpoint, accept) = engine_with(&name, server.clone(), reconnects);
    let (mut rx, token, _) = start_watch(endpoint, 1024);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while server.at.lock().expect("lock").len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher stopped reconnecting"
        );
        tokio::select! {
            _ = rx.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    token.cancel();
    accept.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let at = server.at.lock().expect("lock").clone();
    at.windows(2).map(|w| w[1] - w[0]).take(count - 1).collect()
}

#[tokio::test]
async fn the_reconnect_delay_starts_over_after_a_healthy_stream_and_grows_while_it_fails() {
    let healthy = reconnect_gaps(false, false, 6).await;
    assert!(
        healthy
            .iter()
            // without the reset: 0.5, 1, 2, 4 and 8 s; 1.5 s leaves a loaded machine room
            .all(|gap| *gap < docker::RECONNECT_FIRST * 3),
        "each stream delivered an event, so each reconnect waits the first delay: {healthy:?}"
    );
    let failing = reconnect_gaps(true, false, 4).await;
    assert!(
        failing[2] >= docker::RECONNECT_FIRST * 4 - Duration::from_millis(50),
        "a failing stream backs off, 0.5 s doubling: {failing:?}"
    );
    let replaying = reconnect_gaps(false, true, 4).await;
    assert!(
        replaying[2] >= docker::RECONNECT_FIRST * 4 - Duration::from_millis(50),
        "a stream that only replays what was handled is no healthy stream: {replaying:?}"
    );
}

/// The Engine requests restart-watcher makes, the only ones the proxy may pass: GET (or
/// HEAD) of /_ping, /version, /events, /containers/json, /containers/<id>/json, with or
/// without an API version prefix.
fn allowed(request: &str) -> bool {
    let Some(path) = request
        .strip_prefix("GET ")
        .or_else(|| request.strip_prefix("HEAD "))
    else {
        return false;
    };
    let versioned = path
        .strip_prefix("/v")
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()));
    let path = match versioned {
        Some(rest) => match rest.split_once('/') {
            Some((v, tail))
                if v.split('.')
                    .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                format!("/{tail}")
            }
            _ => return false,
        },
        None => path.to_string(),
    };
    match path.as_str() {
        "/_ping" | "/version" | "/events" | "/containers/json" => true,
        p => p
            .strip_prefix("/containers/")
            .and_then(|p| p.strip_suffix("/json"))
            .is_some_and(|id| !id.is_empty() && !id.contains('/') && !id.starts_with('.')),
    }
}

/// One raw HTTP/1.1 request (paths exactly as written, no client normalising them);
/// the response's status code.
async fn raw_status(port: u16, method: &str, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the proxy");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker-proxy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.expect("status line");
    let line = String::from_utf8_lossy(&head).to_string();
    line[9..12]
        .parse()
        .unwrap_or_else(|_| panic!("status line {line:?}"))
}

/// deploy/docker-proxy/Caddyfile, the Compose stack's Docker API proxy, run natively with
/// the real Caddy in front of the scripted Engine: restart-watcher does all its work through
/// it (the event stream included), and no other request reaches the Engine.
#[tokio::test]
#[ignore = "needs Caddy in .cache/bin (deploy/native/stack.sh install builds it)"]
async fn the_docker_api_proxy_passes_the_watchers_reads_and_nothing_else() {
    let (dir, socket, server) = scripted_engine("docker-proxy");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cache = std::env::var("NGH_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".cache"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut caddy = tokio::process::Command::new(cache.join("bin/caddy"))
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(root.join("deploy/docker-proxy/Caddyfile"))
        .env("DOCKER_SOCKET", &socket)
        .env("DOCKER_PROXY_PORT", port.to_string())
        .env("XDG_DATA_HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("caddy.log")).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("caddy in .cache/bin");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok();
        if ok && raw_status(port, "GET", "/_ping").await == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy did not answer /_ping in 30 s"
        );
        assert!(caddy.try_wait().expect("caddy").is_none(), "caddy exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    watch_the_script(Endpoint::Tcp(format!("127.0.0.1:{port}")), &server).await;

    let hostile = [
        (
            "GET",
            "/v1.47/containers/id-collector/archive?path=/run/secrets",
        ),
        (
            "HEAD",
            "/v1.47/containers/id-collector/archive?path=/run/secrets",
        ),
        ("GET", "/containers/id-collector/export"),
        ("GET", "/v1.47/containers/id-collector/logs?stdout=1"),
        ("GET", "/v1.47/containers/id-collector/json/../archive"),
        ("GET", "/v1.47/containers/id-collector/json/..%2farchive"),
        ("GET", "/v1.47/containers/..%2f..%2finfo/json"),
        ("GET", "/v1.47/info"),
        ("GET", "/v1.47/secrets"),
        ("GET", "/v1.47/exec/abc/json"),
        ("POST", "/v1.47/containers/id-collector/kill"),
        ("POST", "/v1.47/containers/create"),
        ("POST", "/v1.47/containers/id-collector/json"),
        ("DELETE", "/v1.47/containers/id-collector"),
        ("PUT", "/v1.47/containers/id-collector/archive?path=/"),
    ];
    for (method, path) in hostile {
        let status = raw_status(port, method, path).await;
        assert_eq!(status, 403, "{method} {path} must be refused by the proxy");
    }
    assert_eq!(
        raw_status(port, "GET", "/v1.47/containers/id-collector/json").await,
        200,
        "an inspect still passes after the refusals"
    );
    let reached = server.requests.lock().expect("lock").clone();
    let leaked: Vec<&String> = reached.iter().filter(|r| !allowed(r)).collect();
    assert!(
        leaked.is_empty(),
        "reached the Engine through the proxy: {leaked:?}"
    );
    assert!(
        reached.iter().any(|r| r.ends_with("/events")),
        "the event stream went through the proxy: {reached:?}"
    );
    let _ = caddy.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_allow_list_model_is_itself_strict() {
    for ok in [
        "GET /_ping",
        "GET /version",
        "GET /v1.47/events",
        "HEAD /v1.51/containers/json",
        "GET /v1.47/containers/abc123/json",
    ] {
        assert!(allowed(ok), "{ok}");
    }
    for bad in [
        "POST /v1.47/containers/abc/json",
        "GET /v1.47/containers/abc/archive",
        "GET /v1.47/containers/../json",
        "GET /vx/containers/json",
        "GET /v1.47/info",
        "GET /v1.47/containers/a/b/json",
    ] {
        assert!(!allowed(bad), "{bad}");
    }
}

/// What the Docker source saw, through the watcher's state into the exposition: kafka
/// (no heartbeat, no restart) has every restart reason and its back-off gauge at 0, and the
/// collector's restarts have the other reasons at 0 beside them.
fn zeroed_for_every_container_seen(seen: &[Seen]) {
    use restart_watcher::loops::LoopRules;
    use restart_watcher::metrics::{reasons, WatchMetrics};
    use restart_watcher::tracker::Tracker;
    use restart_watcher::watch::Watch;
    let registry = prometheus::Registry::new();
    let metrics = WatchMetrics::register(&registry, &[]).expect("metrics");
    let mut watch = Watch::new(
        Tracker::new(vec![], 5_000, 0),
        LoopRules::default(),
        metrics,
    );
    for s in seen {
        watch.docker(s.clone());
    }
    watch.refresh(200_000);
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encodes");
    for reason in reasons::ALL {
        let line = format!(r#"service_restarts_total{{reason="{reason}",service="kafka"}} 0"#);
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert!(
        text.contains(r#"service_backoff_restarting{service="kafka"} 0"#),
        "{text}"
    );
    assert!(text.contains(r#"service_restarts_total{reason="crash",service="collector"} 1"#));
    assert!(text.contains(r#"service_restarts_total{reason="killed",service="collector"} 0"#));
    assert!(
        text.contains(r#"service_backoff_restarting{service="sync-verifier"} 1"#),
        "sync-verifier is in Docker's restart delay: {text}"
    );
}

/// A three-hour scripted stream: a restart of `collector` at the start, then a health event
/// of `sync-verifier` every 10 s; it ends. The reconnect (from `since`) replays the last
/// three health events, then the opening restart again (older than any replay can reach),
/// then a `start` of `kafka` that ends the script.
const LONG_EVENTS: i64 = 1_080;
const LONG_T0: i64 = 1_700_000_000;

fn long_first_stream() -> Vec<Value> {
    let mut events = vec![
        event(
            "die",
            "collector",
            LONG_T0,
            json!({"exitCode": "1", "execDuration": "5"}),
        ),
        event("start", "collector", LONG_T0 + 1, json!({})),
    ];
    events.extend((1..=LONG_EVENTS).map(|i| {
        event(
            "health_status: healthy",
            "sync-verifier",
            LONG_T0 + 10 * i,
            json!({}),
        )
    }));
    events
}

fn long_second_stream() -> Vec<Value> {
    let first = long_first_stream();
    let mut events = first[first.len() - 3..].to_vec();
    events.extend_from_slice(&first[..2]);
    events.push(event(
        "start",
        "kafka",
        LONG_T0 + 10 * LONG_EVENTS + 5,
        json!({}),
    ));
    events
}

async fn long_script(
    streams: Arc<Mutex<Vec<String>>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    use futures::StreamExt;
    use http_body_util::BodyExt;
    let body = |text: String| Response::new(Full::new(Bytes::from(text)).boxed_unsync());
    Ok(match req.uri().path() {
        "/version" => body(json!({"ApiVersion": "1.47"}).to_string()),
        "/v1.47/containers/json" => body("[]".into()),
        "/v1.47/events" => {
            let n = {
                let mut queries = streams.lock().expect("lock");
                queries.push(req.uri().query().unwrap_or_default().to_string());
                queries.len()
            };
            let events = if n == 1 {
                long_first_stream()
            } else {
                long_second_stream()
            };
            let lines = events
                .iter()
                .map(|e| Ok(Frame::data(Bytes::from(e.to_string() + "\n"))));
            let frames: Frames = match n {
                1 => Box::pin(futures::stream::iter(lines.collect::<Vec<_>>())),
                _ => Box::pin(
                    futures::stream::iter(lines.collect::<Vec<_>>())
                        .chain(futures::stream::pending()),
                ),
            };
            Response::new(streamed(frames))
        }
        _ => body(json!({"State": {"Restarting": false}}).to_string()),
    })
}

#[tokio::test]
async fn over_a_long_stream_only_what_a_reconnect_can_replay_is_remembered() {
    let streams = Arc::new(Mutex::new(Vec::new()));
    let (dir, endpoint, accept) = engine_with("docker-long", streams.clone(), long_script);
    let (mut rx, token, _) = start_watch(endpoint, 1024);

    // every handled event of a project container is inspected and reported (`Restarting`)
    let (mut health, mut restarts) = (0_i64, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Seen::Restarting { service, .. })) if service == "sync-verifier" => health += 1,
            Ok(Some(Seen::Restart { .. })) => restarts += 1,
            Ok(Some(Seen::Started { service, .. })) if service == "kafka" => break,
            Ok(Some(_)) => {}
            _ => panic!("the script did not end: {health} health events, {restarts} restarts"),
        }
    }
    token.cancel();
    accept.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let queries = streams.lock().expect("lock").clone();
    assert!(
        queries[1].contains(&format!("since={}", LONG_T0 + 10 * LONG_EVENTS)),
        "the reconnect resumes from the last event: {queries:?}"
    );
    assert_eq!(
        health, LONG_EVENTS,
        "the replayed last three events were recognised, so the recent ones are remembered"
    );
    assert_eq!(
        restarts,
        2,
        "the opening restart, three hours before the reconnect point, was no longer \
         remembered: memory holds only what a reconnect can replay ({} ms)",
        docker::REPLAY_MARGIN_MS
    );
}
