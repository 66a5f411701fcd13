//! restart-watcher: learns of restarts and of services that went silent, from the
//! heartbeats every service publishes and, where a Docker Engine is reachable, from its
//! event stream; detects back-off restart loops; exports `service_*` metrics and publishes
//! each restart to `platform.restarts.v1`. Every service it knows of (the platform's three
//! from the start, then each heartbeat sender and each container the Docker source lists)
//! has every restart reason and its back-off gauge at 0 before anything happens, so the
//! first restart of any cause moves `increase()`.
//!
//! It also measures consumer-group lag from outside the consumers ([`lag`]:
//! `kafka_consumer_group_lag{group,topic,partition}`), so a consumer that is frozen or gone,
//! and so reports nothing itself, still shows its lag growing.
//!
//! It must not restart anything itself, nor write to Docker, nor commit or join any
//! consumer group but its own heartbeat consumer's: it watches and reports.
#![forbid(unsafe_code)]

pub mod docker;
pub mod lag;
pub mod loops;
pub mod metrics;
pub mod tracker;
pub mod watch;

/// Why restart-watcher could not start or stopped: a kit component's failure, or a bad
/// DOCKER_HOST.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kit(#[from] kit::KitError),
    #[error(transparent)]
    DockerHost(#[from] docker::DockerError),
}

use clap::Parser;
use kit::app::Service;
use kit::config::KitConfig;
use kit::contract::{services, topics};
use kit::heartbeat::{Heartbeat, HEARTBEAT_VERSION};
use kit::kafka::{self, KafkaContext};
use kit::record::{self, Undecodable};
use kit::restarts::RestartEvent;
use kit::time::now_ms;
use loops::LoopRules;
use metrics::WatchMetrics;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracker::Tracker;
use watch::Watch;

impl kit::config::ServiceConfig for Config {
    fn kit(&self) -> &KitConfig {
        &self.kit
    }
}

/// restart-watcher's configuration, from the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "restart-watcher", version)]
pub struct Config {
    #[command(flatten)]
    pub kit: KitConfig,

    /// Services reported down if they never send a heartbeat, comma separated.
    #[arg(
        long,
        env = "EXPECTED_SERVICES",
        value_delimiter = ',',
        default_values_t = services::ALL.map(String::from)
    )]
    pub expected_services: Vec<String>,

    /// Kafka consumer group.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "restart-watcher")]
    pub consumer_group: String,

    /// Docker Engine API (unix:///var/run/docker.sock, or a read-only socket proxy such as
    /// tcp://docker-proxy:2375); unset: heartbeats only.
    #[arg(long, env = "DOCKER_HOST")]
    pub docker_host: Option<String>,

    /// The compose project whose containers are watched.
    #[arg(long, env = "COMPOSE_PROJECT", default_value = "nghenhan")]
    pub compose_project: String,

    /// Restarts after short runs, within the window, that make a back-off loop.
    #[arg(
        long,
        env = "BACKOFF_THRESHOLD",
        default_value_t = 3,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub backoff_threshold: u64,
    #[arg(
        long,
        env = "BACKOFF_WINDOW_SECS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub backoff_window_secs: u64,
    /// A run shorter than this is short; staying up longer ends a loop (Docker: 10 s).
    #[arg(
        long,
        env = "BACKOFF_RESET_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub backoff_reset_secs: u64,

    /// Consumer groups whose lag is measured from outside (comma separated); `*` adds every
    /// group the brokers list; empty turns the measurement off. See `lag`.
    #[arg(
        long,
        env = "LAG_GROUPS",
        value_delimiter = ',',
        default_values_t = lag::DEFAULT_GROUPS.map(String::from)
    )]
    pub lag_groups: Vec<String>,
    /// Seconds between lag measurements.
    #[arg(
        long,
        env = "LAG_INTERVAL_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub lag_interval_secs: u64,
    /// The longest one measurement may take, all broker calls in it together.
    #[arg(
        long,
        env = "LAG_TIMEOUT_SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    pub lag_timeout_secs: u64,
    /// Seconds a group must have had nothing committed (deleted, or its offsets expired)
    /// before its lag series are removed.
    #[arg(
        long,
        env = "LAG_FORGET_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(0..=604_800)
    )]
    pub lag_forget_secs: u64,
}

/// Runs the watcher until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut service = Service::start(services::RESTART_WATCHER, &config.kit, &listener, shutdown)?;
    let metrics = WatchMetrics::register(service.telemetry.registry(), &config.expected_services)?;
    let interval_ms = i64::try_from(config.kit.heartbeat_interval_ms).unwrap_or(i64::MAX);
    let tracker = Tracker::new(config.expected_services.clone(), interval_ms, now_ms());
    let rules = LoopRules::from_secs(
        config.backoff_threshold,
        config.backoff_window_secs,
        config.backoff_reset_secs,
    );
    let watch = Arc::new(Mutex::new(Watch::new(tracker, rules, metrics)));
    let client_id = service.identity.client_id("restart-watcher");
    let consumer = kafka::consumer(
        &config.kit.kafka_brokers,
        &client_id,
        &config.consumer_group,
        "latest",
        service.kafka.clone(),
    )?;
    let watcher = Watcher {
        consumer,
        watch: watch.clone(),
        producer: service.producer.clone(),
        telemetry: service.telemetry.clone(),
        shutdown: service.shutdown.clone(),
    };
    if let Some(host) = &config.docker_host {
        let endpoint = docker::Endpoint::parse(host)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let source = docker::watch(
            endpoint,
            config.compose_project.clone(),
            tx,
            service.telemetry.clone(),
            service.shutdown.clone(),
        );
        service.spawn("docker_events", async move {
            source.await;
            Ok(())
        });
        service.spawn(
            "docker",
            follow_docker(
                rx,
                watch.clone(),
                service.producer.clone(),
                service.telemetry.clone(),
            ),
        );
    }
    let lag = lag::LagSettings::new(
        &config.lag_groups,
        config.lag_interval_secs,
        config.lag_timeout_secs,
        config.lag_forget_secs,
    );
    if lag.enabled() {
        let lag = lag::Lag::new(
            lag,
            &config.kit.kafka_brokers,
            &client_id,
            service.kafka.clone(),
            service.telemetry.clone(),
        )?;
        service.spawn("consumer_lag", lag::run(lag, service.shutdown.clone()));
    }
    service.spawn("heartbeat_consume", watcher.consume());
    service.spawn("metrics_refresh", refresh(watch, service.shutdown.clone()));
    let app = service.ops_app();
    Ok(service.run(listener, app).await?)
}

type Shared = Arc<Mutex<Watch>>;

fn lock(watch: &Shared) -> std::sync::MutexGuard<'_, Watch> {
    watch.lock().unwrap_or_else(|p| p.into_inner())
}

/// Publishes a restart event to `platform.restarts.v1` (key = service); failures are counted.
async fn publish(
    producer: &FutureProducer<KafkaContext>,
    telemetry: &kit::Telemetry,
    event: &RestartEvent,
) {
    let Ok(payload) = serde_json::to_vec(event) else {
        return;
    };
    let record = FutureRecord::to(topics::RESTARTS)
        .key(&event.service)
        .payload(&payload);
    if let Err((err, _)) = producer.send(record, Duration::from_secs(5)).await {
        telemetry.error(kit::contract::ErrorKind::RestartPublish, &err);
    }
}

async fn follow_docker(
    mut rx: tokio::sync::mpsc::Receiver<docker::Seen>,
    watch: Shared,
    producer: FutureProducer<KafkaContext>,
    telemetry: kit::Telemetry,
) -> Result<(), kit::KitError> {
    while let Some(seen) = rx.recv().await {
        let event = lock(&watch).docker(seen);
        if let Some(event) = event {
            tracing::info!(service = %event.service, reason = %event.reason, exit_code = ?event.exit_code, "restart (docker)");
            publish(&producer, &telemetry, &event).await;
        }
    }
    Ok(())
}

struct Watcher {
    consumer: StreamConsumer<KafkaContext>,
    watch: Shared,
    producer: FutureProducer<KafkaContext>,
    telemetry: kit::Telemetry,
    shutdown: CancellationToken,
}

impl Watcher {
    async fn consume(self) -> Result<(), kit::KitError> {
        self.consumer.subscribe(&[topics::HEARTBEATS])?;
        loop {
            let received = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                received = self.consumer.recv() => received,
            };
            match received {
                Ok(msg) => self.handle(&msg).await?,
                Err(err) => {
                    self.telemetry
                        .error(kit::contract::ErrorKind::KafkaConsume, &err);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<(), kit::KitError> {
        match parse(msg.payload()) {
            Ok(hb) => {
                let event = lock(&self.watch).heartbeat(&hb, now_ms());
                if let Some(event) = event {
                    publish(&self.producer, &self.telemetry, &event).await;
                }
            }
            Err(reason) => {
                self.telemetry
                    .error(kit::contract::ErrorKind::BadHeartbeat, &reason);
                if !kafka::dead_letter(&self.producer, msg, &reason.to_string(), &self.shutdown)
                    .await
                {
                    return Ok(()); // shutting down: leave the offset unstored, it is read again
                }
            }
        }
        kafka::store_offset(&self.consumer, msg, &self.telemetry);
        Ok(())
    }
}

/// Reads a heartbeat, or says why it cannot (it is dead-lettered with the reason).
pub fn parse(payload: Option<&[u8]>) -> Result<Heartbeat, Undecodable> {
    record::decode(payload, "heartbeat", HEARTBEAT_VERSION, |h: &Heartbeat| h.v)
}

async fn refresh(watch: Shared, shutdown: CancellationToken) -> Result<(), kit::KitError> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => lock(&watch).refresh(now_ms()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, clap::Error> {
        kit::config::parse_from_map(&vars.iter().copied().collect())
    }

    #[test]
    fn lag_settings_default_to_the_platform_groups_and_are_range_checked() {
        let c = config(&[]).expect("defaults");
        assert_eq!(
            c.lag_groups,
            ["sync-verifier", "collector-backfill", "restart-watcher"]
        );
        assert_eq!(
            (c.lag_interval_secs, c.lag_timeout_secs, c.lag_forget_secs),
            (10, 5, 60)
        );
        let c = config(&[("LAG_GROUPS", "*,audit"), ("LAG_FORGET_SECS", "0")]).expect("set");
        let s = lag::LagSettings::new(&c.lag_groups, 10, 5, c.lag_forget_secs);
        assert!(s.every_group && s.groups == ["audit"] && s.forget_ms == 0);
        let off = config(&[("LAG_GROUPS", "")]).expect("empty");
        assert!(!lag::LagSettings::new(&off.lag_groups, 10, 5, 0).enabled());
        for (var, bad) in [
            ("LAG_INTERVAL_SECS", "0"),
            ("LAG_INTERVAL_SECS", "3601"),
            ("LAG_TIMEOUT_SECS", "0"),
            ("LAG_TIMEOUT_SECS", "301"),
            ("LAG_FORGET_SECS", "604801"),
            ("LAG_FORGET_SECS", "-1"),
        ] {
            assert!(
                config(&[(var, bad)]).is_err(),
                "{var}={bad} must be refused"
            );
        }
    }

    #[test]
    fn parse_reads_heartbeats_of_the_heartbeat_schema_and_refuses_the_rest_with_reasons() {
        assert_eq!(
            parse(None).expect_err("no payload").to_string(),
            "empty payload"
        );
        assert!(parse(Some(b"{not json"))
            .expect_err("not JSON")
            .to_string()
            .starts_with("not a heartbeat record: "));
        let v2 = br#"{"v":2,"service":"c","instance_id":"i","started_at_ms":1,"seq":0,"sent_at_ms":1,"interval_ms":5000}"#;
        assert_eq!(
            parse(Some(v2)).expect_err("v2").to_string(),
            "heartbeat schema v2 is not supported (expected v1)"
        );
        let v1 = br#"{"v":1,"service":"c","instance_id":"i","started_at_ms":1,"seq":0,"sent_at_ms":1,"interval_ms":5000}"#;
        assert_eq!(parse(Some(v1)).expect("v1 parses").service, "c");
    }
}
