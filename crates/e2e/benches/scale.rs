//! The platform at 400 symbols and 10k events/s, as shipped: the release binaries of
//! exchange-sim (a skewed market: 400 symbols, 25 trades/s each on average, skew 1.5),
//! collector and sync-verifier (a database of its own) against the native stack's Kafka
//! and PostgreSQL. Measured in one run over the same minute, from each process's own
//! /metrics:
//! - end-to-end latency of live trades, exchange event time → row committed (p50, p99 of
//!   `sync_end_to_end_latency_seconds`);
//! - the collector's CPU per 1,000 messages/s (cores) and its resident memory;
//! - the REST weight a minute (heads, back-fill, exchangeInfo), gaps opened and records
//!   missing behind the heads at the end;
//! - first, resident memory of collector and sync-verifier idle at 3 symbols.
//!
//! `SCALE_BENCH_SECS=600` measures ten minutes instead of one.
//!
//! Every figure is printed before anything is cleaned up. Run: `make bench`.

use anyhow::{bail, Context, Result};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_URL: &str = "postgres://nghenhan:nghenhan@127.0.0.1:5432/nghenhan";
/// The measured span: `SCALE_BENCH_SECS`, or a minute.
fn measure() -> Duration {
    let secs = std::env::var("SCALE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs(secs.unwrap_or(60))
}

/// REST weight spent between two scrapes of the collector, by endpoint (BINANCE.md's
/// weights; the ticker's for more than 100 symbols).
fn rest_weight(before: &str, after: &str) -> f64 {
    [
        ("/api/v3/ticker/24hr", 80.0),
        ("/api/v3/exchangeInfo", 20.0),
        ("/api/v3/aggTrades", 4.0),
        ("/api/v3/klines", 2.0),
        ("/api/v3/time", 1.0),
        ("/api/v3/ping", 1.0),
    ]
    .iter()
    .map(|(path, weight)| {
        let prefix = format!("binance_requests_total{{endpoint=\"{path}\"");
        weight * (kit::testing::sum(after, &prefix) - kit::testing::sum(before, &prefix))
    })
    .sum()
}

fn binary(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| e2e::root().join("target"));
    target.join("release").join(name)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(name: &str, port: u16, env: &[(&str, String)]) -> Result<Proc> {
    let mut cmd = Command::new(binary(name));
    cmd.env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(Proc(cmd.spawn().with_context(|| {
        format!("starting {name} (make bench builds it)")
    })?))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn scrape(port: u16) -> String {
    kit::testing::scrape(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap_or_default()
}

async fn value(port: u16, prefix: &str) -> f64 {
    kit::testing::sum(&scrape(port).await, prefix)
}

async fn ready(port: u16, what: &str) -> Result<()> {
    let up = async || !scrape(port).await.is_empty();
    if !kit::testing::within(Duration::from_secs(60), up).await {
        bail!("{what} did not serve /metrics within 60 s");
    }
    Ok(())
}

/// Cumulative bucket counts of a histogram, by upper bound.
fn buckets(text: &str, name: &str) -> BTreeMap<u64, f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le: f64 = if le == "+Inf" {
                f64::MAX
            } else {
                le.parse().ok()?
            };
            Some(((le * 1e6) as u64, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `q` quantile of the observations between two scrapes (linear within a bucket).
fn quantile(before: &BTreeMap<u64, f64>, after: &BTreeMap<u64, f64>, q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| (*le as f64 / 1e6, n - before.get(le).copied().unwrap_or(0.0)))
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (le, count) in delta {
        if count >= rank {
            let upper = if le > 1e9 { lower * 2.0 } else { le };
            return Some(lower + (upper - lower) * (rank - below) / (count - below).max(1.0));
        }
        (lower, below) = (le, count);
    }
    None
}

async fn idle_memory(db_url: &str, tag: &str) -> Result<(f64, f64)> {
    let (sim_port, col_port, ver_port) = (free_port()?, free_port()?, free_port()?);
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let _sim = spawn("exchange-sim", sim_port, &[])?;
    ready(sim_port, "exchange-sim").await?;
    let _collector = spawn(
        "collector",
        col_port,
        &collector_env(&sim_url, "BTCUSDT,ETHUSDT,BNBUSDT", tag),
    )?;
    let _verifier = spawn(
        "sync-verifier",
        ver_port,
        &verifier_env(db_url, &format!("idle-{tag}")),
    )?;
    ready(col_port, "collector").await?;
    ready(ver_port, "sync-verifier").await?;
    tokio::time::sleep(Duration::from_secs(20)).await; // settled: connected, heads flowing
    let rss = async |p| value(p, "process_resident_memory_bytes").await / 1e6;
    Ok((rss(col_port).await, rss(ver_port).await))
}

fn collector_env(sim: &str, symbols: &str, tag: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SYMBOLS", symbols.to_string()),
        ("BINANCE_REST_URL", sim.to_string()),
        ("BINANCE_WS_URL", sim.replace("http://", "ws://")),
        ("BACKFILL_GROUP", format!("bench-backfill-{tag}")),
        ("WS_CONNECT_INTERVAL_MS", "200".to_string()),
        (
            "STATE_DIR",
            std::env::temp_dir()
                .join(format!("bench-{tag}"))
                .to_string_lossy()
                .into_owned(),
        ),
    ]
}

fn verifier_env(db_url: &str, group: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db_url.to_string()),
        ("CONSUMER_GROUP", group.to_string()),
        ("CONSUMER_OFFSET_RESET", "latest".to_string()),
    ]
}

async fn at_scale(db_url: &str, tag: &str) -> Result<()> {
    let symbols: Vec<String> = (0..400).map(|i| format!("B{tag}X{i:03}USDT")).collect();
    let joined = symbols.join(",");
    let (sim_port, col_port, ver_port) = (free_port()?, free_port()?, free_port()?);
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let sim_env = [
        ("SIM_SYMBOLS", joined.clone()),
        ("SIM_TRADES_PER_SEC", "25".to_string()),
        ("SIM_RATE_SKEW", "1.5".to_string()),
    ];
    let _sim = spawn("exchange-sim", sim_port, &sim_env)?;
    ready(sim_port, "exchange-sim").await?;
    let _verifier = spawn(
        "sync-verifier",
        ver_port,
        &verifier_env(db_url, &format!("scale-{tag}")),
    )?;
    let _collector = spawn(
        "collector",
        col_port,
        &collector_env(&sim_url, &joined, tag),
    )?;
    ready(col_port, "collector").await?;
    ready(ver_port, "sync-verifier").await?;
    let flowing = async || {
        value(ver_port, "sync_records_persisted_total{stream=\"aggTrade\"").await > 10_000.0
    };
    if !kit::testing::within(Duration::from_secs(120), flowing).await {
        bail!("the verifier stored fewer than 10,000 trades in 2 minutes");
    }
    let latency = "sync_end_to_end_latency_seconds";
    let (v0, c0, t0) = (
        scrape(ver_port).await,
        scrape(col_port).await,
        Instant::now(),
    );
    tokio::time::sleep(measure()).await; // the measured span
    let (v1, c1, secs) = (
        scrape(ver_port).await,
        scrape(col_port).await,
        t0.elapsed().as_secs_f64(),
    );
    let delta = |a: &str, b: &str, p: &str| kit::testing::sum(b, p) - kit::testing::sum(a, p);
    let messages = delta(&c0, &c1, "binance_ws_messages_total");
    let cpu = delta(&c0, &c1, "process_cpu_seconds_total");
    let stored = delta(&v0, &v1, "sync_records_persisted_total{stream=\"aggTrade\"");
    let (b0, b1) = (buckets(&v0, latency), buckets(&v1, latency));
    let p50 = quantile(&b0, &b1, 0.5).unwrap_or(f64::NAN) * 1000.0;
    let p99 = quantile(&b0, &b1, 0.99).unwrap_or(f64::NAN) * 1000.0;
    let rss = kit::testing::sum(&c1, "process_resident_memory_bytes") / 1e6;
    let weight_per_min = rest_weight(&c0, &c1) * 60.0 / secs;
    let gaps = delta(&v0, &v1, "sync_gaps_detected_total");
    let missing = kit::testing::sum(&v1, "sync_missing_records{stream=\"aggTrade\"");
    println!("at 400 symbols over {secs:.0} s: {:.0} WebSocket events/s (aggTrade and kline), {:.0} trades stored/s", messages / secs, stored / secs);
    println!(
        "end-to-end latency, exchange event → row committed: p50 {p50:.1} ms, p99 {p99:.1} ms"
    );
    println!("REST weight a minute: {weight_per_min:.0} ({:.1} % of 6,000); gaps opened: {gaps:.0}; aggregate trades missing behind the heads at the end: {missing:.0}", weight_per_min / 60.0);
    println!("collector: {:.3} cores per 1,000 messages/s ({:.2} cores at {:.0}/s), resident memory {rss:.1} MB", cpu * 1000.0 / messages.max(1.0), cpu / secs, messages / secs);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let tag = format!("{}", std::process::id());
    let admin = PgPool::connect(ADMIN_URL)
        .await
        .context("the native stack's PostgreSQL")?;
    let db = format!("bench_scale_{tag}");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await?;
    let db_url = format!("postgres://nghenhan:nghenhan@127.0.0.1:5432/{db}");
    let run = async {
        let (collector, verifier) = idle_memory(&db_url, &tag).await?;
        println!("idle at 3 symbols (release): collector {collector:.1} MB, sync-verifier {verifier:.1} MB resident");
        at_scale(&db_url, &tag).await
    };
    let result = run.await;
    // figures are printed; now clean up
    let _ = sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&admin)
        .await;
    result
}
