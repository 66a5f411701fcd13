//! Heads weight per minute at 3 and at 400 symbols, measured in one run against an
//! in-process exchange-sim: each round is one ticker request through the governor, and its
//! weight is what the simulator reports used (`X-MBX-USED-WEIGHT-1M`, read back by the
//! governor); rounds per minute follow the collector's spacing (HEADS_INTERVAL_SECS 5,
//! HEADS_WEIGHT_PER_MIN 240, the defaults). Prints both and their ratio, which must stay
//! near 10 however many symbols (flat past 100), where per-symbol requests grew 133-fold.
//! Run: `make bench`.

use collector::governor::Governor;
use collector::heads;
use collector::metrics::CollectorMetrics;
use collector::rest::BinanceRest;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const ROUNDS: usize = 5;

/// Median round time and weight per round, as the simulator counted it.
async fn measure(symbols: usize) -> anyhow::Result<(Duration, u32)> {
    let names: Vec<String> = (0..symbols).map(|i| format!("S{i:03}USDT")).collect();
    let joined = names.join(",");
    let vars = HashMap::from([
        ("SIM_SYMBOLS", joined.as_str()),
        ("SIM_TRADES_PER_SEC", "5"),
    ]);
    let config: exchange_sim::Config = kit::config::parse_from_map(&vars)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    exchange_sim::start(config, listener, stop.clone()).await?;
    let telemetry = kit::Telemetry::new("collector", "bench")?;
    let metrics = CollectorMetrics::register(telemetry.registry())?;
    let governor = Arc::new(Governor::new(0.8, Some(metrics.clone())));
    let rest = BinanceRest::new(&url, governor.clone(), metrics, telemetry)?;
    rest.load_limits().await?;
    let mut times = Vec::new();
    let mut weights = Vec::new();
    for _ in 0..ROUNDS {
        let before = governor.used().await;
        let started = Instant::now();
        let got = heads::sample(&rest, &names).await?;
        times.push(started.elapsed());
        anyhow::ensure!(
            got.len() == symbols,
            "{} heads for {symbols} symbols",
            got.len()
        );
        weights.push(governor.used().await.saturating_sub(before));
    }
    stop.cancel();
    times.sort();
    weights.sort();
    Ok((times[ROUNDS / 2], weights[ROUNDS / 2]))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let interval = Duration::from_secs(5);
    let mut per_min = Vec::new();
    for symbols in [3, 400] {
        let (took, weight) = measure(symbols).await?;
        let spacing = heads::spacing(symbols, interval, 240);
        let minute = f64::from(weight) * 60.0 / spacing.as_secs_f64();
        println!(
            "heads at {symbols:>3} symbols: {weight} weight a round (one ticker request, median of {ROUNDS}), \
             a round every {:.0} s, {minute:.0} weight a minute, round took {took:?}",
            spacing.as_secs_f64()
        );
        per_min.push(minute);
    }
    let per_symbol_before = |n: f64| n * 7.0 * 12.0; // aggTrades 4 + klines 2 + time 1, every 5 s
    println!(
        "heads weight a minute, 400 vs 3 symbols: {:.1}x (per-symbol sampling: {:.0} vs {:.0}, {:.0}x)",
        per_min[1] / per_min[0],
        per_symbol_before(400.0),
        per_symbol_before(3.0),
        per_symbol_before(400.0) / per_symbol_before(3.0)
    );
    Ok(())
}
