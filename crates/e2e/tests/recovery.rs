//! sync-verifier end to end: exchange-sim → collector → real Kafka → verifier → real
//! PostgreSQL (a database of this test's own), through a dropped window, a collector
//! killed without shutdown, a Kafka broker restart, a PostgreSQL restart and a restart of
//! the verifier itself (it resumes from the database). The database
//! must end equal to the simulator's truth, with every gap healed and no duplicate.
//! Each fault that loses trades must leave its mark: a gap this verifier opened, or trades
//! back-filled into the hole (the stack's own sync-verifier reads the same topics and may
//! ask for the hole first; its back-fill can then reach this verifier in the same batch as
//! the jump, and a hole filled within one batch is never open).
//! It restarts the native stack's Kafka and PostgreSQL, so it is alone in its binary.

use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const SEC: Duration = Duration::from_secs(1);
const ADMIN_URL: &str = "postgres://nghenhan:nghenhan@127.0.0.1:5432/nghenhan";

fn stack(args: &[&str]) {
    e2e::stack(args).expect("stack.sh");
}

/// The sum of a /metrics page's series starting with `prefix`; -1 while it does not answer.
async fn metric(url: &str, prefix: &str) -> f64 {
    kit::testing::metric_sum(url, prefix).await.unwrap_or(-1.0)
}

/// Has the simulator drop the symbol's next `count` trades from its streams.
async fn drop_trades(client: &reqwest::Client, sim: &str, symbol: &str, count: u32) {
    let body = json!({"symbol": symbol, "stream": "aggTrade", "count": count});
    client
        .post(format!("{sim}/sim/drop"))
        .json(&body)
        .send()
        .await
        .expect("drop");
}

/// What the simulator, the verifier and the collector say of the symbol, for a failure
/// message.
async fn state(p: &Parts) -> String {
    let get = async |url: String| reqwest::get(url).await.ok()?.text().await.ok();
    let sim = get(format!("{}/metrics", p.sim)).await.unwrap_or_default();
    let verifier = get(p.verifier_metrics.clone()).await.unwrap_or_default();
    let collector_url = p.collector_metrics.lock().expect("url").clone();
    let collector = get(collector_url).await.unwrap_or_default();
    let sim: Vec<&str> = sim
        .lines()
        .filter(|l| l.starts_with("exchange_sim_ws") || l.starts_with("exchange_sim_rest"))
        .collect();
    let ours = |l: &&str| {
        l.contains(&p.symbol) || l.starts_with("nghenhan_errors_total") || l.starts_with("kafka_")
    };
    let verifier: Vec<&str> = verifier.lines().filter(ours).collect();
    let collector: Vec<&str> = collector
        .lines()
        .filter(|l| ours(l) || l.starts_with("binance_requests_total"))
        .collect();
    format!("simulator: {sim:#?}\nverifier: {verifier:#?}\ncollector: {collector:#?}")
}

struct Parts {
    pool: PgPool,
    sim: String,
    symbol: String,
    db_url: String,
    verifier_metrics: String,
    /// Replaced when the test starts a new collector (while `survives` holds `&Parts`).
    collector_metrics: std::sync::Mutex<String>,
}

async fn start_verifier(
    db_url: &str,
    group: &str,
) -> (
    tokio::task::JoinHandle<Result<(), sync_verifier::Error>>,
    String,
) {
    // `latest`: the topics hold every earlier test's records; this test's symbol starts
    // after the verifier (and the comparison covers what was stored, min to max id).
    let vars: HashMap<&str, &str> = HashMap::from([
        ("DATABASE_URL", db_url),
        ("CONSUMER_GROUP", group),
        ("BACKFILL_RETRY_SECS", "2"),
        ("CONSUMER_OFFSET_RESET", "latest"),
    ]);
    let config: sync_verifier::Config =
        kit::config::parse_from_map(&vars).expect("verifier config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    (
        tokio::spawn(sync_verifier::run(
            config,
            listener,
            CancellationToken::new(),
        )),
        url,
    )
}

/// A collector of the symbol, and where its metrics are.
async fn start_collector(
    p: &Parts,
) -> (
    tokio::task::JoinHandle<Result<(), collector::Error>>,
    String,
) {
    let group = format!("backfill-{}", p.symbol);
    let ws = p.sim.replace("http://", "ws://");
    // Its own state folder: a ban remembered by another test must not reach this one.
    let state = std::env::temp_dir().join(format!("nghenhan-recovery-{}", p.symbol));
    let state = state.to_string_lossy().into_owned();
    let vars: HashMap<&str, &str> = HashMap::from([
        ("SYMBOLS", p.symbol.as_str()),
        ("BINANCE_REST_URL", p.sim.as_str()),
        ("BINANCE_WS_URL", ws.as_str()),
        ("BACKFILL_GROUP", group.as_str()),
        ("WS_BACKOFF_MIN_MS", "100"),
        ("WS_BACKOFF_MAX_MS", "2000"),
        ("HEADS_INTERVAL_SECS", "1"),
        ("STATE_DIR", state.as_str()),
    ]);
    let config: collector::Config = kit::config::parse_from_map(&vars).expect("collector config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    let task = tokio::spawn(collector::run(config, listener, CancellationToken::new()));
    (task, url)
}

async fn all_healed(p: &Parts) -> bool {
    let labels = format!(
        "sync_gaps_open{{stream=\"aggTrade\",symbol=\"{}\"}}",
        p.symbol
    );
    let text = reqwest::get(&p.verifier_metrics).await.ok();
    let Some(text) = text else { return false };
    let text = text.text().await.unwrap_or_default();
    text.lines().any(|l| l.starts_with(&labels))
        && metric(&p.verifier_metrics, &labels).await == 0.0
}

/// The newest trade time (s) this verifier holds for the symbol; 0 before the first.
async fn last_event(p: &Parts) -> f64 {
    metric(
        &p.verifier_metrics,
        &format!(
            "sync_last_event_timestamp_seconds{{stream=\"aggTrade\",symbol=\"{}\"}}",
            p.symbol
        ),
    )
    .await
    .max(0.0)
}

async fn detected(p: &Parts) -> f64 {
    metric(
        &p.verifier_metrics,
        &format!(
            "sync_gaps_detected_total{{stream=\"aggTrade\",symbol=\"{}\"}}",
            p.symbol
        ),
    )
    .await
}

/// The newest stored trade id of the symbol (0 before the first).
async fn newest_id(p: &Parts) -> i64 {
    let q = sqlx::query_scalar("SELECT coalesce(max(agg_id), 0) FROM aggtrades WHERE symbol = $1")
        .bind(&p.symbol);
    q.fetch_one(&p.pool).await.unwrap_or(0)
}

/// Trades of the symbol back-filled after id `after`.
async fn backfilled_after(p: &Parts, after: i64) -> i64 {
    let q = sqlx::query_scalar(
        "SELECT count(*) FROM aggtrades WHERE symbol = $1 AND agg_id > $2 AND source = 'backfill'",
    );
    q.bind(&p.symbol)
        .bind(after)
        .fetch_one(&p.pool)
        .await
        .unwrap_or(0)
}

/// Injects one fault, then waits (for its mark, if the fault must lose trades: a gap
/// opened or trades back-filled after the newest id stored before it) for every gap to heal.
async fn survives(p: &Parts, what: &str, opens_gap: bool, fault: impl AsyncFnOnce()) {
    let (before, newest) = (detected(p).await, newest_id(p).await);
    fault().await;
    let marked = async || detected(p).await > before || backfilled_after(p, newest).await > 0;
    if opens_gap && !kit::testing::within(60 * SEC, marked).await {
        panic!(
            "{what}: no gap detected and nothing back-filled after id {newest} within 60 s\n{}",
            state(p).await
        );
    }
    if !kit::testing::within(120 * SEC, async || all_healed(p).await).await {
        panic!("{what}: gaps not healed within 120 s\n{}", state(p).await);
    }
    eprintln!(
        "{what}: survived; gaps detected so far {}",
        detected(p).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the native stack (Kafka, PostgreSQL); `make test` runs it"]
async fn the_database_equals_the_truth_after_drops_kills_and_restarts() {
    let tag = format!("{}{}", std::process::id(), kit::time::now_ms() % 100_000);
    let symbol = format!("V{tag}USDT");
    // a database of this test's own
    let admin = PgPool::connect(ADMIN_URL).await.expect("admin connection");
    let db = format!("verify_{tag}");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .expect("create database");
    let db_url = format!("postgres://nghenhan:nghenhan@127.0.0.1:5432/{db}");

    let sim_vars: HashMap<&str, &str> = HashMap::from([
        ("SIM_SYMBOLS", symbol.as_str()),
        ("SIM_TRADES_PER_SEC", "40"),
    ]);
    let sim_config: exchange_sim::Config =
        kit::config::parse_from_map(&sim_vars).expect("sim config");
    let sim_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim = format!("http://{}", sim_listener.local_addr().expect("addr"));
    let _sim = exchange_sim::start(sim_config, sim_listener, CancellationToken::new())
        .await
        .expect("sim");

    let group = format!("verifier-{tag}");
    let (mut verifier, verifier_metrics) = start_verifier(&db_url, &group).await;
    let pool = PgPool::connect(&db_url).await.expect("the test's database");
    let mut p = Parts {
        pool,
        sim: sim.clone(),
        symbol: symbol.clone(),
        db_url: db_url.clone(),
        verifier_metrics,
        collector_metrics: Default::default(),
    };
    let (mut collector, url) = start_collector(&p).await;
    *p.collector_metrics.lock().expect("url") = url;
    // The drop below must fall inside what this verifier reads of this symbol: wait until
    // it has stored the symbol's live trades (the stack's own collector feeds the topics
    // too, so a count over every symbol would not say that this one flows).
    kit::testing::until("the symbol's trades are verified", 60 * SEC, async || {
        last_event(&p).await > 0.0
    })
    .await;
    let started = last_event(&p).await;
    kit::testing::until("the symbol's trades keep flowing", 30 * SEC, async || {
        last_event(&p).await > started
    })
    .await;

    let client = reqwest::Client::new();
    survives(&p, "dropped window", true, async || {
        drop_trades(&client, &sim, &symbol, 30).await;
    })
    .await;

    survives(&p, "collector killed", true, async || {
        collector.abort(); // no graceful shutdown, like kill -9
        tokio::time::sleep(3 * SEC).await; // down for a while: trades pass it by (the gap)
        let url;
        (collector, url) = start_collector(&p).await;
        *p.collector_metrics.lock().expect("url") = url;
    })
    .await;
    survives(&p, "kafka restarted", false, async || {
        stack(&["stop", "kafka"]);
        tokio::time::sleep(2 * SEC).await; // the outage itself
        stack(&["start", "kafka"]);
    })
    .await;
    survives(&p, "postgres restarted", false, async || {
        stack(&["stop", "postgres"]);
        tokio::time::sleep(2 * SEC).await; // the outage itself
        stack(&["start", "postgres"]);
    })
    .await;

    // A restarted verifier resumes from the database: its first records continue the
    // stored watermark, and a new hole is still found and healed.
    verifier.abort();
    let _ = verifier.await; // gone, its consumer closed
    (verifier, p.verifier_metrics) = start_verifier(&db_url, &group).await;
    // It resumes from the database (the gauge shows the stored newest trade), then reads on.
    kit::testing::until("the restarted verifier resumed", 60 * SEC, async || {
        last_event(&p).await > 0.0
    })
    .await;
    let resumed = last_event(&p).await;
    kit::testing::until(
        "the restarted verifier reads new trades",
        60 * SEC,
        async || last_event(&p).await > resumed,
    )
    .await;
    survives(&p, "verifier restarted, then a drop", true, async || {
        drop_trades(&client, &sim, &symbol, 20).await;
    })
    .await;
    verifier.abort();
    let _ = verifier.await; // nothing is written after this

    // Compare everything stored with the truth.
    let pool = PgPool::connect(&p.db_url).await.expect("db");
    let row = sqlx::query("SELECT min(agg_id), max(agg_id), count(*), count(DISTINCT agg_id) FROM aggtrades WHERE symbol = $1")
        .bind(&symbol)
        .fetch_one(&pool)
        .await
        .expect("summary");
    let (lo, hi, n, distinct): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(n, distinct, "no duplicates");
    assert_eq!(n, hi - lo + 1, "no holes between {lo} and {hi}");
    let truth: Value = client
        .get(format!(
            "{sim}/sim/truth?symbol={symbol}&stream=aggTrade&fromId={lo}&toId={hi}"
        ))
        .send()
        .await
        .expect("truth")
        .json()
        .await
        .expect("json");
    let truth =
        market::binance::parse_agg_rows(&symbol, &truth["records"].to_string(), 0).expect("rows");
    assert_eq!(truth.len() as i64, n, "the simulator holds the same range");
    let stored: Vec<(i64, String, String, i64, bool)> = sqlx::query_as(
        "SELECT agg_id, price::text, qty::text, trade_time_ms, buyer_is_maker FROM aggtrades WHERE symbol = $1 ORDER BY agg_id",
    )
    .bind(&symbol)
    .fetch_all(&pool)
    .await
    .expect("rows");
    for (t, s) in truth.iter().zip(&stored) {
        assert_eq!(
            (
                t.agg_id as i64,
                &t.price,
                &t.qty,
                t.trade_time_ms,
                t.buyer_is_maker
            ),
            (s.0, &s.1, &s.2, s.3, s.4)
        );
    }
    // (The topics hold other tests' symbols too; this verifier saw them all, so look at ours.)
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM gaps WHERE symbol = $1 AND healed_at IS NULL")
            .bind(&symbol)
            .fetch_one(&pool)
            .await
            .expect("gaps");
    assert_eq!(open, 0, "every gap of the symbol in the ledger healed");
    let backfilled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM aggtrades WHERE symbol = $1 AND source = 'backfill'",
    )
    .bind(&symbol)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert!(
        backfilled >= 50,
        "the holes (30 + 20 dropped, and the kill's) were back-filled ({backfilled})"
    );
    collector.abort();
}
