//! Many symbols through the real pipeline, in process: exchange-sim → collector → Kafka →
//! sync-verifier → PostgreSQL (a database of the test's own), and the comparison of what
//! was stored with the simulator's truth. Used by `scale.rs` and `cluster.rs`.
// each test binary uses a part of it
#![allow(dead_code)]

use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SEC: Duration = Duration::from_secs(1);
const ADMIN_URL: &str = "postgres://nghenhan:nghenhan@127.0.0.1:5432/nghenhan";

/// One run: its symbols, simulator, verifier metrics, collector metrics and database.
pub struct Run {
    pub names: Vec<String>,
    pub sim: String,
    pub verifier: String,
    /// Each collector replica's /metrics.
    pub collector: Vec<String>,
    pub pool: PgPool,
    admin: PgPool,
    db: String,
    stop: CancellationToken,
}

/// Starts a skewed market of `symbols` symbols and the pipeline against `kafka` (the
/// brokers and any KAFKA_* settings), with `collectors` collector replicas splitting the
/// symbols; `prefix` names the symbols, groups and database.
pub async fn start(prefix: &str, symbols: usize, kafka: &[(&str, &str)], collectors: u32) -> Run {
    let tag = format!(
        "{prefix}{}{}",
        std::process::id(),
        kit::time::now_ms() % 100_000
    );
    let names: Vec<String> = (0..symbols)
        .map(|i| format!("{tag}X{i:03}USDT").to_uppercase())
        .collect();
    let joined = names.join(",");
    let admin = PgPool::connect(ADMIN_URL).await.expect("admin connection");
    let db = format!("run_{tag}").to_lowercase();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .expect("create database");
    let db_url = format!("postgres://nghenhan:nghenhan@127.0.0.1:5432/{db}");
    let stop = CancellationToken::new();
    let sim = start_sim(&joined, &stop).await;
    let group = format!("verifier-{tag}");
    let verifier = serve(&stop, |l, t| async {
        let mut vars = HashMap::from([
            ("DATABASE_URL", db_url.as_str()),
            ("CONSUMER_GROUP", group.as_str()),
            ("BACKFILL_RETRY_SECS", "2"),
            ("CONSUMER_OFFSET_RESET", "latest"),
        ]);
        vars.extend(kafka.iter().copied());
        let config: sync_verifier::Config = kit::config::parse_from_map(&vars).expect("config");
        tokio::spawn(async move {
            sync_verifier::run(config, l, t)
                .await
                .map_err(|e| e.to_string())
        });
    })
    .await;
    let ws = sim.replace("http://", "ws://");
    let backfill = format!("backfill-{tag}");
    let mut collector = Vec::new();
    for replica in 0..collectors {
        let state = std::env::temp_dir()
            .join(format!("nghenhan-{tag}-{replica}"))
            .to_string_lossy()
            .into_owned();
        let (replica, replicas) = (replica.to_string(), collectors.to_string());
        let url = serve(&stop, |l, t| async {
            let mut vars = HashMap::from([
                ("SYMBOLS", joined.as_str()),
                ("BINANCE_REST_URL", sim.as_str()),
                ("BINANCE_WS_URL", ws.as_str()),
                ("BACKFILL_GROUP", backfill.as_str()),
                ("WS_STREAMS_PER_CONNECTION", "200"),
                ("WS_CONNECT_INTERVAL_MS", "200"),
                ("HEADS_INTERVAL_SECS", "2"),
                ("STATE_DIR", state.as_str()),
                ("COLLECTOR_REPLICA", replica.as_str()),
                ("COLLECTOR_REPLICAS", replicas.as_str()),
            ]);
            vars.extend(kafka.iter().copied());
            let config: collector::Config = kit::config::parse_from_map(&vars).expect("config");
            tokio::spawn(async move {
                collector::run(config, l, t)
                    .await
                    .map_err(|e| e.to_string())
            });
        })
        .await;
        collector.push(url);
    }
    let pool = PgPool::connect(&db_url).await.expect("the run's database");
    Run {
        names,
        sim,
        verifier,
        collector,
        pool,
        admin,
        db,
        stop,
    }
}

/// Binds a listener, hands it to `spawn`, returns its /metrics URL.
async fn serve<F, Fut>(stop: &CancellationToken, spawn: F) -> String
where
    F: FnOnce(TcpListener, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    spawn(listener, stop.child_token()).await;
    url
}

async fn start_sim(symbols: &str, stop: &CancellationToken) -> String {
    let vars = HashMap::from([
        ("SIM_SYMBOLS", symbols),
        ("SIM_TRADES_PER_SEC", "5"),
        ("SIM_RATE_SKEW", "1.5"),
    ]);
    let config: exchange_sim::Config = kit::config::parse_from_map(&vars).expect("sim config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    exchange_sim::start(config, listener, stop.child_token())
        .await
        .expect("sim");
    url
}

impl Run {
    /// The simulator's last aggregate id of each symbol (absent before its first trade).
    pub async fn last_ids(&self) -> HashMap<String, i64> {
        let state: Value = reqwest::get(format!("{}/sim/state", self.sim))
            .await
            .expect("state")
            .json()
            .await
            .expect("json");
        state["symbols"]
            .as_array()
            .expect("symbols")
            .iter()
            .filter_map(|s| Some((s["symbol"].as_str()?.to_string(), s["last_id"].as_i64()?)))
            .collect()
    }

    /// (min, max, count, distinct) of each symbol's stored aggregate ids.
    pub async fn stored(&self) -> HashMap<String, (i64, i64, i64, i64)> {
        let rows = sqlx::query(
            "SELECT symbol, min(agg_id), max(agg_id), count(*), count(DISTINCT agg_id) FROM aggtrades GROUP BY symbol",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        rows.iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect()
    }

    /// Waits until the verifier stores the hottest symbol; the simulator's last ids then.
    pub async fn flowing(&self) -> HashMap<String, i64> {
        kit::testing::until("the verifier stores our trades", 120 * SEC, async || {
            self.stored().await.contains_key(&self.names[0])
        })
        .await;
        self.last_ids().await
    }

    /// Stops the market, waits until every symbol that traded after `baseline` is stored up
    /// to the simulator's last id, then compares each with the truth: no hole, no
    /// duplicate, every field equal. Returns how many symbols were compared.
    pub async fn equals_truth_after(&self, baseline: &HashMap<String, i64>) -> usize {
        let client = reqwest::Client::new();
        client
            .post(format!("{}/sim/rate", self.sim))
            .json(&json!({"trades_per_sec": 0}))
            .send()
            .await
            .expect("stop trading");
        let last = self.last_ids().await;
        let expected: Vec<(&String, i64)> = self
            .names
            .iter()
            .filter_map(|n| Some((n, *last.get(n)?)))
            .filter(|(n, id)| baseline.get(*n).is_none_or(|b| id > b))
            .collect();
        let caught_up = async || {
            let s = self.stored().await;
            expected
                .iter()
                .all(|(n, id)| s.get(*n).is_some_and(|r| r.1 == *id))
        };
        if !kit::testing::within(180 * SEC, caught_up).await {
            let s = self.stored().await;
            let behind: Vec<_> = expected
                .iter()
                .filter(|(n, id)| s.get(*n).is_none_or(|r| r.1 != *id))
                .map(|(n, id)| (n, id, s.get(*n)))
                .take(10)
                .collect();
            panic!("not stored up to the simulator's last id within 180 s: {behind:?}");
        }
        let s = self.stored().await;
        for (name, _) in &expected {
            let (lo, hi, n, distinct) = s[*name];
            assert_eq!(n, distinct, "{name}: no duplicate rows");
            assert_eq!(n, hi - lo + 1, "{name}: no hole between {lo} and {hi}");
            self.compare(&client, name, lo, hi).await;
        }
        expected.len()
    }

    /// Compares the stored rows of `name` with the truth over what the simulator still
    /// holds of `lo..=hi` (its history is bounded: a hot symbol's oldest trades are gone).
    async fn compare(&self, client: &reqwest::Client, name: &str, lo: i64, hi: i64) {
        let url = format!(
            "{}/sim/truth?symbol={name}&stream=aggTrade&fromId={lo}&toId={hi}",
            self.sim
        );
        let truth: Value = client
            .get(url)
            .send()
            .await
            .expect("truth")
            .json()
            .await
            .expect("json");
        let truth =
            market::binance::parse_agg_rows(name, &truth["records"].to_string(), 0).expect("rows");
        let truth: Vec<(i64, String, String, i64)> = truth
            .into_iter()
            .map(|t| (t.agg_id as i64, t.price, t.qty, t.last_trade_id as i64))
            .collect();
        assert_eq!(
            truth.last().map(|t| t.0),
            Some(hi),
            "{name}: the simulator holds the newest"
        );
        let held_from = truth.first().map_or(hi, |t| t.0);
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT agg_id, price::text, qty::text, last_trade_id FROM aggtrades
              WHERE symbol = $1 AND agg_id >= $2 ORDER BY agg_id",
        )
        .bind(name)
        .bind(held_from)
        .fetch_all(&self.pool)
        .await
        .expect("rows");
        assert_eq!(
            rows, truth,
            "{name} equals the simulator's truth from id {held_from}"
        );
    }

    /// The sum of the verifier's `metric` series of this run's aggregate-trade streams, and
    /// how many there are.
    pub async fn ours(&self, metric: &str) -> (f64, usize) {
        let tag = self.names[0].split('X').next().unwrap_or_default();
        let prefix = format!("{metric}{{stream=\"aggTrade\",symbol=\"{tag}X");
        let text = kit::testing::scrape(&self.verifier)
            .await
            .unwrap_or_default();
        let series = text.lines().filter(|l| l.starts_with(&prefix)).count();
        (kit::testing::sum(&text, &prefix), series)
    }

    /// Stops the run's services and drops its database.
    pub async fn finish(self) {
        self.stop.cancel();
        self.pool.close().await;
        let drop = format!("DROP DATABASE {} WITH (FORCE)", self.db);
        let _ = sqlx::query(&drop).execute(&self.admin).await;
    }
}
