//! Test harness: exchange-sim and the collector in this process, the real Kafka of the
//! native stack (KAFKA_BROKERS, default 127.0.0.1:9092). Each test uses symbols of its own,
//! so tests share the broker without seeing each other's records.
#![allow(dead_code)]

use market::{AggTrade, Kline};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Symbols unique to one test (process, clock and a counter), e.g. `T48213AUSDT`.
pub fn symbols(n: usize) -> Vec<String> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let serial = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // At most 19 characters in all (Binance symbols, and sync-verifier's check, stop at 20).
    let tag = format!(
        "{}{}X{}",
        std::process::id() % 100_000,
        kit::time::now_ms() % 100_000,
        serial % 100
    );
    (0..n)
        .map(|i| format!("T{tag}{}USDT", (b'A' + i as u8) as char))
        .collect()
}

pub struct Sim {
    pub http: String,
    pub ws: String,
    pub client: reqwest::Client,
    _stop: DropGuard,
}

pub async fn sim(symbols: &[String], vars: &[(&str, &str)]) -> Sim {
    let joined = symbols.join(",");
    let mut map: HashMap<&str, &str> = vars.iter().copied().collect();
    map.insert("SIM_SYMBOLS", &joined);
    let config: exchange_sim::Config = kit::config::parse_from_map(&map).expect("sim config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let token = CancellationToken::new();
    exchange_sim::start(config, listener, token.clone())
        .await
        .expect("sim");
    Sim {
        http: format!("http://{addr}"),
        ws: format!("ws://{addr}"),
        client: reqwest::Client::new(),
        _stop: token.drop_guard(),
    }
}

impl Sim {
    pub async fn control(&self, op: &str, body: Value) {
        let r = self
            .client
            .post(format!("{}/sim/{op}", self.http))
            .json(&body)
            .send()
            .await
            .expect("control");
        assert_eq!(r.status(), 200);
    }

    pub async fn json(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.http))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// Total REST requests the simulator answered.
    pub async fn rest_requests(&self) -> f64 {
        self.metric_sum("exchange_sim_rest_requests_total").await
    }

    /// Sum of every sample of the simulator's metric `name`.
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.http))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        sum_metric(&text, name)
    }

    /// The simulator's metric `name{labels}` (0 when absent).
    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.http))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find(|l| l.starts_with(name_and_labels))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Sum of every sample of `name` in an exposition.
pub fn sum_metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub struct Collector {
    pub metrics_url: String,
    /// The state directory made for this collector alone, removed when it is dropped.
    state: Option<std::path::PathBuf>,
    _stop: DropGuard,
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(dir) = &self.state {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Collector {
    pub async fn metrics(&self) -> String {
        reqwest::get(&self.metrics_url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        self.sample(name_and_labels).await.unwrap_or(0.0)
    }

    /// The collector's sample `name{labels}`, `None` while the series does not exist.
    pub async fn sample(&self, name_and_labels: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find(|l| l.starts_with(name_and_labels))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// The body of `/readyz` (lists degraded components).
    pub async fn readyz(&self) -> String {
        let url = self.metrics_url.replace("/metrics", "/readyz");
        reqwest::get(&url)
            .await
            .expect("readyz")
            .text()
            .await
            .expect("text")
    }

    /// Sum of every sample of the collector's metric `name`.
    pub async fn metric_sum_of(&self, name: &str) -> f64 {
        sum_metric(&self.metrics().await, name)
    }
}

/// A state directory of its own for a test's collector (ban memory), under the system's
/// temporary directory; pass it as `STATE_DIR` to two collectors to share one.
pub fn state_dir(symbols: &[String]) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("collector-test-state-{}", symbols.join("-")))
}

/// A collector for `symbols` against `sim`; `vars` override the defaults (a fresh
/// `STATE_DIR` of its own unless given, so one test's ban never reaches another's).
pub async fn collector(sim: &Sim, symbols: &[String], vars: &[(&str, &str)]) -> Collector {
    let joined = symbols.join(",");
    let brokers = brokers();
    let group = format!("backfill-{}", joined);
    let fresh = state_dir(symbols);
    if !vars.iter().any(|(k, _)| *k == "STATE_DIR") {
        let _ = std::fs::remove_dir_all(&fresh);
    }
    let fresh = fresh.to_string_lossy().to_string();
    let mut map: HashMap<&str, &str> = HashMap::from([
        ("SYMBOLS", joined.as_str()),
        ("BINANCE_REST_URL", sim.http.as_str()),
        ("BINANCE_WS_URL", sim.ws.as_str()),
        ("KAFKA_BROKERS", brokers.as_str()),
        ("BACKFILL_GROUP", group.as_str()),
        ("WS_BACKOFF_MIN_MS", "100"),
        ("WS_BACKOFF_MAX_MS", "1000"),
        ("LOG_FORMAT", "text"),
        ("STATE_DIR", fresh.as_str()),
    ]);
    map.extend(vars.iter().copied());
    let config: collector::Config = kit::config::parse_from_map(&map).expect("collector config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics_url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    let token = CancellationToken::new();
    tokio::spawn(collector::run(config, listener, token.clone()));
    let own_state = !vars.iter().any(|(k, _)| *k == "STATE_DIR");
    Collector {
        metrics_url,
        state: own_state.then(|| fresh.into()),
        _stop: token.drop_guard(),
    }
}

/// Reads a topic from the beginning, keeping every record whose key is one of `symbols`;
/// each call returns all records seen since this reader was created.
pub struct Records {
    consumer: StreamConsumer,
    symbols: Vec<String>,
    seen: std::sync::Mutex<Vec<Value>>,
}

impl Records {
    pub fn new(topic: &str, symbols: &[String]) -> Self {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", format!("test-{}-{}", topic, symbols.join("-")))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        // Assign every partition from the beginning: no group rebalance can re-deliver.
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut assignment = rdkafka::TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assignment
                .add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&assignment).expect("assign");
        Self {
            consumer,
            symbols: symbols.to_vec(),
            seen: Default::default(),
        }
    }

    fn all<T: serde::de::DeserializeOwned>(&self) -> Vec<T> {
        let seen = self.seen.lock().expect("lock");
        seen.iter()
            .map(|v| serde_json::from_value(v.clone()).expect("record parses"))
            .collect()
    }

    /// Waits for the next matching record, at most until `deadline`; false on timeout.
    async fn pull(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let Ok(msg) = tokio::time::timeout_at(deadline, self.consumer.recv()).await else {
                return false;
            };
            let msg = msg.expect("kafka");
            let key = msg
                .key()
                .map(|k| String::from_utf8_lossy(k).to_string())
                .unwrap_or_default();
            if self.symbols.contains(&key) {
                let value: Value =
                    serde_json::from_slice(msg.payload().unwrap_or_default()).expect("JSON record");
                self.seen.lock().expect("lock").push(value);
                return true;
            }
        }
    }

    /// All records after reading for `window` more.
    pub async fn for_a_while<T: serde::de::DeserializeOwned>(&self, window: Duration) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + window;
        while self.pull(deadline).await {}
        self.all()
    }

    /// All records once `done` says they suffice (fails after `limit`).
    pub async fn until<T: serde::de::DeserializeOwned>(
        &self,
        limit: Duration,
        done: impl Fn(&[T]) -> bool,
    ) -> Vec<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let all = self.all();
            if done(&all) {
                return all;
            }
            assert!(
                self.pull(deadline).await,
                "records in time: {} so far",
                all.len()
            );
            // Take what else arrives within 50 ms before checking again: `done` sees every
            // record read so far, so checking after each one would cost n² on big topics.
            let burst = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            while self.pull(burst).await {}
        }
    }
}

/// The truth rows of the simulator as contract records (REST shapes → records).
pub async fn truth_aggs(sim: &Sim, symbol: &str, from: u64, to: u64) -> Vec<AggTrade> {
    let body = sim
        .json(&format!(
            "/sim/truth?symbol={symbol}&stream=aggTrade&fromId={from}&toId={to}"
        ))
        .await;
    market::binance::parse_agg_rows(symbol, &body["records"].to_string(), 0).expect("truth rows")
}

pub async fn truth_klines(sim: &Sim, symbol: &str, start: i64, end: i64) -> Vec<Kline> {
    let body = sim
        .json(&format!(
            "/sim/truth?symbol={symbol}&stream=kline&startTime={start}&endTime={end}"
        ))
        .await;
    market::binance::parse_kline_rows(symbol, "1m", &body["records"].to_string(), i64::MAX)
        .expect("truth rows")
}

/// Ids in order must step by one; returns the missing ranges.
pub fn holes(ids: &[u64]) -> Vec<(u64, u64)> {
    ids.windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .map(|w| (w[0] + 1, w[1] - 1))
        .collect()
}
