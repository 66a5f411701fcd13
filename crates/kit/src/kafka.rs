//! Kafka clients configured once for every service: an idempotent producer, an
//! at-least-once consumer (offsets stored only after a record is handled), topic creation,
//! a readiness probe, and a client context that turns librdkafka statistics into
//! `kafka_consumer_lag{topic,partition}` and librdkafka errors into `nghenhan_errors_total`.

use crate::contract::{metrics as names, topics};
use crate::http::Probe;
use crate::{KitError, Telemetry};
use prometheus::{IntGaugeVec, Opts};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often consumers refresh topic metadata (librdkafka's default: 5 minutes).
const CONSUMER_METADATA_REFRESH_MS: &str = "10000";

/// librdkafka statistics period; consumer lag is refreshed this often.
const STATS_INTERVAL_MS: &str = "5000";

/// The context of every client: exports statistics and counts client errors.
#[derive(Clone)]
pub struct KafkaContext {
    telemetry: Telemetry,
    consumer_lag: IntGaugeVec,
}

impl KafkaContext {
    /// Registers the Kafka metrics in the service's registry.
    pub fn new(telemetry: &Telemetry) -> Result<Self, KitError> {
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                names::KAFKA_CONSUMER_LAG,
                "Messages between the committed position and the end of each partition.",
            ),
            &["topic", "partition"],
        )?;
        telemetry
            .registry()
            .register(Box::new(consumer_lag.clone()))?;
        Ok(Self {
            telemetry: telemetry.clone(),
            consumer_lag,
        })
    }

    /// Applies one statistics report (also called directly by tests).
    pub fn record_stats(&self, stats: &Statistics) {
        for (topic, t) in &stats.topics {
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition; lag -1 means unknown.
                if *partition < 0 || p.consumer_lag < 0 {
                    continue;
                }
                let partition = partition.to_string();
                self.consumer_lag
                    .with_label_values(&[topic, &partition])
                    .set(p.consumer_lag);
            }
        }
    }
}

impl ClientContext for KafkaContext {
    fn stats(&self, statistics: Statistics) {
        self.record_stats(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.telemetry.error(
            crate::contract::ErrorKind::Kafka,
            &format!("{error}: {reason}"),
        );
    }
}

impl ConsumerContext for KafkaContext {}

fn base_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        .set("statistics.interval.ms", STATS_INTERVAL_MS);
    config
}

/// An idempotent producer (acks=all, ordered retries) with LZ4 batches.
pub fn producer(
    brokers: &str,
    client_id: &str,
    ctx: KafkaContext,
) -> Result<FutureProducer<KafkaContext>, KitError> {
    Ok(producer_config(brokers, client_id).create_with_context(ctx)?)
}

/// [`producer`] whose local queue holds at most `max_messages` records
/// (`queue.buffering.max.messages`; librdkafka's default is 100 000). A caller that must
/// never wait (the collector's WebSocket path) sees `QueueFull` sooner and drops instead
/// of buffering; tests use a tiny queue to force it.
pub fn producer_with_queue(
    brokers: &str,
    client_id: &str,
    ctx: KafkaContext,
    max_messages: u32,
) -> Result<FutureProducer<KafkaContext>, KitError> {
    let mut config = producer_config(brokers, client_id);
    config.set(
        "queue.buffering.max.messages",
        max_messages.max(1).to_string(),
    );
    Ok(config.create_with_context(ctx)?)
}

fn producer_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut config = base_config(brokers, client_id);
    config
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    config
}

/// A consumer in `group` that never stores an offset by itself: call `store_offset` after
/// the record is durably handled; stored offsets are committed in the background.
pub fn consumer(
    brokers: &str,
    client_id: &str,
    group: &str,
    reset: &str,
    ctx: KafkaContext,
) -> Result<StreamConsumer<KafkaContext>, KitError> {
    let consumer = base_config(brokers, client_id)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", reset)
        .set("session.timeout.ms", "10000")
        // A subscription that races topic creation (a fresh broker: services create the
        // topics as they start) matches nothing until the next metadata refresh; at
        // librdkafka's default of 5 minutes a fresh stack stored nothing for 5 minutes.
        .set(
            "topic.metadata.refresh.interval.ms",
            CONSUMER_METADATA_REFRESH_MS,
        )
        .create_with_context(ctx)?;
    Ok(consumer)
}

/// Stores `msg`'s offset for the next background commit, once it is durably handled.
/// librdkafka refuses this for a partition a rebalance revoked meanwhile; its new owner
/// reads the message again (at-least-once, and every consumer here is idempotent), so a
/// refusal is logged and counted under `kafka_offset_store`, never fatal.
pub fn store_offset(
    consumer: &StreamConsumer<KafkaContext>,
    msg: &BorrowedMessage<'_>,
    telemetry: &Telemetry,
) {
    use rdkafka::consumer::Consumer;
    if let Err(err) = consumer.store_offset_from_message(msg) {
        let what = format!(
            "{}[{}]@{}: {err}",
            msg.topic(),
            msg.partition(),
            msg.offset()
        );
        telemetry.error(crate::contract::ErrorKind::KafkaOffsetStore, &what);
    }
}

/// Partitions per topic: market data is keyed by symbol, platform events by service.
pub fn partitions_for(topic: &str) -> i32 {
    if topic.ends_with(".dlq") {
        1
    } else if topic.starts_with("platform.") {
        3
    } else {
        6
    }
}

/// Refuses `min.insync.replicas` above the replication factor: no write could ever be
/// acknowledged.
pub fn check_replication(replication: i32, min_insync: i32) -> Result<(), KitError> {
    if min_insync > replication {
        return Err(KitError::Replication {
            replication,
            min_insync,
        });
    }
    Ok(())
}

/// Creates every contract topic and its dead-letter topic with `replication` replicas and
/// `min.insync.replicas` = `min_insync`; existing topics are left alone.
pub async fn ensure_topics(
    brokers: &str,
    replication: i32,
    min_insync: i32,
) -> Result<(), KitError> {
    check_replication(replication, min_insync)?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let names: Vec<String> = topics::ALL
        .iter()
        .flat_map(|t| [t.to_string(), topics::dlq(t)])
        .collect();
    let new: Vec<NewTopic> = names
        .iter()
        .map(|t| NewTopic::new(t, partitions_for(t), TopicReplication::Fixed(replication)))
        .collect();
    let min_insync = min_insync.to_string();
    let new: Vec<NewTopic> = new
        .into_iter()
        .map(|t| t.set("min.insync.replicas", &min_insync))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KitError::TopicCreate {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// A readiness probe that asks the brokers for metadata through `producer`'s client.
pub fn probe(producer: FutureProducer<KafkaContext>) -> Probe {
    Arc::new(move || {
        let producer = producer.clone();
        Box::pin(async move {
            let fetch = move || {
                producer
                    .client()
                    .fetch_metadata(None, Duration::from_secs(2))
                    .map(|_| ())
            };
            tokio::task::spawn_blocking(fetch)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        })
    })
}

/// The partition count of each of `topics`, asking the brokers (retrying while they are
/// away) until every topic has partitions. Producers that choose partitions themselves
/// (see [`partition_of`]) never leave records in librdkafka's unassigned queue, where the
/// first records of a key could be sent after later ones.
pub async fn partition_counts(
    producer: &FutureProducer<KafkaContext>,
    topics: &[&str],
    shutdown: &CancellationToken,
) -> HashMap<String, i32> {
    let mut counts = HashMap::new();
    for topic in topics {
        let fetch = || {
            let (p, t) = (producer.clone(), topic.to_string());
            async move {
                let fetched = tokio::task::spawn_blocking(move || {
                    p.client().fetch_metadata(Some(&t), Duration::from_secs(5))
                })
                .await;
                match fetched {
                    Ok(Ok(m)) => match m.topics().first().map_or(0, |x| x.partitions().len()) {
                        0 => Err("no partitions yet".to_string()),
                        n => Ok(i32::try_from(n).unwrap_or(1)),
                    },
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let waiting =
            |e: String| tracing::debug!(topic, error = %e, "waiting for the topic's partitions");
        match crate::retry::retry(
            shutdown,
            crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            fetch,
            waiting,
        )
        .await
        {
            Some(n) => {
                counts.insert(topic.to_string(), n);
            }
            None => return counts,
        }
    }
    counts
}

/// The partition of `key` among `count`: a stable FNV-1a hash, so one symbol's records
/// always share a partition (and so keep their order).
pub fn partition_of(key: &str, count: i32) -> i32 {
    let hash = key.bytes().fold(0x811C_9DC5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    i32::try_from(hash % u32::try_from(count.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// Sends a message that could not be read to `<topic>.dlq`, unchanged (key and payload),
/// with the reason and its origin in headers, retrying until it is written or `shutdown`.
/// Returns whether it was written, so the caller stores the offset only then.
pub async fn dead_letter<M: Message>(
    producer: &FutureProducer<KafkaContext>,
    msg: &M,
    error: &str,
    shutdown: &CancellationToken,
) -> bool {
    let dlq = topics::dlq(msg.topic());
    let (partition, offset) = (msg.partition().to_string(), msg.offset().to_string());
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "x-error",
            value: Some(error),
        })
        .insert(Header {
            key: "x-source-topic",
            value: Some(msg.topic()),
        })
        .insert(Header {
            key: "x-source-partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "x-source-offset",
            value: Some(&offset),
        });
    let write = || {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&dlq).headers(headers.clone());
        if let Some(key) = msg.key() {
            record = record.key(key);
        }
        if let Some(payload) = msg.payload() {
            record = record.payload(payload);
        }
        producer.send(record, Duration::from_secs(5))
    };
    let failed = |(err, _): (KafkaError, _)| tracing::warn!(topic = %dlq, error = %err, "dead-letter write failed; retrying");
    crate::retry::retry(
        shutdown,
        crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        write,
        failed,
    )
    .await
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_become_lag_gauges_skipping_unknown_partitions() {
        let telemetry = Telemetry::new("sync-verifier", "test").expect("telemetry");
        let ctx = KafkaContext::new(&telemetry).expect("ctx");
        let raw = r#"{"name":"c","client_id":"c","type":"consumer","ts":1,"time":1,"age":1,
            "replyq":0,"msg_cnt":0,"msg_size":0,"msg_max":0,"msg_size_max":0,"simple_cnt":0,
            "metadata_cache_cnt":0,"brokers":{},"topics":{"market.klines.v1":{"topic":"market.klines.v1",
            "age":1,"metadata_age":1,"batchsize":{"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0},
            "batchcnt":{"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0},
            "partitions":{"0":{"partition":0,"broker":1,"leader":1,"desired":true,"unknown":false,
            "msgq_cnt":0,"msgq_bytes":0,"xmit_msgq_cnt":0,"xmit_msgq_bytes":0,"fetchq_cnt":0,
            "fetchq_size":0,"fetch_state":"active","query_offset":0,"next_offset":0,"app_offset":40,
            "stored_offset":40,"committed_offset":40,"eof_offset":0,"lo_offset":0,"hi_offset":100,
            "ls_offset":100,"consumer_lag":60,"consumer_lag_stored":60,"txmsgs":0,"txbytes":0,"rxmsgs":0,"rxbytes":0,
            "msgs":0,"rx_ver_drops":0,"msgs_inflight":0,"next_ack_seq":0,"next_err_seq":0,"acked_msgid":0},
            "-1":{"partition":-1,"broker":-1,"leader":-1,"desired":false,"unknown":false,
            "msgq_cnt":0,"msgq_bytes":0,"xmit_msgq_cnt":0,"xmit_msgq_bytes":0,"fetchq_cnt":0,
            "fetchq_size":0,"fetch_state":"none","query_offset":0,"next_offset":0,"app_offset":0,
            "stored_offset":0,"committed_offset":0,"eof_offset":0,"lo_offset":0,"hi_offset":0,
            "ls_offset":0,"consumer_lag":-1,"consumer_lag_stored":-1,"txmsgs":0,"txbytes":0,"rxmsgs":0,"rxbytes":0,
            "msgs":0,"rx_ver_drops":0,"msgs_inflight":0,"next_ack_seq":0,"next_err_seq":0,"acked_msgid":0}}}},
            "tx":0,"tx_bytes":0,"rx":0,"rx_bytes":0,"txmsgs":0,"txmsg_bytes":0,"rxmsgs":0,"rxmsg_bytes":0}"#;
        let stats: Statistics = serde_json::from_str(raw).expect("statistics parse");
        ctx.record_stats(&stats);
        let text = telemetry.encode().expect("encode");
        assert!(
            text.contains(r#"kafka_consumer_lag{partition="0",topic="market.klines.v1"} 60"#),
            "{text}"
        );
        assert!(!text.contains(r#"partition="-1""#));
    }

    #[test]
    fn a_key_always_maps_to_the_same_partition_in_range() {
        for key in ["BTCUSDT", "ETHUSDT", ""] {
            let p = partition_of(key, 6);
            assert!((0..6).contains(&p));
            assert_eq!(p, partition_of(key, 6));
        }
        assert_eq!(partition_of("BTCUSDT", 1), 0);
    }

    #[test]
    fn partition_counts_follow_topic_kind() {
        assert_eq!(partitions_for(topics::AGGTRADES), 6);
        assert_eq!(partitions_for(topics::HEARTBEATS), 3);
        assert_eq!(partitions_for(&topics::dlq(topics::AGGTRADES)), 1);
    }
}
