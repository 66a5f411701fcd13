//! collector: owns every call to Binance (REST and WebSocket), because Binance's limits are
//! per IP and one governor must see all of them. It normalises stream frames to the
//! contract's records and publishes them to Kafka, serves back-fill requests over REST,
//! and samples the exchange's heads.
//!
//! It must not persist or verify data (sync-verifier does), and nothing here may call
//! Binance's REST API except through [`rest::BinanceRest`], which asks the [`governor`].
#![forbid(unsafe_code)]

pub mod backfill;
pub mod ban;
pub mod governor;
pub mod heads;
pub mod metrics;
pub mod publish;
pub mod rest;
pub mod symbols;
pub mod ws;

/// Why the collector could not start or stopped: a kit component's failure, or its own.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kit(#[from] KitError),
    #[error("the Binance REST client could not be built: {0}")]
    HttpClient(#[from] reqwest::Error),
    #[error("COLLECTOR_REPLICA {replica} is not below COLLECTOR_REPLICAS {replicas}")]
    Replica { replica: u32, replicas: u32 },
    #[error("symbols: {0}")]
    Symbols(#[from] symbols::SymbolsError),
}

use clap::Parser;
use kit::app::Service;
use kit::config::KitConfig;
use kit::contract::{services, topics};
use kit::KitError;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn symbol(s: &str) -> Result<String, String> {
    let up = s.trim().to_uppercase();
    if up == symbols::ALL_USDT {
        return Ok(up);
    }
    if up.is_empty() || !up.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "{s:?} is not a Binance symbol (letters and digits, e.g. BTCUSDT)"
        ));
    }
    Ok(up)
}

fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!("{s:?} is not a share in (0, 1]")),
    }
}

impl kit::config::ServiceConfig for Config {
    fn kit(&self) -> &KitConfig {
        &self.kit
    }
}

/// collector's configuration, from the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "collector", version)]
pub struct Config {
    #[command(flatten)]
    pub kit: KitConfig,
    /// Symbols to collect, comma separated; `ALL_USDT`: every USDT pair trading now (from
    /// exchangeInfo at start).
    #[arg(
        long,
        env = "SYMBOLS",
        value_delimiter = ',',
        default_value = "BTCUSDT,ETHUSDT,BNBUSDT",
        value_parser = symbol
    )]
    pub symbols: Vec<String>,
    /// This collector's index among COLLECTOR_REPLICAS collectors splitting the symbols.
    #[arg(long, env = "COLLECTOR_REPLICA", default_value_t = 0)]
    pub replica: u32,
    /// How many collectors split the symbols (by a stable hash of the name).
    #[arg(
        long,
        env = "COLLECTOR_REPLICAS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=256)
    )]
    pub replicas: u32,
    /// Streams per WebSocket connection (two per symbol; Binance allows 1,024).
    #[arg(
        long,
        env = "WS_STREAMS_PER_CONNECTION",
        default_value_t = 200,
        value_parser = clap::value_parser!(u64).range(2..=1_024)
    )]
    pub ws_streams_per_connection: u64,
    /// Milliseconds between WebSocket connection attempts, all connections together
    /// (Binance: 300 attempts per 5 minutes per IP; 1,200 ms leaves room for a second
    /// collector on the same IP).
    #[arg(
        long,
        env = "WS_CONNECT_INTERVAL_MS",
        default_value_t = 1_200,
        value_parser = clap::value_parser!(u64).range(0..=60_000)
    )]
    pub ws_connect_interval_ms: u64,
    /// Binance REST base URL (exchange-sim: http://127.0.0.1:9180).
    #[arg(
        long,
        env = "BINANCE_REST_URL",
        default_value = "https://api.binance.com"
    )]
    pub rest_url: String,
    /// Binance WebSocket base URL (exchange-sim: ws://127.0.0.1:9180).
    #[arg(
        long,
        env = "BINANCE_WS_URL",
        default_value = "wss://stream.binance.com:9443"
    )]
    pub ws_url: String,
    /// Share of the REQUEST_WEIGHT limit the governor lets us use per window.
    #[arg(long, env = "RATE_LIMIT_SHARE", default_value = "0.8", value_parser = share)]
    pub rate_limit_share: f64,
    /// Reconnect a WebSocket silent for this many seconds (klines arrive every 2 s).
    #[arg(
        long,
        env = "WS_WATCHDOG_SECS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub ws_watchdog_secs: u64,
    /// Planned reconnect after this many seconds (Binance cuts connections at 24 h).
    #[arg(
        long,
        env = "WS_PLANNED_RECONNECT_SECS",
        default_value_t = 82_800,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub ws_planned_reconnect_secs: u64,
    #[arg(
        long,
        env = "WS_BACKOFF_MIN_MS",
        default_value_t = 500,
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    pub ws_backoff_min_ms: u64,
    #[arg(
        long,
        env = "WS_BACKOFF_MAX_MS",
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    pub ws_backoff_max_ms: u64,
    /// Seconds between samples of the exchange's heads.
    #[arg(
        long,
        env = "HEADS_INTERVAL_SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub heads_interval_secs: u64,
    /// The most request weight heads may spend a minute: rounds are spaced further apart
    /// than HEADS_INTERVAL_SECS when one round (one ticker request: 2 up to 20 symbols, 40
    /// up to 100, 80 beyond) would spend more. Default 240 (4 % of Binance's 6,000).
    #[arg(
        long,
        env = "HEADS_WEIGHT_PER_MIN",
        default_value_t = 240,
        value_parser = clap::value_parser!(u32).range(1..=6_000)
    )]
    pub heads_weight_per_min: u32,
    /// Seconds between reads of exchangeInfo's REQUEST_WEIGHT limit (Binance changes it
    /// without notice; each read costs weight 20).
    #[arg(
        long,
        env = "EXCHANGE_INFO_INTERVAL_SECS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(10..=86_400)
    )]
    pub exchange_info_interval_secs: u64,
    /// Kafka consumer group of the back-fill consumer.
    #[arg(long, env = "BACKFILL_GROUP", default_value = "collector-backfill")]
    pub backfill_group: String,
    /// Directory of the collector's state (the Binance ban memory); created if missing.
    #[arg(long, env = "STATE_DIR", default_value = "/var/lib/collector")]
    pub state_dir: std::path::PathBuf,
    /// Records the stream producer may queue before new stream records are dropped
    /// (librdkafka `queue.buffering.max.messages`; unset: librdkafka's default, 100 000).
    #[arg(
        long,
        env = "KAFKA_QUEUE_MAX_MESSAGES",
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub kafka_queue_max_messages: Option<u32>,
}

impl Config {
    pub fn stream_config(&self) -> ws::StreamConfig {
        ws::StreamConfig {
            ws_base: self.ws_url.clone(),
            symbols: self.symbols.clone(),
            watchdog: Duration::from_secs(self.ws_watchdog_secs.max(1)),
            planned_after: Duration::from_secs(self.ws_planned_reconnect_secs.max(1)),
            backoff_min: Duration::from_millis(self.ws_backoff_min_ms.max(1)),
            backoff_max: Duration::from_millis(self.ws_backoff_max_ms.max(self.ws_backoff_min_ms)),
        }
    }
}

/// Runs the collector until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut service = Service::start(services::COLLECTOR, &config.kit, &listener, shutdown)?;
    let metrics = metrics::CollectorMetrics::register(service.telemetry.registry())?;
    let bans = ban::BanStore::new(&config.state_dir, Some(service.telemetry.clone()));
    let governor = governor::Governor::new(config.rate_limit_share, Some(metrics.clone()))
        .remembering(bans)
        .reporting(service.degraded.clone());
    let governor = Arc::new(governor);
    let rest = rest::BinanceRest::new(
        &config.rest_url,
        governor,
        metrics.clone(),
        service.telemetry.clone(),
    )?;
    let rest = Arc::new(rest);
    if config.replica >= config.replicas {
        let (replica, replicas) = (config.replica, config.replicas);
        return Err(Error::Replica { replica, replicas });
    }
    let mut config = config;
    let resolved = resolve_symbols(&rest, &config, &service.telemetry, &service.shutdown);
    let Some(symbols) = resolved.await? else {
        return Ok(()); // shut down while exchangeInfo was away
    };
    config.symbols = symbols;
    let publisher = spawn_publisher(&mut service, &config, metrics.clone())?;
    service.spawn(
        "exchange_info",
        load_limits(
            rest.clone(),
            Duration::from_secs(config.exchange_info_interval_secs),
            service.telemetry.clone(),
            service.shutdown.clone(),
        ),
    );
    let pacer = Arc::new(ws::Pacer::new(Duration::from_millis(
        config.ws_connect_interval_ms,
    )));
    let per_connection = usize::try_from(config.ws_streams_per_connection).unwrap_or(1_024);
    let shards: Vec<ws::Streams> = ws::shards(&config.stream_config(), per_connection)
        .into_iter()
        .map(|shard| ws::Streams {
            config: shard,
            publisher: publisher.clone(),
            metrics: metrics.clone(),
            telemetry: service.telemetry.clone(),
            pacer: pacer.clone(),
        })
        .collect();
    let (producer, shutdown, p) = (
        service.producer.clone(),
        service.shutdown.clone(),
        publisher.clone(),
    );
    service.spawn("ws", async move {
        p.set_partitions(
            kit::kafka::partition_counts(
                &producer,
                &[topics::AGGTRADES, topics::KLINES, topics::HEADS],
                &shutdown,
            )
            .await,
        );
        let runs = shards.into_iter().map(|shard| shard.run(shutdown.clone()));
        futures::future::try_join_all(runs).await.map(|_| ())
    });
    let interval = heads::spacing(
        config.symbols.len(),
        Duration::from_secs(config.heads_interval_secs),
        config.heads_weight_per_min,
    );
    let heads = heads::run(
        rest.clone(),
        publisher.clone(),
        config.symbols.clone(),
        interval,
        service.telemetry.clone(),
        service.shutdown.clone(),
    );
    service.spawn("heads", heads);
    service.spawn(
        "weight_probe",
        probe_used_weight(
            rest.clone(),
            service.telemetry.clone(),
            service.shutdown.clone(),
        ),
    );
    spawn_backfill(&mut service, &config, rest, publisher, metrics)?;
    let app = service.ops_app();
    Ok(service.run(listener, app).await?)
}

/// The symbols this collector serves, retrying exchangeInfo (for `ALL_USDT`) with
/// back-off; a replica that owns none stops the service; `None` on shutdown.
async fn resolve_symbols(
    rest: &rest::BinanceRest,
    config: &Config,
    telemetry: &kit::Telemetry,
    shutdown: &CancellationToken,
) -> Result<Option<Vec<String>>, Error> {
    let attempt = || async {
        match symbols::resolve(rest, &config.symbols, config.replica, config.replicas).await {
            Err(symbols::SymbolsError::Rest(err)) => Err(err),
            done => Ok(done),
        }
    };
    let resolved = kit::retry::retry(
        shutdown,
        kit::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        attempt,
        |e| telemetry.error(kit::contract::ErrorKind::ExchangeInfo, &e),
    )
    .await;
    Ok(resolved.transpose()?)
}

/// The publisher and its delivery watcher. With `KAFKA_QUEUE_MAX_MESSAGES` set, records go
/// through a producer of their own with that queue, flushed when the watcher ends.
fn spawn_publisher(
    service: &mut Service,
    config: &Config,
    metrics: metrics::CollectorMetrics,
) -> Result<Arc<publish::Publisher>, KitError> {
    let own = match config.kafka_queue_max_messages {
        Some(max) => {
            let client_id = service.identity.client_id("collector-publish");
            Some(kit::kafka::producer_with_queue(
                &config.kit.kafka_brokers,
                &client_id,
                service.kafka.clone(),
                max,
            )?)
        }
        None => None,
    };
    let producer = own.clone().unwrap_or_else(|| service.producer.clone());
    let (publisher, watcher) =
        publish::Publisher::new(producer, service.telemetry.clone(), metrics);
    service.spawn("publish_watch", async move {
        watcher.await;
        if let Some(own) = own {
            use rdkafka::producer::Producer;
            let _ = tokio::task::spawn_blocking(move || own.flush(Duration::from_secs(2))).await;
        }
        Ok(())
    });
    Ok(Arc::new(publisher))
}

fn spawn_backfill(
    service: &mut Service,
    config: &Config,
    rest: Arc<rest::BinanceRest>,
    publisher: Arc<publish::Publisher>,
    metrics: metrics::CollectorMetrics,
) -> Result<(), KitError> {
    let client_id = service.identity.client_id("collector-backfill");
    // every replica reads every request (a group each) and serves its own symbols
    let group = match config.replicas {
        1 => config.backfill_group.clone(),
        _ => format!("{}-{}", config.backfill_group, config.replica),
    };
    let consumer = kit::kafka::consumer(
        &config.kit.kafka_brokers,
        &client_id,
        &group,
        "earliest",
        service.kafka.clone(),
    )?;
    let backfiller = backfill::Backfiller {
        rest,
        publisher,
        metrics,
        symbols: config.symbols.clone(),
        shutdown: service.shutdown.clone(),
        recent: Default::default(),
    };
    let task = backfill::consume(
        backfiller,
        consumer,
        service.producer.clone(),
        service.telemetry.clone(),
    );
    service.spawn("backfill", task);
    Ok(())
}

/// Every few seconds while our own requests are held back, reads the exchange's count of the
/// used weight (a ping), so `binance_rate_limit_used` shows other clients on our IP pushing
/// it toward the limit (BinanceRateLimitNearLimit) instead of freezing at our own share.
async fn probe_used_weight(
    rest: Arc<rest::BinanceRest>,
    telemetry: kit::Telemetry,
    shutdown: CancellationToken,
) -> Result<(), KitError> {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        if let Some(Err(err)) = rest.probe_used_weight().await {
            telemetry.error(kit::contract::ErrorKind::WeightProbe, &err);
        }
    }
}

/// Reads the weight limit from exchangeInfo every `every` until shutdown (Binance changes
/// it without notice), each read retried with back-off until it succeeds.
async fn load_limits(
    rest: Arc<rest::BinanceRest>,
    every: Duration,
    telemetry: kit::Telemetry,
    shutdown: CancellationToken,
) -> Result<(), KitError> {
    let mut known = None;
    loop {
        let load = || rest.load_limits();
        let Some(window) = kit::retry::retry(
            &shutdown,
            kit::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            load,
            |e| telemetry.error(kit::contract::ErrorKind::ExchangeInfo, &e),
        )
        .await
        else {
            return Ok(()); // shutdown
        };
        if known.as_ref() != Some(&window) {
            tracing::info!(limit = window.limit, window = %window.label, "Binance request weight limit loaded");
            known = Some(window);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_talk_to_the_real_binance() {
        let c: Config = kit::config::parse_from_map(&HashMap::new()).expect("defaults");
        assert_eq!(c.rest_url, "https://api.binance.com");
        assert_eq!(c.ws_url, "wss://stream.binance.com:9443");
        assert_eq!(c.symbols, ["BTCUSDT", "ETHUSDT", "BNBUSDT"]);
        assert_eq!(
            c.state_dir,
            std::path::Path::new("/var/lib/collector"),
            "the Compose volume's path"
        );
        assert_eq!(
            c.kafka_queue_max_messages, None,
            "librdkafka's default queue"
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        const HUGE: &str = "18446744073709551615"; // would overflow an Instant later
        for (k, v) in [
            ("SYMBOLS", "BTC-USDT"),
            ("RATE_LIMIT_SHARE", "1.5"),
            ("HEADS_INTERVAL_SECS", "0"),
            ("KAFKA_QUEUE_MAX_MESSAGES", "0"),
            ("HEADS_INTERVAL_SECS", HUGE),
            ("HEADS_WEIGHT_PER_MIN", "0"),
            ("WS_WATCHDOG_SECS", HUGE),
            ("WS_PLANNED_RECONNECT_SECS", HUGE),
            ("WS_BACKOFF_MAX_MS", HUGE),
            ("EXCHANGE_INFO_INTERVAL_SECS", "1"),
            ("EXCHANGE_INFO_INTERVAL_SECS", HUGE),
        ] {
            let err = kit::config::parse_from_map::<Config>(&HashMap::from([(k, v)])).expect_err(k);
            assert!(!err.to_string().is_empty());
        }
        let c: Config =
            kit::config::parse_from_map(&HashMap::from([("SYMBOLS", "btcusdt, ethusdt")]))
                .expect("parses");
        assert_eq!(c.symbols, ["BTCUSDT", "ETHUSDT"]);
    }
}
