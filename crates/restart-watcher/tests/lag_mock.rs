//! The lag measurement's broker calls against librdkafka's in-process mock cluster (plain
//! `cargo test`; the ignored `consumer_lag` test does the same against the real Kafka):
//! committed offsets, watermarks and metadata are read through the real client code, a
//! partition the group never committed on counts from the log start, a failed offset read
//! is counted and keeps the last values, and a group whose offsets are gone is forgotten.

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use restart_watcher::lag::{Lag, LagSettings};
use std::time::Duration;

const TOPIC: &str = "market.aggtrades.v1";

fn produce(brokers: &str, counts: &[(i32, usize)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for &(partition, n) in counts {
        for _ in 0..n {
            let record = BaseRecord::to(TOPIC)
                .partition(partition)
                .key("k")
                .payload("v");
            producer.send(record).map_err(|(e, _)| e).expect("queued");
        }
    }
    producer.flush(Duration::from_secs(10)).expect("delivered");
}

fn commit(brokers: &str, group: &str, offsets: &[(i32, i64)]) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(TOPIC, p, Offset::Offset(o))
            .expect("offset");
    }
    consumer.commit(&tpl, CommitMode::Sync).expect("committed");
}

#[test]
fn committed_offsets_against_log_ends_through_the_real_client() {
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, 3, 1).expect("topic");
    let brokers = mock.bootstrap_servers();
    produce(&brokers, &[(0, 5), (1, 3), (2, 2)]);
    commit(&brokers, "sync-verifier", &[(0, 5), (1, 1)]);

    let telemetry = kit::Telemetry::new("restart-watcher", "test").expect("telemetry");
    let context = kit::kafka::KafkaContext::new(&telemetry).expect("context");
    let groups = ["sync-verifier".to_string(), "never-existed".to_string()];
    let settings = LagSettings::new(&groups, 1, 10, 0);
    let mut lag = Lag::new(settings, &brokers, "test", context, telemetry.clone()).expect("lag");

    lag.measure(1_000).expect("a round");
    let value = |lag: &Lag, p| lag.book().value("sync-verifier", TOPIC, p);
    assert_eq!(
        (value(&lag, 0), value(&lag, 1), value(&lag, 2)),
        (Some(0), Some(2), Some(2)),
        "caught up; 2 behind; never committed: from the log start"
    );
    assert_eq!(
        lag.book().groups(),
        ["sync-verifier"],
        "no series for a group that never committed"
    );

    produce(&brokers, &[(0, 4)]);
    lag.measure(2_000).expect("a round");
    assert_eq!(value(&lag, 0), Some(4), "grows with what is produced");

    mock.request_errors(
        RDKafkaApiKey::OffsetFetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 4],
    );
    produce(&brokers, &[(0, 1)]);
    lag.measure(3_000)
        .expect("the round goes on without the group");
    assert!(
        telemetry.error_count(kit::contract::ErrorKind::KafkaLagOffsets) >= 1,
        "counted"
    );
    assert_eq!(value(&lag, 0), Some(4), "the last value is kept");
    mock.clear_request_errors(RDKafkaApiKey::OffsetFetch);
    lag.measure(4_000).expect("a round");
    assert_eq!(value(&lag, 0), Some(5));
}
