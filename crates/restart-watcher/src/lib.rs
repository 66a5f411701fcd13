//! restart-watcher: learns of restarts and of services that went silent, from the
//! heartbeats every service publishes (and, with issue 6, from the Docker Engine event
//! stream), and exports them as `service_*` metrics.
//!
//! It must not restart anything itself: it watches and reports.
#![forbid(unsafe_code)]

pub mod metrics;
pub mod tracker;

use clap::Parser;
use kit::app::Service;
use kit::config::KitConfig;
use kit::contract::{ports, services, topics};
use kit::heartbeat::{Heartbeat, HEARTBEAT_VERSION};
use kit::kafka::{self, KafkaContext};
use kit::time::now_ms;
use metrics::WatchMetrics;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracker::{Observation, Tracker};

/// restart-watcher's configuration, from the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "restart-watcher", version)]
pub struct Config {
    /// Address of the ops server (/metrics, /healthz, /readyz).
    #[arg(long, env = "LISTEN_ADDR", default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::RESTART_WATCHER)))]
    pub listen: SocketAddr,

    /// Services reported down if they never send a heartbeat, comma separated.
    #[arg(long, env = "EXPECTED_SERVICES", value_delimiter = ',', default_values_t = services::ALL.map(String::from))]
    pub expected_services: Vec<String>,

    /// Kafka consumer group.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "restart-watcher")]
    pub consumer_group: String,

    #[command(flatten)]
    pub kit: KitConfig,
}

/// Runs the watcher until `shutdown` is cancelled.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), kit::KitError> {
    let mut service = Service::start(services::RESTART_WATCHER, env!("CARGO_PKG_VERSION"), config.kit.clone(), shutdown)?;
    let metrics = WatchMetrics::register(service.telemetry.registry(), &config.expected_services)?;
    let interval_ms = i64::try_from(config.kit.heartbeat_interval_ms).unwrap_or(i64::MAX);
    let tracker = Arc::new(Mutex::new(Tracker::new(config.expected_services.clone(), interval_ms, now_ms())));
    let client_id = format!("restart-watcher-{}", &service.identity.instance_id[..8]);
    let consumer = kafka::consumer(&config.kit.kafka_brokers, &client_id, &config.consumer_group, "latest", service.kafka.clone())?;
    let watcher = Watcher {
        consumer,
        tracker: tracker.clone(),
        metrics: metrics.clone(),
        producer: service.producer.clone(),
        telemetry: service.telemetry.clone(),
        shutdown: service.shutdown.clone(),
    };
    service.spawn("heartbeat_consume", watcher.consume());
    service.spawn("metrics_refresh", refresh(tracker, metrics, service.shutdown.clone()));
    let app = service.ops_app();
    service.run(listener, app).await;
    Ok(())
}

struct Watcher {
    consumer: StreamConsumer<KafkaContext>,
    tracker: Arc<Mutex<Tracker>>,
    metrics: WatchMetrics,
    producer: rdkafka::producer::FutureProducer<KafkaContext>,
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
                    self.telemetry.error("kafka_consume", &err);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn handle(&self, msg: &BorrowedMessage<'_>) -> Result<(), kit::KitError> {
        match parse(msg.payload()) {
            Ok(hb) => self.observe(&hb),
            Err(reason) => {
                self.telemetry.error("bad_heartbeat", &reason);
                if !kafka::dead_letter(&self.producer, msg, &reason, &self.shutdown).await {
                    return Ok(()); // shutting down: leave the offset unstored, it is read again
                }
            }
        }
        self.consumer.store_offset_from_message(msg)?;
        Ok(())
    }

    fn observe(&self, hb: &Heartbeat) {
        let observation = match self.tracker.lock() {
            Ok(mut tracker) => tracker.observe(hb, now_ms()),
            Err(poisoned) => poisoned.into_inner().observe(hb, now_ms()),
        };
        if let Observation::Restarted { previous_instance, .. } = observation {
            tracing::info!(service = %hb.service, %previous_instance, instance = %hb.instance_id, "service restarted");
            self.metrics.restarted(&hb.service, "unknown");
        }
    }
}

/// Reads a heartbeat, or says why it cannot.
pub fn parse(payload: Option<&[u8]>) -> Result<Heartbeat, String> {
    let payload = payload.ok_or("empty heartbeat payload")?;
    let hb: Heartbeat = serde_json::from_slice(payload).map_err(|e| format!("heartbeat is not valid JSON of schema v1: {e}"))?;
    if hb.v != HEARTBEAT_VERSION {
        return Err(format!("heartbeat schema v{} is not supported (expected v{HEARTBEAT_VERSION})", hb.v));
    }
    Ok(hb)
}

async fn refresh(tracker: Arc<Mutex<Tracker>>, metrics: WatchMetrics, shutdown: CancellationToken) -> Result<(), kit::KitError> {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let snapshot = match tracker.lock() {
            Ok(t) => t.snapshot(now_ms()),
            Err(poisoned) => poisoned.into_inner().snapshot(now_ms()),
        };
        metrics.show(&snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_garbage_and_other_versions_with_reasons() {
        assert!(parse(None).unwrap_err().contains("empty"));
        assert!(parse(Some(b"{not json")).unwrap_err().contains("not valid JSON"));
        let v2 = br#"{"v":2,"service":"c","instance_id":"i","started_at_ms":1,"seq":0,"sent_at_ms":1,"interval_ms":5000}"#;
        assert!(parse(Some(v2)).unwrap_err().contains("v2 is not supported"));
        let v1 = br#"{"v":1,"service":"c","instance_id":"i","started_at_ms":1,"seq":0,"sent_at_ms":1,"interval_ms":5000}"#;
        assert_eq!(parse(Some(v1)).expect("v1 parses").service, "c");
    }
}
