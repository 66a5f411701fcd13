//! Publishing records to Kafka (key = symbol) through the kit's idempotent producer.
//!
//! Stream records are handed to librdkafka without ever waiting: the WebSocket read loop
//! calls this, and a read loop that waits on Kafka stops answering pings, so the exchange
//! drops the connection and far more is lost. When the producer queue (or the delivery
//! watcher's channel) is full the record is dropped, counted in
//! `collector_records_dropped_total{reason}` and logged at most every [`DROP_LOG_EVERY`];
//! the gap it leaves is found by sync-verifier and healed by back-fill. Stream records are
//! deduplicated, so the overlap of two connections during a planned reconnect publishes
//! each record once; a dropped record is not remembered as published.
//!
//! Back-fill records are published as a batch that waits for queue space and for its
//! deliveries, so a back-fill request is acknowledged only once its records are durable.

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
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A delivery to watch: topic and future.
type Pending = (&'static str, DeliveryFuture);

/// Drops are logged at most this often (each line says how many there were).
pub const DROP_LOG_EVERY: Duration = Duration::from_secs(10);
/// Deliveries the watcher may have outstanding before stream records are dropped.
const WATCH_CAPACITY: usize = 100_000;

/// Why a stream record was not published: the `reason` label of
/// `collector_records_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// librdkafka's queue (`queue.buffering.max.messages`) was full.
    QueueFull,
    /// The delivery watcher's channel was full.
    WatchFull,
    /// librdkafka refused the record for another reason.
    ProduceError,
    /// The record could not be serialized.
    Serialize,
    /// Handed to librdkafka, but its delivery failed (e.g. the brokers were away too long).
    DeliveryFailed,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        Self::QueueFull,
        Self::WatchFull,
        Self::ProduceError,
        Self::Serialize,
        Self::DeliveryFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::WatchFull => "watch_full",
            Self::ProduceError => "produce_error",
            Self::Serialize => "serialize",
            Self::DeliveryFailed => "delivery_failed",
        }
    }
}

pub struct Publisher {
    producer: FutureProducer<KafkaContext>,
    telemetry: Telemetry,
    metrics: CollectorMetrics,
    last_agg: Mutex<HashMap<String, u64>>,
    last_kline: Mutex<HashMap<String, i64>>,
    pending: mpsc::Sender<Pending>,
    drops: DropLog,
    /// Partition counts per topic, learned before the first record (see `set_partitions`).
    partitions: std::sync::RwLock<HashMap<String, i32>>,
}

impl Publisher {
    /// The publisher and the delivery watcher to run beside it.
    pub fn new(
        producer: FutureProducer<KafkaContext>,
        telemetry: Telemetry,
        metrics: CollectorMetrics,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(WATCH_CAPACITY);
        let drops = DropLog::new(metrics.clone());
        let watcher = watch_deliveries(rx, telemetry.clone(), metrics.clone(), drops.clone());
        let publisher = Self {
            producer,
            telemetry,
            metrics,
            last_agg: Mutex::default(),
            last_kline: Mutex::default(),
            pending: tx,
            drops,
            partitions: Default::default(),
        };
        (publisher, watcher)
    }

    /// Adopts the topics' partition counts; records are then sent to `partition_of(key)`.
    pub fn set_partitions(&self, counts: HashMap<String, i32>) {
        *self.partitions.write().unwrap_or_else(|p| p.into_inner()) = counts;
    }

    fn partition(&self, topic: &str, key: &str) -> Option<i32> {
        let counts = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        counts.get(topic).map(|n| kit::kafka::partition_of(key, *n))
    }

    /// Publishes a streamed trade unless an equal or newer id was already published;
    /// never waits. Whether it was handed to the producer.
    pub fn stream_agg(&self, t: &AggTrade) -> bool {
        self.stream_once(&self.last_agg, &t.symbol, t.agg_id, topics::AGGTRADES, t)
    }

    /// Publishes a streamed closed kline unless it was already published; never waits.
    pub fn stream_kline(&self, k: &Kline) -> bool {
        self.stream_once(
            &self.last_kline,
            &k.symbol,
            k.open_time_ms,
            topics::KLINES,
            k,
        )
    }

    fn stream_once<V: PartialOrd + Copy, T: Serialize>(
        &self,
        last: &Mutex<HashMap<String, V>>,
        symbol: &str,
        value: V,
        topic: &'static str,
        record: &T,
    ) -> bool {
        let Some(previous) = claim(last, symbol, value) else {
            return false;
        };
        let sent = self.enqueue(topic, symbol, record);
        if !sent {
            release(last, symbol, value, previous);
        }
        sent
    }

    /// Hands one record to the producer without waiting (the watcher counts its
    /// delivery); a record that cannot be queued now is dropped and counted.
    pub fn enqueue<T: Serialize>(&self, topic: &'static str, key: &str, record: &T) -> bool {
        match self.try_enqueue(topic, key, record) {
            Ok(()) => true,
            Err(reason) => {
                self.drops.note(reason);
                false
            }
        }
    }

    /// Like [`enqueue`](Self::enqueue), but says why a record was not queued instead of
    /// counting it (for callers that retry, such as the bench).
    pub fn try_enqueue<T: Serialize>(
        &self,
        topic: &'static str,
        key: &str,
        record: &T,
    ) -> Result<(), DropReason> {
        let permit = self
            .pending
            .try_reserve()
            .map_err(|_| DropReason::WatchFull)?;
        let payload = self.payload(record).ok_or(DropReason::Serialize)?;
        match self.producer.send_result(self.record(topic, key, &payload)) {
            Ok(future) => {
                permit.send((topic, future));
                Ok(())
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(DropReason::QueueFull)
            }
            Err((err, _)) => {
                self.telemetry
                    .error(kit::contract::ErrorKind::KafkaPublish, &err);
                Err(DropReason::ProduceError)
            }
        }
    }

    /// Publishes every record and waits for all deliveries; the error names the first
    /// failure. Waits for queue space: back-fill is not on the WebSocket read path.
    pub async fn publish_all<T: Serialize>(
        &self,
        topic: &'static str,
        key: &str,
        records: &[T],
    ) -> Result<(), KafkaError> {
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            futures.push(
                self.send_waiting(topic, key, r)
                    .await
                    .ok_or(KafkaError::Canceled)?,
            );
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

    /// Hands one record to librdkafka, waiting while its queue is full.
    async fn send_waiting<T: Serialize>(
        &self,
        topic: &'static str,
        key: &str,
        record: &T,
    ) -> Option<DeliveryFuture> {
        let payload = self.payload(record)?;
        loop {
            match self.producer.send_result(self.record(topic, key, &payload)) {
                Ok(future) => return Some(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err((err, _)) => {
                    self.telemetry
                        .error(kit::contract::ErrorKind::KafkaPublish, &err);
                    return None;
                }
            }
        }
    }

    fn payload<T: Serialize>(&self, record: &T) -> Option<Vec<u8>> {
        serde_json::to_vec(record)
            .map_err(|err| {
                self.telemetry
                    .error(kit::contract::ErrorKind::Serialize, &err)
            })
            .ok()
    }

    fn record<'a>(
        &self,
        topic: &'a str,
        key: &'a str,
        payload: &'a [u8],
    ) -> FutureRecord<'a, str, [u8]> {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        match self.partition(topic, key) {
            Some(p) => record.partition(p),
            None => record,
        }
    }
}

/// Records `value` as the newest published for `symbol` if it is newer than what was
/// published; `Some(previous)` then, to [`release`] the claim if the record is dropped.
fn claim<T: PartialOrd + Copy>(
    last: &Mutex<HashMap<String, T>>,
    symbol: &str,
    value: T,
) -> Option<Option<T>> {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    match last.get(symbol) {
        Some(seen) if *seen >= value => None,
        seen => {
            let previous = seen.copied();
            last.insert(symbol.to_string(), value);
            Some(previous)
        }
    }
}

/// Undoes a [`claim`] of `value` whose record was dropped, unless a newer one was claimed
/// since: the record may then still be published (e.g. by the other connection of an
/// overlap), and nothing newer is held back by it.
fn release<T: PartialEq + Copy>(
    last: &Mutex<HashMap<String, T>>,
    symbol: &str,
    value: T,
    previous: Option<T>,
) {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    if last.get(symbol) != Some(&value) {
        return;
    }
    match previous {
        Some(p) => last.insert(symbol.to_string(), p),
        None => last.remove(symbol),
    };
}

/// Counts every dropped record; logs at most once per [`DROP_LOG_EVERY`].
#[derive(Clone)]
struct DropLog {
    metrics: CollectorMetrics,
    since_log: std::sync::Arc<Mutex<(Option<Instant>, u64)>>,
}

impl DropLog {
    fn new(metrics: CollectorMetrics) -> Self {
        Self {
            metrics,
            since_log: Default::default(),
        }
    }

    fn note(&self, reason: DropReason) {
        self.metrics
            .records_dropped
            .with_label_values(&[reason.label()])
            .inc();
        let mut s = self.since_log.lock().unwrap_or_else(|p| p.into_inner());
        s.1 += 1;
        if s.0.is_none_or(|at| at.elapsed() >= DROP_LOG_EVERY) {
            tracing::warn!(
                reason = reason.label(),
                dropped = s.1,
                "stream records dropped rather than block the WebSocket read; back-fill heals the gap"
            );
            *s = (Some(Instant::now()), 0);
        }
    }
}

async fn watch_deliveries(
    mut rx: mpsc::Receiver<Pending>,
    telemetry: Telemetry,
    metrics: CollectorMetrics,
    drops: DropLog,
) {
    while let Some((topic, future)) = rx.recv().await {
        match future.await {
            Ok(Ok(_)) => metrics.published.with_label_values(&[topic]).inc(),
            Ok(Err((err, _))) => {
                telemetry.error(kit::contract::ErrorKind::KafkaPublish, &err);
                drops.note(DropReason::DeliveryFailed);
            }
            Err(_) => {
                telemetry.error(kit::contract::ErrorKind::KafkaPublish, &"delivery canceled");
                drops.note(DropReason::DeliveryFailed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedupe_keeps_only_newer_values_per_symbol() {
        let last = Mutex::new(HashMap::new());
        assert_eq!(claim(&last, "BTCUSDT", 5u64), Some(None));
        assert_eq!(claim(&last, "BTCUSDT", 5u64), None);
        assert_eq!(claim(&last, "BTCUSDT", 4u64), None);
        assert_eq!(claim(&last, "ETHUSDT", 1u64), Some(None));
        assert_eq!(claim(&last, "BTCUSDT", 6u64), Some(Some(5)));
    }

    #[test]
    fn a_released_claim_lets_the_record_through_again_but_not_older_ones() {
        let last = Mutex::new(HashMap::new());
        claim(&last, "BTCUSDT", 5u64);
        let previous = claim(&last, "BTCUSDT", 6u64).expect("newer");
        release(&last, "BTCUSDT", 6, previous);
        assert_eq!(
            claim(&last, "BTCUSDT", 6u64),
            Some(Some(5)),
            "6 may be published by the other connection"
        );
        let previous = claim(&last, "BTCUSDT", 7u64).expect("newer");
        claim(&last, "BTCUSDT", 8u64);
        release(&last, "BTCUSDT", 7, previous);
        assert_eq!(
            claim(&last, "BTCUSDT", 8u64),
            None,
            "a release never undoes a newer claim"
        );
    }

    fn trade(id: u64) -> AggTrade {
        let frame = format!(
            r#"{{"e":"aggTrade","E":1,"s":"BTCUSDT","a":{id},"p":"1.0","q":"2.0","f":{id},"l":{id},"T":1,"m":true,"M":true}}"#
        );
        match market::binance::parse_frame(&frame, 1) {
            Ok(market::binance::Frame::AggTrade(t)) => t,
            other => panic!("not a trade: {other:?}"),
        }
    }

    /// A publisher whose producer talks to no broker, so nothing ever leaves its queue of
    /// `queue` records; the watcher is not run, so its channel of `watch` fills too.
    fn stuck(queue: u32, watch: usize) -> (Publisher, Telemetry, mpsc::Receiver<Pending>) {
        let telemetry = Telemetry::new("collector", "test").expect("telemetry");
        let ctx = KafkaContext::new(&telemetry).expect("ctx");
        let producer =
            kit::kafka::producer_with_queue("127.0.0.1:1", "test", ctx, queue).expect("producer");
        let metrics = CollectorMetrics::register(telemetry.registry()).expect("metrics");
        let (mut publisher, _watcher) = Publisher::new(producer, telemetry.clone(), metrics);
        let (tx, rx) = mpsc::channel(watch);
        publisher.pending = tx;
        (publisher, telemetry, rx)
    }

    fn dropped(telemetry: &Telemetry, reason: DropReason) -> u64 {
        let text = telemetry.encode().expect("encode");
        let line = format!(
            "collector_records_dropped_total{{reason=\"{}\"}} ",
            reason.label()
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&line)?.parse().ok())
            .expect("the reason is exported")
    }

    #[tokio::test]
    async fn a_full_producer_queue_drops_at_once_and_counts() {
        let (publisher, telemetry, _watch) = stuck(2, 1000);
        for reason in DropReason::ALL {
            assert_eq!(
                dropped(&telemetry, reason),
                0,
                "{reason:?} is exported at zero"
            );
        }
        let started = Instant::now();
        let sent: Vec<bool> = (1..=5).map(|id| publisher.stream_agg(&trade(id))).collect();
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "no waiting: {:?}",
            started.elapsed()
        );
        assert_eq!(sent, [true, true, false, false, false]);
        assert_eq!(dropped(&telemetry, DropReason::QueueFull), 3);
        assert_eq!(
            *publisher
                .last_agg
                .lock()
                .expect("lock")
                .get("BTCUSDT")
                .expect("claimed"),
            2,
            "dropped ids are not remembered"
        );
    }

    #[tokio::test]
    async fn a_full_delivery_watch_drops_at_once_and_counts() {
        let (publisher, telemetry, _watch) = stuck(1000, 1);
        assert!(publisher.stream_agg(&trade(1)));
        assert!(!publisher.stream_agg(&trade(2)));
        assert!(!publisher.enqueue(topics::HEADS, "BTCUSDT", &"head"));
        assert_eq!(dropped(&telemetry, DropReason::WatchFull), 2);
        assert_eq!(dropped(&telemetry, DropReason::QueueFull), 0);
    }
}
