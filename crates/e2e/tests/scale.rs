//! Four hundred symbols on one collector: exchange-sim (a skewed market: a few hot pairs,
//! a long tail) → collector (sharded WebSocket connections, heads from one ticker request)
//! → real Kafka → sync-verifier → real PostgreSQL (a database of this test's own). Once the
//! simulator stops trading, every symbol that traded while the verifier read must be stored
//! up to the simulator's last id, without a hole or a duplicate, equal to its truth, and no
//! symbol may count a record missing behind the exchange's head.

mod common;
use common::SEC;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the native stack (Kafka, PostgreSQL); `make test` runs it"]
async fn four_hundred_symbols_on_one_collector_equal_the_truth() {
    let run = common::start("Q", 400, &[], 1).await;
    let baseline = run.flowing().await;
    let connections = async || {
        kit::testing::metric_sum(
            &format!("{}/metrics", run.sim),
            "exchange_sim_ws_connections",
        )
        .await
        .unwrap_or(0.0)
    };
    kit::testing::until(
        "800 streams over 4 connections of 200",
        30 * SEC,
        async || connections().await == 4.0,
    )
    .await;
    // the market runs: this is the load, not a wait for a result (SCALE_TEST_SECS=600: the
    // ten minutes of the target)
    let secs = std::env::var("SCALE_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok());
    tokio::time::sleep(secs.unwrap_or(30) * SEC).await;
    let compared = run.equals_truth_after(&baseline).await;
    assert!(
        compared > 200,
        "most symbols traded and were compared: {compared}"
    );

    // heads from the ticker: nothing behind the exchange's newest raw trade id
    let missing = async || {
        let (sum, series) = run.ours("sync_missing_records").await;
        sum == 0.0 && series >= compared
    };
    assert!(
        kit::testing::within(30 * SEC, missing).await,
        "records still counted missing behind the heads (sum, series): {:?}",
        run.ours("sync_missing_records").await
    );
    let heads = "binance_requests_total{endpoint=\"/api/v3/ticker/24hr\",status=\"200\"}";
    let heads = kit::testing::metric_sum(&run.collector[0], heads)
        .await
        .unwrap_or(0.0);
    assert!(
        heads >= 1.0,
        "heads came from the ticker ({heads} requests)"
    );
    run.finish().await;
}

/// The symbols a collector streams, from its per-stream message counters.
async fn streamed_symbols(collector: &str) -> std::collections::BTreeSet<String> {
    let text = kit::testing::scrape(collector).await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("binance_ws_messages_total{stream=\""))
        .filter_map(|rest| rest.split('@').next())
        .map(str::to_uppercase)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the native stack (Kafka, PostgreSQL); `make test` runs it"]
async fn two_collector_replicas_split_400_symbols_and_lose_nothing() {
    let run = common::start("R", 400, &[], 2).await;
    let baseline = run.flowing().await;
    tokio::time::sleep(20 * SEC).await; // the market runs: this is the load, not a wait for a result
    let compared = run.equals_truth_after(&baseline).await;
    assert!(
        compared > 200,
        "most symbols traded and were compared: {compared}"
    );
    let (a, b) = (
        streamed_symbols(&run.collector[0]).await,
        streamed_symbols(&run.collector[1]).await,
    );
    assert!(
        a.len() > 100 && b.len() > 100,
        "both replicas stream ({}, {})",
        a.len(),
        b.len()
    );
    assert!(
        a.is_disjoint(&b),
        "no symbol is streamed twice: {:?}",
        a.intersection(&b).next()
    );
    let all: std::collections::BTreeSet<String> = run.names.iter().cloned().collect();
    assert!(
        a.union(&b).all(|s| all.contains(s)),
        "only the run's symbols"
    );
    run.finish().await;
}
