//! exchange-sim throughput and memory: drives 3 symbols at a total of 24,000 aggregate
//! trades/s to one combined-stream client for a fixed time and prints, against baselines
//! measured in the same run, delivered/generated messages, delivered/20k-target, and the
//! resident memory growth after the bounded history (20k trades a symbol, full within 3 s)
//! is full: flat memory shows as an end/mid ratio near 1.
//! Run: `make bench` (or `cargo bench -p exchange-sim --bench throughput`).

use futures::StreamExt;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const PER_SYMBOL: &str = "8000";
const TARGET_MSGS_PER_SEC: f64 = 20_000.0;
const RUN: Duration = Duration::from_secs(8);

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn generated(client: &reqwest::Client, base: &str) -> f64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with("exchange_sim_trades_total "))
        .and_then(|l| l.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let vars: HashMap<&str, &str> = HashMap::from([
        ("SIM_TRADES_PER_SEC", PER_SYMBOL),
        ("SIM_HISTORY_TRADES", "20000"),
    ]);
    let config: exchange_sim::Config = kit::config::parse_from_map(&vars).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = tokio_util::sync::CancellationToken::new();
    exchange_sim::start(config, listener, token.clone())
        .await
        .expect("start");
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let url =
        format!("ws://{addr}/stream?streams=btcusdt@aggTrade/ethusdt@aggTrade/bnbusdt@aggTrade");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");

    let (rss_start, gen_start, started) =
        (rss_kib(), generated(&client, &base).await, Instant::now());
    let mut delivered = 0u64;
    let mut rss_mid = 0;
    while started.elapsed() < RUN {
        match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => delivered += 1,
            Ok(Some(Ok(_))) | Err(_) => {}
            Ok(None) | Ok(Some(Err(_))) => panic!("stream ended early"),
        }
        if rss_mid == 0 && started.elapsed() >= RUN / 2 {
            rss_mid = rss_kib();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let gen = (generated(&client, &base).await - gen_start) / secs;
    let got = delivered as f64 / secs;
    let rss_end = rss_kib();
    println!("exchange-sim throughput ({secs:.1} s, 3 symbols x {PER_SYMBOL} trades/s, one combined client)");
    println!("  generated   {gen:>10.0} msg/s");
    println!("  delivered   {got:>10.0} msg/s");
    println!("  ratio delivered/generated      {:.3}", got / gen.max(1.0));
    println!(
        "  ratio delivered/20k target     {:.3}",
        got / TARGET_MSGS_PER_SEC
    );
    println!("  rss start/mid/end KiB          {rss_start} / {rss_mid} / {rss_end}");
    println!(
        "  ratio rss end/mid (flat ~1.0)  {:.3}",
        rss_end as f64 / rss_mid.max(1) as f64
    );
    token.cancel();
}
