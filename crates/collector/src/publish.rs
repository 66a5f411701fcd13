//! Publishing records to Kafka (key = symbol) through the kit's idempotent producer.
//!
//! Stream records are enqueued without waiting (a watcher task counts deliveries and
//! failures) and deduplicated, so the overlap of two connections during a planned
//! reconnect publishes each record once. Back-fill records are published as a batch whose
//! deliveries are awaited, so a back-fill request is acknowledged only once its records are
//! durable in Kafka.

use crate::metrics::CollectorMetrics;
use futures::future::join_all;
use kit::contract::topics;
use kit::kafka::KafkaContext;
use kit::Telemetry;
use market::{AggTrade, Kline};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// A delivery to watch: topic and future.
type Pending = (&'static str, DeliveryFuture);

pub struct Publisher {
    producer: FutureProducer<KafkaContext>,
    telemetry: Telemetry,
    metrics: CollectorMetrics,
    last_agg: Mutex<HashMap<String, u64>>,
    last_kline: Mutex<HashMap<String, i64>>,
    pending: mpsc::Sender<Pending>,
    /// Partition counts per topic, learned before the first record (see `set_partitions`).
    partitions: std::sync::RwLock<HashMap<String, i32>>,
}

impl Publisher {
    /// The publisher and the delivery watcher to run beside it.
    pub fn new(producer: FutureProducer<KafkaContext>, telemetry: Telemetry, metrics: CollectorMetrics) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(100_000);
        let watcher = watch_deliveries(rx, telemetry.clone(), metrics.clone());
        let me = Self { producer, telemetry, metrics, last_agg: Mutex::default(), last_kline: Mutex::default(), pending: tx, partitions: Default::default() };
        (me, watcher)
    }

    /// Adopts the topics' partition counts; records are then sent to `partition_of(key)`.
    pub fn set_partitions(&self, counts: HashMap<String, i32>) {
        *self.partitions.write().unwrap_or_else(|p| p.into_inner()) = counts;
    }

    fn partition(&self, topic: &str, key: &str) -> Option<i32> {
        let counts = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        counts.get(topic).map(|n| kit::kafka::partition_of(key, *n))
    }

    /// Publishes a streamed trade unless an equal or newer id was already published.
    pub async fn stream_agg(&self, t: &AggTrade) -> bool {
        if !newer(&self.last_agg, &t.symbol, t.agg_id) {
            return false;
        }
        self.enqueue(topics::AGGTRADES, &t.symbol, t).await
    }

    /// Publishes a streamed closed kline unless it was already published.
    pub async fn stream_kline(&self, k: &Kline) -> bool {
        if !newer(&self.last_kline, &k.symbol, k.open_time_ms) {
            return false;
        }
        self.enqueue(topics::KLINES, &k.symbol, k).await
    }

    /// Enqueues one record; the watcher counts its delivery.
    pub async fn enqueue<T: Serialize>(&self, topic: &'static str, key: &str, record: &T) -> bool {
        match self.send(topic, key, record).await {
            Some(future) => self.pending.send((topic, future)).await.is_ok(),
            None => false,
        }
    }

    /// Publishes every record and waits for all deliveries; the error names the first failure.
    pub async fn publish_all<T: Serialize>(&self, topic: &'static str, key: &str, records: &[T]) -> Result<(), KafkaError> {
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            futures.push(self.send(topic, key, r).await.ok_or(KafkaError::Canceled)?);
        }
        for delivery in join_all(futures).await {
            match delivery {
                Ok(Ok(_)) => self.metrics.published.with_label_values(&[topic]).inc(),
                Ok(Err((err, _))) => return Err(err),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }

    /// Serializes and hands one record to librdkafka, waiting while its queue is full.
    async fn send<T: Serialize>(&self, topic: &'static str, key: &str, record: &T) -> Option<DeliveryFuture> {
        let payload = match serde_json::to_vec(record) {
            Ok(p) => p,
            Err(err) => {
                self.telemetry.error("serialize", &err);
                return None;
            }
        };
        let partition = self.partition(topic, key);
        loop {
            let mut record = FutureRecord::to(topic).key(key).payload(&payload);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            match self.producer.send_result(record) {
                Ok(future) => return Some(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => tokio::time::sleep(Duration::from_millis(5)).await,
                Err((err, _)) => {
                    self.telemetry.error("kafka_publish", &err);
                    return None;
                }
            }
        }
    }
}

/// Records `value` as the newest for `symbol` if it is newer than what was published.
fn newer<T: PartialOrd + Copy>(last: &Mutex<HashMap<String, T>>, symbol: &str, value: T) -> bool {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    match last.get(symbol) {
        Some(seen) if *seen >= value => false,
        _ => {
            last.insert(symbol.to_string(), value);
            true
        }
    }
}

async fn watch_deliveries(mut rx: mpsc::Receiver<Pending>, telemetry: Telemetry, metrics: CollectorMetrics) {
    while let Some((topic, future)) = rx.recv().await {
        match future.await {
            Ok(Ok(_)) => metrics.published.with_label_values(&[topic]).inc(),
            Ok(Err((err, _))) => telemetry.error("kafka_publish", &err),
            Err(_) => telemetry.error("kafka_publish", &"delivery canceled"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keeps_only_newer_values_per_symbol() {
        let last = Mutex::new(HashMap::new());
        assert!(newer(&last, "BTCUSDT", 5u64));
        assert!(!newer(&last, "BTCUSDT", 5u64));
        assert!(!newer(&last, "BTCUSDT", 4u64));
        assert!(newer(&last, "ETHUSDT", 1u64));
        assert!(newer(&last, "BTCUSDT", 6u64));
    }
}
