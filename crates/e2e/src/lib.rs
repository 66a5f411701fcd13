//! Helpers for the end-to-end tests in `tests/`, which run against the native stack that
//! `make test` brings up (deploy/native/stack.sh). They talk to the real Kafka, Prometheus,
//! Alertmanager and the discord-sink, and poll with deadlines instead of sleeping blindly.
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const PROMETHEUS: &str = "http://127.0.0.1:9090";
pub const ALERTMANAGER: &str = "http://127.0.0.1:9093";
pub const SINK: &str = "http://127.0.0.1:9199";
pub const KAFKA: &str = "127.0.0.1:9092";

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The native stack's cache folder (NGH_CACHE, as in stack.sh).
pub fn cache() -> PathBuf {
    std::env::var_os("NGH_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache"))
}

/// The native stack's state folder (NGH_RUN, as in stack.sh: `make test` uses a stack of
/// its own, so `make up` after it starts clean).
pub fn run_dir() -> PathBuf {
    std::env::var_os("NGH_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("run"))
}

/// Polls `check` every 500 ms until it yields `Some`, or fails after `limit` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = String::from("condition not met");
    while start.elapsed() < limit {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{what}: not within {limit:?} ({last_err})")
}

/// Runs an instant PromQL query and returns its result vector.
pub async fn prom_query(client: &reqwest::Client, query: &str) -> Result<Vec<Value>> {
    let body: Value = client
        .get(format!("{PROMETHEUS}/api/v1/query"))
        .query(&[("query", query)])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if body["status"] != "success" {
        bail!("query {query} failed: {body}");
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The value of one result of a vector query.
pub fn sample_value(sample: &Value) -> Option<f64> {
    sample["value"][1].as_str()?.parse().ok()
}

/// Sends `signal` (e.g. "KILL") to a supervised service's process; its supervisor
/// restarts it (with Docker's back-off) unless it was held down with `hold`.
pub fn kill(part: &str, signal: &str) -> Result<()> {
    stack(&["kill", part, signal])
}

/// Keeps `part` down after its process next exits, until `stack.sh start`.
pub fn hold(part: &str) -> Result<()> {
    stack(&["hold", part])
}

/// Runs `deploy/native/stack.sh <args>` and fails on a non-zero exit.
pub fn stack(args: &[&str]) -> Result<()> {
    let status = std::process::Command::new(root().join("deploy/native/stack.sh"))
        .args(args)
        .status()?;
    if !status.success() {
        bail!("stack.sh {args:?} exited with {status}");
    }
    Ok(())
}

/// Everything the discord-sink recorded.
pub async fn sink_messages(
    client: &reqwest::Client,
) -> Result<Vec<discord_sink::server::Recorded>> {
    Ok(client
        .get(format!("{SINK}/sink/messages"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Forgets what the discord-sink recorded, so a test sees only its own messages.
pub async fn clear_sink(client: &reqwest::Client) -> Result<()> {
    client
        .delete(format!("{SINK}/sink/messages"))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Every PromQL expression of the provisioned dashboards: (dashboard, panel, expression,
/// whether the panel says it is empty on the native stack).
pub fn dashboard_queries() -> Result<Vec<(String, String, String, bool)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("grafana/dashboards"))? {
        let path = entry?.path();
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{}", path.display()))?;
        let title = dash["title"].as_str().unwrap_or_default().to_string();
        for panel in dash["panels"].as_array().into_iter().flatten() {
            let name = panel["title"].as_str().unwrap_or_default().to_string();
            let compose_only = name.contains("Compose only");
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().context("target without expr")?;
                out.push((title.clone(), name.clone(), expr.to_string(), compose_only));
            }
        }
        if let Some(expr) = dash["annotations"]["list"][0]["expr"].as_str() {
            out.push((
                title.clone(),
                "annotation: restarts".into(),
                expr.to_string(),
                false,
            ));
        }
    }
    Ok(out)
}

/// A dashboard expression with Grafana's variables replaced as "All" would.
pub fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$service", ".*")
        .replace("$symbol", ".*")
}

/// One sample of restart-watcher's own /metrics (0 when absent).
pub async fn watcher_metric(client: &reqwest::Client, series: &str) -> Result<f64> {
    let text = client
        .get("http://127.0.0.1:9103/metrics")
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(kit::testing::sample(&text, series).unwrap_or(0.0))
}
