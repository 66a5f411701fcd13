//! Docker Engine API, read-only, over the unix socket or a socket proxy (`tcp://host:port`):
//! negotiates the API version, lists the compose project's containers, streams `/events`
//! (die, start, oom, health_status) and inspects containers for `RestartCount`,
//! `State.Restarting`, the exit code and `OOMKilled`. A broken event stream is reopened
//! with `since` = the last event's time, and events already handled are skipped, so nothing
//! is lost or counted twice.
//!
//! Numbers in events are not trusted: times, exit codes, durations and restart counts that
//! are missing, negative or out of range are clamped or dropped (and logged), never
//! overflowed; a bad `time` never moves the reconnect point (`since`) backwards.
//!
//! The set of handled events only keeps what a reconnect can replay (events from a minute
//! before the reconnect point on), so it stays bounded however long the stream runs. The
//! reconnect back-off (kit::retry, 0.5 s doubling to 30 s) starts over after a healthy
//! connection (its stream delivered an event, or stayed open 10 s). Each request's connection is driven beside it, in the
//! same task: nothing is spawned here.
//!
//! Why not `bollard` (measured, bollard 0.21.1): its event stream decodes with
//! tokio-util's FramedRead and a JSON-lines decoder, and FramedRead ends the stream at the
//! first decode error. Four events with a line that is not JSON after the second gave two
//! events and the end of the stream; the two after the garbage were lost to that
//! connection (a reconnect from `since` would replay them, and the garbage with them if a
//! proxy keeps sending it). It also buffers an unterminated line without a bound, and its
//! `EventMessage` drops the top-level `id` this code keys events on. The splitter here
//! skips a bad line, keeps the events after it, and caps an event at [`MAX_EVENT_BYTES`]
//! (tests: `a_line_that_is_not_json_does_not_hold_back_the_events_after_it`, the
//! scripted Engine API in tests/docker_api.rs, the `docker_events` fuzz target).

use crate::metrics::reasons;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use kit::retry::Backoff;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The newest API version this client speaks.
pub const MAX_API: &str = "1.47";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("DOCKER_HOST {0:?}: use unix:///path or tcp://host:port")]
    BadHost(String),
    #[error("connecting to the Docker Engine: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("{path}: HTTP {status}")]
    Status { path: String, status: u16 },
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// Where the Engine API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(String),
    Tcp(String),
}

impl Endpoint {
    pub fn parse(host: &str) -> Result<Self, DockerError> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(path.to_string()));
        }
        match host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            Some(addr) if !addr.is_empty() => {
                Ok(Endpoint::Tcp(addr.trim_end_matches('/').to_string()))
            }
            _ => Err(DockerError::BadHost(host.to_string())),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Docker {
    endpoint: Endpoint,
    prefix: String,
}

/// The smaller of two `major.minor` versions.
pub fn min_version(a: &str, b: &str) -> String {
    let parse = |v: &str| -> (u32, u32) {
        let (ma, mi) = v.split_once('.').unwrap_or((v, "0"));
        (ma.parse().unwrap_or(0), mi.parse().unwrap_or(0))
    };
    if parse(a) <= parse(b) {
        a.to_string()
    } else {
        b.to_string()
    }
}

impl Docker {
    /// Connects and negotiates the API version (`GET /version`).
    pub async fn negotiate(endpoint: Endpoint) -> Result<Self, DockerError> {
        let mut d = Self {
            endpoint,
            prefix: String::new(),
        };
        let version = d.get_json("/version").await?;
        let server = version["ApiVersion"].as_str().unwrap_or(MAX_API);
        d.prefix = format!("/v{}", min_version(server, MAX_API));
        Ok(d)
    }

    pub fn api_prefix(&self) -> &str {
        &self.prefix
    }

    /// GET `path` on a new connection, and `read` the response, driving the connection
    /// beside it in this task (hyper's connection future must be polled while the response
    /// is read; it ends with the request).
    async fn request<T, F, Fut>(&self, path: &str, read: F) -> Result<T, DockerError>
    where
        F: FnOnce(http::Response<hyper::body::Incoming>) -> Fut,
        Fut: std::future::Future<Output = Result<T, DockerError>>,
    {
        let io: Box<dyn Io> = match &self.endpoint {
            Endpoint::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            Endpoint::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await?),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let uri = format!("{}{path}", self.prefix);
        let req = http::Request::get(&uri)
            .header(http::header::HOST, "docker")
            .body(Empty::<Bytes>::new())?;
        let exchange = async move {
            let response = sender.send_request(req).await?;
            if !response.status().is_success() {
                return Err(DockerError::Status {
                    path: uri,
                    status: response.status().as_u16(),
                });
            }
            read(response).await
        };
        tokio::pin!(conn, exchange);
        // The exchange first: a connection that breaks after a complete response must not
        // turn it into an error. Once the connection has ended, the exchange ends by itself.
        tokio::select! {
            biased;
            result = &mut exchange => result,
            _ = &mut conn => exchange.await,
        }
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, DockerError> {
        self.request(path, |response| async move {
            let body = response.into_body().collect().await?.to_bytes();
            Ok(serde_json::from_slice(&body)?)
        })
        .await
    }

    /// Containers of the compose `project` (all states).
    pub async fn containers(&self, project: &str) -> Result<Vec<Value>, DockerError> {
        let filters = urlencode(&format!(
            r#"{{"label":["com.docker.compose.project={project}"]}}"#
        ));
        let list = self
            .get_json(&format!("/containers/json?all=1&filters={filters}"))
            .await?;
        Ok(list.as_array().cloned().unwrap_or_default())
    }

    pub async fn inspect(&self, id: &str) -> Result<Value, DockerError> {
        self.get_json(&format!("/containers/{id}/json")).await
    }

    /// Streams container events from `since` (Unix seconds) into `tx` until the stream ends.
    pub async fn events(
        &self,
        project: &str,
        since: Option<i64>,
        tx: &mpsc::Sender<Value>,
    ) -> Result<(), DockerError> {
        let filters = urlencode(&format!(
            r#"{{"type":["container"],"event":["die","start","oom","health_status"],"label":["com.docker.compose.project={project}"]}}"#
        ));
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        let path = format!("/events?filters={filters}{since}");
        self.request(&path, |response| async move {
            let mut body = response.into_body().into_data_stream();
            let mut buffer = Vec::new();
            while let Some(chunk) = body.next().await {
                buffer.extend_from_slice(&chunk?);
                for event in split_objects(&mut buffer) {
                    if tx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The longest incomplete event kept while waiting for the rest of it (real ones are
/// about 1 KiB).
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Takes every complete JSON object off the front of `buffer` (events arrive as a stream
/// of objects, usually one per line, possibly split across chunks). A line that is not
/// JSON is skipped (logged), so it cannot hold back the events after it; an incomplete
/// event longer than [`MAX_EVENT_BYTES`] is discarded, so the buffer stays bounded.
pub fn split_objects(buffer: &mut Vec<u8>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let mut stream =
            serde_json::Deserializer::from_slice(&buffer[start..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(v)) => {
                start += stream.byte_offset();
                out.push(v);
            }
            Some(Err(err)) if !err.is_eof() => {
                tracing::warn!(error = %err, "docker event stream: skipping a line that is not JSON");
                start = end_of_line(buffer, start);
            }
            _ => break, // only whitespace left, or an event not complete yet
        }
    }
    buffer.drain(..start);
    if buffer.len() > MAX_EVENT_BYTES {
        tracing::warn!(
            bytes = buffer.len(),
            "docker event stream: discarding an event longer than the limit"
        );
        buffer.clear();
    }
    out
}

/// The index just past the next newline at or after `from`, or the end of `buffer`.
fn end_of_line(buffer: &[u8], from: usize) -> usize {
    buffer[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(buffer.len(), |i| from + i + 1)
}

/// What the watcher learned from Docker.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// A restart by the restart policy (or a manual start after a die).
    Restart {
        service: String,
        at_ms: i64,
        exit_code: Option<i64>,
        reason: String,
        restart_count: u64,
        run_ms: Option<i64>,
    },
    /// A start that follows no die this watcher saw (the container's first start, or one
    /// whose die came before the event stream connected): not a restart, but the start
    /// time a back-off loop needs to tell when the container has stayed up.
    Started { service: String, at_ms: i64 },
    /// `State.Restarting` of the service's container (sent for every container of the
    /// project when the stream connects, and with every event's inspection).
    Restarting { service: String, restarting: bool },
    /// The event stream is connected (true) or broken (false).
    Connected(bool),
}

/// Turns Docker events (with inspections) into [`Seen`] facts; remembers dies, OOM kills
/// and health per service until the next start.
#[derive(Debug, Default)]
pub struct Interpreter {
    pending_die: HashMap<String, (Option<i64>, Option<i64>)>,
    oom: HashSet<String>,
    unhealthy: HashSet<String>,
    /// Events handled, by (time in ms, key): only those a reconnect can replay are kept.
    handled: BTreeSet<(i64, String)>,
    pub last_time: Option<i64>,
}

/// How far before the reconnect point (`since`, whole seconds) handled events are kept:
/// a reconnect replays from `since`, never earlier, so older ones cannot come again.
pub const REPLAY_MARGIN_MS: i64 = 60_000;

/// An event's identity among those handled: its time, container and action.
fn handled_key(event: &Value) -> (i64, String) {
    let key = format!("{}/{}/{}", event["timeNano"], event["id"], event["Action"]);
    (event_ms(event), key)
}

fn service_of(event: &Value) -> Option<String> {
    event["Actor"]["Attributes"]["com.docker.compose.service"]
        .as_str()
        .map(String::from)
}

/// The event's time in Unix ms: `timeNano`, else `time` (seconds), clamped to
/// `0..=i64::MAX`; 0 (logged) when neither is a number.
pub fn event_ms(event: &Value) -> i64 {
    let nano = &event["timeNano"];
    let from_nano = nano
        .as_i64()
        .or_else(|| nano.as_u64().map(|_| i64::MAX))
        .map(|n| n / 1_000_000);
    let from_secs = || event["time"].as_i64().map(|s| s.saturating_mul(1000));
    match from_nano.or_else(from_secs) {
        Some(ms) if ms >= 0 => ms,
        other => {
            tracing::warn!(time = %event["time"], time_nano = %nano, "docker event without a usable time; taken as 0");
            other.map_or(0, |ms| ms.max(0))
        }
    }
}

/// The event's `time` (Unix seconds) if it can be a `since`: a non-negative integer.
fn since_secs(event: &Value) -> Option<i64> {
    let time = &event["time"];
    match time.as_i64() {
        Some(s) if s >= 0 => Some(s),
        _ if time.is_null() => None,
        _ => {
            tracing::warn!(%time, "docker event time ignored: not a non-negative integer");
            None
        }
    }
}

/// A die event's `exitCode` attribute (a decimal string), if it is an integer.
fn exit_code(attrs: &Value) -> Option<i64> {
    let raw = attrs["exitCode"].as_str()?;
    let code = raw.parse().ok();
    if code.is_none() {
        tracing::warn!(exit_code = %raw.chars().take(40).collect::<String>(), "docker exit code ignored: not an integer");
    }
    code
}

/// A die event's `execDuration` attribute (whole seconds) in ms, clamped to `0..=i64::MAX`.
fn run_ms(attrs: &Value) -> Option<i64> {
    let raw = attrs["execDuration"].as_str()?;
    let Ok(secs) = raw.parse::<i64>() else {
        tracing::warn!(exec_duration = %raw.chars().take(40).collect::<String>(), "docker run time ignored: not an integer");
        return None;
    };
    Some(secs.max(0).saturating_mul(1000))
}

/// The cause of a restart from what preceded it (one of [`reasons::ALL`]).
pub fn reason(oom: bool, unhealthy: bool, exit_code: Option<i64>) -> &'static str {
    match (oom, unhealthy, exit_code) {
        (true, _, _) => reasons::OOM,
        (_, true, _) => reasons::UNHEALTHY,
        (_, _, Some(137 | 143)) => reasons::KILLED,
        (_, _, Some(0)) | (_, _, None) => reasons::UNKNOWN,
        _ => reasons::CRASH,
    }
}

impl Interpreter {
    /// Drops handled events older than a reconnect could replay.
    fn forget_unreplayable(&mut self) {
        let Some(since) = self.last_time else { return };
        let cutoff = since.saturating_mul(1000).saturating_sub(REPLAY_MARGIN_MS);
        if self.handled.first().is_some_and(|(ms, _)| *ms < cutoff) {
            self.handled = self.handled.split_off(&(cutoff, String::new()));
        }
    }

    /// Whether `event` was handled already (a reconnect's replay).
    pub fn is_replay(&self, event: &Value) -> bool {
        self.handled.contains(&handled_key(event))
    }

    /// How many handled events are remembered (bounded by [`REPLAY_MARGIN_MS`]).
    pub fn remembered(&self) -> usize {
        self.handled.len()
    }

    /// Handles one event; `inspect` is the container's inspection when it was taken.
    pub fn event(&mut self, event: &Value, inspect: Option<&Value>) -> Vec<Seen> {
        if !self.handled.insert(handled_key(event)) {
            return Vec::new(); // replayed after a reconnect
        }
        if let Some(t) = since_secs(event) {
            self.last_time = Some(self.last_time.map_or(t, |last| last.max(t)));
        }
        self.forget_unreplayable();
        let Some(service) = service_of(event) else {
            return Vec::new();
        };
        let attrs = &event["Actor"]["Attributes"];
        let action = event["Action"].as_str().unwrap_or_default();
        let restarting = inspect.and_then(|i| i["State"]["Restarting"].as_bool());
        let mut out = Vec::new();
        match action {
            "die" => {
                let (exit, run_ms) = (exit_code(attrs), run_ms(attrs));
                if inspect.and_then(|i| i["State"]["OOMKilled"].as_bool()) == Some(true) {
                    self.oom.insert(service.clone());
                }
                self.pending_die.insert(service.clone(), (exit, run_ms));
            }
            "oom" => {
                self.oom.insert(service.clone());
            }
            "start" => {
                if let Some((exit_code, run_ms)) = self.pending_die.remove(&service) {
                    let why = reason(
                        self.oom.remove(&service),
                        self.unhealthy.remove(&service),
                        exit_code,
                    );
                    let restart_count = inspect
                        .and_then(|i| i["RestartCount"].as_u64())
                        .unwrap_or(0);
                    let at_ms = event_ms(event);
                    out.push(Seen::Restart {
                        service: service.clone(),
                        at_ms,
                        exit_code,
                        reason: why.into(),
                        restart_count,
                        run_ms,
                    });
                } else {
                    out.push(Seen::Started {
                        service: service.clone(),
                        at_ms: event_ms(event),
                    });
                }
            }
            a if a.starts_with("health_status") => {
                if a.ends_with("unhealthy") {
                    self.unhealthy.insert(service.clone());
                } else if a.ends_with("healthy") {
                    self.unhealthy.remove(&service);
                }
            }
            _ => {}
        }
        if let Some(r) = restarting {
            out.push(Seen::Restarting {
                service,
                restarting: r,
            });
        }
        out
    }
}

/// Follows the project's containers until `shutdown`, reconnecting the event stream with
/// back-off; sends what it learns to `out`.
pub async fn watch(
    endpoint: Endpoint,
    project: String,
    out: mpsc::Sender<Seen>,
    telemetry: kit::Telemetry,
    shutdown: CancellationToken,
) {
    let mut interpreter = Interpreter::default();
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_CAP);
    loop {
        let followed = follow(
            &endpoint,
            &project,
            &mut interpreter,
            &out,
            &shutdown,
            &mut backoff,
        );
        match followed.await {
            Ok(()) if shutdown.is_cancelled() => return,
            Ok(()) => telemetry.error(
                kit::contract::ErrorKind::DockerEvents,
                &"event stream ended",
            ),
            Err(err) => telemetry.error(kit::contract::ErrorKind::DockerEvents, &err),
        }
        let _ = out.send(Seen::Connected(false)).await;
        if !kit::retry::sleep(&shutdown, backoff.next_delay()).await {
            return;
        }
    }
}

/// The reconnect back-off: from 0.5 s, doubling to 30 s; back to 0.5 s after a healthy
/// connection (its stream delivered an event, or stayed open [`HEALTHY_AFTER`]), as
/// Docker's restart policy resets after 10 s up.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(500);
pub const RECONNECT_CAP: Duration = Duration::from_secs(30);
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);

async fn follow(
    endpoint: &Endpoint,
    project: &str,
    it: &mut Interpreter,
    out: &mpsc::Sender<Seen>,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), DockerError> {
    let docker = Docker::negotiate(endpoint.clone()).await?;
    for c in docker.containers(project).await? {
        let id = c["Id"].as_str().unwrap_or_default();
        let inspect = docker.inspect(id).await?;
        if let Some(service) = c["Labels"]["com.docker.compose.service"].as_str() {
            let restarting = inspect["State"]["Restarting"].as_bool().unwrap_or(false);
            let _ = out
                .send(Seen::Restarting {
                    service: service.to_string(),
                    restarting,
                })
                .await;
        }
    }
    let _ = out.send(Seen::Connected(true)).await;
    let (tx, mut rx) = mpsc::channel(256);
    let opened = tokio::time::Instant::now();
    let since = it.last_time;
    let stream = docker.events(project, since, &tx);
    tokio::pin!(stream);
    let mut delivered = false;
    let ended = loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            ended = &mut stream => break ended,
            Some(event) = rx.recv() => delivered |= handle(&docker, it, &event, out).await,
        }
    };
    // The stream is gone; events it delivered before that are still queued.
    while let Ok(event) = rx.try_recv() {
        delivered |= handle(&docker, it, &event, out).await;
    }
    // A healthy connection (it delivered a new event, or it stayed open): the next failure
    // waits the first delay again. Replays do not count: a reconnect always replays the
    // events of its `since` second, so a stream that dies right after them would otherwise
    // be reconnected every 0.5 s forever.
    if delivered || opened.elapsed() >= HEALTHY_AFTER {
        backoff.reset();
    }
    ended
}

/// Handles one event; false if it was a replay of one already handled (nothing done).
async fn handle(
    docker: &Docker,
    it: &mut Interpreter,
    event: &Value,
    out: &mpsc::Sender<Seen>,
) -> bool {
    if it.is_replay(event) {
        return false;
    }
    let inspect = match event["id"].as_str() {
        Some(id) => docker.inspect(id).await.ok(),
        None => None,
    };
    for seen in it.event(event, inspect.as_ref()) {
        let _ = out.send(seen).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(action: &str, service: &str, nano: i64, attrs: Value) -> Value {
        let mut a = json!({"com.docker.compose.service": service, "com.docker.compose.project": "nghenhan"});
        a.as_object_mut()
            .expect("object")
            .extend(attrs.as_object().cloned().unwrap_or_default());
        json!({"Type": "container", "Action": action, "status": action, "id": format!("c-{service}"), "time": nano / 1_000_000_000, "timeNano": nano, "Actor": {"ID": format!("c-{service}"), "Attributes": a}})
    }

    #[test]
    fn endpoints_and_versions() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock").expect("unix"),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://docker-proxy:2375").expect("tcp"),
            Endpoint::Tcp("docker-proxy:2375".into())
        );
        assert!(Endpoint::parse("ftp://x").is_err());
        assert_eq!(min_version("1.51", MAX_API), MAX_API);
        assert_eq!(min_version("1.41", MAX_API), "1.41");
    }

    #[test]
    fn the_handled_set_stays_bounded_over_a_long_stream_and_still_skips_replays() {
        let mut it = Interpreter::default();
        let step = 100_000_000; // an event every 0.1 s, for three hours
        let events: Vec<Value> = (0..108_000)
            .map(|i| {
                ev(
                    "health_status: healthy",
                    "collector",
                    1_700_000_000_000_000_000 + i * step,
                    json!({}),
                )
            })
            .collect();
        let mut most = 0;
        for e in &events {
            it.event(e, None);
            most = most.max(it.remembered());
        }
        let window = usize::try_from((REPLAY_MARGIN_MS + 1_000) * 1_000_000 / step).expect("small");
        assert!(
            most <= window + 1,
            "remembered {most} events, more than a replay can need ({window})"
        );
        // a reconnect replays from `since` (whole seconds): those are still recognised
        let replay = &events[events.len() - 25..];
        let again: usize = replay
            .iter()
            .map(|e| {
                it.event(e, Some(&json!({"State": {"Restarting": false}})))
                    .len()
            })
            .sum();
        assert_eq!(again, 0, "a replayed event was handled twice");
    }

    #[test]
    fn objects_are_split_across_chunks() {
        let mut buf = br#"{"a":1}
{"b":2}{"c":"#
            .to_vec();
        assert_eq!(
            split_objects(&mut buf),
            vec![json!({"a":1}), json!({"b":2})]
        );
        buf.extend_from_slice(b"3}\n");
        assert_eq!(split_objects(&mut buf), vec![json!({"c":3})]);
        assert!(split_objects(&mut buf).is_empty());
    }

    #[test]
    fn a_line_that_is_not_json_does_not_hold_back_the_events_after_it() {
        let mut buf = b"{\"a\":1}\nnot json at all\n{\"b\":2}\n]]]{\"c\":".to_vec();
        assert_eq!(
            split_objects(&mut buf),
            vec![json!({"a":1}), json!({"b":2})]
        );
        assert!(
            buf.is_empty(),
            "the unterminated garbage line is dropped: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(b"more garbage\"}\n{\"d\":4}\n");
        assert_eq!(
            split_objects(&mut buf),
            vec![json!({"d":4})],
            "the rest of the garbage line is skipped too"
        );
    }

    #[test]
    fn an_endless_event_is_discarded_at_the_limit() {
        let mut buf = br#"{"a":""#.to_vec();
        buf.extend(std::iter::repeat_n(b'x', MAX_EVENT_BYTES));
        assert!(split_objects(&mut buf).is_empty());
        assert!(buf.is_empty(), "the buffer must stay bounded");
    }

    #[test]
    fn hostile_times_exit_codes_and_durations_are_clamped() {
        assert_eq!(
            event_ms(&json!({"timeNano": i64::MAX})),
            i64::MAX / 1_000_000
        );
        assert_eq!(
            event_ms(&json!({"timeNano": u64::MAX})),
            i64::MAX / 1_000_000
        );
        assert_eq!(event_ms(&json!({"timeNano": i64::MIN})), 0);
        assert_eq!(
            event_ms(&json!({"timeNano": "soon", "time": i64::MAX})),
            i64::MAX,
            "seconds × 1000 saturates"
        );
        assert_eq!(event_ms(&json!({"time": i64::MIN})), 0);
        assert_eq!(event_ms(&json!({"time": 1.5e300})), 0);
        let attrs =
            json!({"exitCode": "99999999999999999999", "execDuration": i64::MAX.to_string()});
        assert_eq!((exit_code(&attrs), run_ms(&attrs)), (None, Some(i64::MAX)));
        let attrs = json!({"exitCode": "-1", "execDuration": "-5"});
        assert_eq!((exit_code(&attrs), run_ms(&attrs)), (Some(-1), Some(0)));
        assert_eq!(run_ms(&json!({"execDuration": "x".repeat(100_000)})), None);
    }

    #[test]
    fn a_hostile_event_is_a_restart_with_clamped_numbers() {
        let mut it = Interpreter::default();
        let die = ev(
            "die",
            "collector",
            i64::MAX,
            json!({"exitCode": "nope", "execDuration": "9223372036854775807"}),
        );
        assert!(it.event(&die, None).is_empty());
        let mut start = ev("start", "collector", 0, json!({}));
        start["timeNano"] = json!(-1);
        start["time"] = json!(-1);
        let inspect = json!({"RestartCount": -3, "State": {"Restarting": "yes"}});
        let seen = it.event(&start, Some(&inspect));
        let restart = Seen::Restart {
            service: "collector".into(),
            at_ms: 0,
            exit_code: None,
            reason: "unknown".into(),
            restart_count: 0,
            run_ms: Some(i64::MAX),
        };
        assert_eq!(seen, vec![restart]);
    }

    #[test]
    fn the_reconnect_point_never_moves_back_or_below_zero() {
        let mut it = Interpreter::default();
        it.event(&ev("oom", "a", 50_000_000_000, json!({})), None);
        assert_eq!(it.last_time, Some(50));
        let mut bad = ev("oom", "a", 60_000_000_000, json!({}));
        bad["time"] = json!(-7);
        it.event(&bad, None);
        assert_eq!(it.last_time, Some(50), "a negative time is not a since");
        it.event(&ev("oom", "a", 10_000_000_000, json!({})), None);
        assert_eq!(
            it.last_time,
            Some(50),
            "an older event does not rewind the reconnect point"
        );
        let mut huge = ev("oom", "a", 70_000_000_000, json!({}));
        huge["time"] = json!(u64::MAX);
        it.event(&huge, None);
        assert_eq!(it.last_time, Some(50), "a time beyond i64 is ignored");
    }

    #[test]
    fn die_then_start_is_a_restart_with_its_cause() {
        let mut it = Interpreter::default();
        assert!(it
            .event(
                &ev(
                    "die",
                    "collector",
                    1_000_000_000,
                    json!({"exitCode": "1", "execDuration": "3"})
                ),
                None
            )
            .is_empty());
        let inspect = json!({"RestartCount": 4, "State": {"Restarting": false}});
        let seen = it.event(
            &ev("start", "collector", 2_000_000_000, json!({})),
            Some(&inspect),
        );
        assert_eq!(
            seen[0],
            Seen::Restart {
                service: "collector".into(),
                at_ms: 2_000,
                exit_code: Some(1),
                reason: "crash".into(),
                restart_count: 4,
                run_ms: Some(3_000)
            }
        );
        assert_eq!(
            seen[1],
            Seen::Restarting {
                service: "collector".into(),
                restarting: false
            }
        );
    }

    #[test]
    fn oom_unhealthy_and_kill_causes() {
        let mut it = Interpreter::default();
        it.event(&ev("oom", "sync-verifier", 1, json!({})), None);
        it.event(
            &ev("die", "sync-verifier", 2, json!({"exitCode": "137"})),
            None,
        );
        let seen = it.event(&ev("start", "sync-verifier", 3, json!({})), None);
        assert!(matches!(&seen[0], Seen::Restart { reason, .. } if reason == "oom"));
        it.event(
            &ev("health_status: unhealthy", "collector", 4, json!({})),
            None,
        );
        it.event(&ev("die", "collector", 5, json!({"exitCode": "143"})), None);
        assert!(
            matches!(&it.event(&ev("start", "collector", 6, json!({})), None)[0], Seen::Restart { reason, .. } if reason == "unhealthy")
        );
        it.event(&ev("die", "collector", 7, json!({"exitCode": "137"})), None);
        assert!(
            matches!(&it.event(&ev("start", "collector", 8, json!({})), None)[0], Seen::Restart { reason, .. } if reason == "killed")
        );
    }

    #[test]
    fn a_start_without_a_die_seen_is_a_start_not_a_restart() {
        let mut it = Interpreter::default();
        let inspect = json!({"RestartCount": 7, "State": {"Restarting": false}});
        let seen = it.event(
            &ev("start", "kafka", 5_000_000_000, json!({})),
            Some(&inspect),
        );
        assert_eq!(
            seen,
            vec![
                Seen::Started {
                    service: "kafka".into(),
                    at_ms: 5_000
                },
                Seen::Restarting {
                    service: "kafka".into(),
                    restarting: false
                }
            ]
        );
    }

    #[test]
    fn every_cause_is_a_known_reason() {
        for oom in [false, true] {
            for unhealthy in [false, true] {
                for code in [None, Some(0), Some(1), Some(137), Some(143), Some(-1)] {
                    let why = reason(oom, unhealthy, code);
                    assert!(reasons::ALL.contains(&why), "{why} is not in reasons::ALL");
                }
            }
        }
    }

    #[test]
    fn replayed_events_after_a_reconnect_are_not_counted_twice() {
        let mut it = Interpreter::default();
        let die = ev("die", "collector", 10, json!({"exitCode": "2"}));
        let start = ev("start", "collector", 11, json!({}));
        it.event(&die, None);
        assert_eq!(it.event(&start, None).len(), 1);
        it.event(&die, None);
        assert!(
            it.event(&start, None).is_empty(),
            "the same events replayed by `since`"
        );
    }
}
