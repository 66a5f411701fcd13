//! The pipeline on a three-broker Kafka cluster (deploy/native/cluster.sh: KRaft, topics
//! with three replicas and `min.insync.replicas` 2): 400 symbols flow while one broker is
//! killed (SIGKILL) and later started again. Nothing may be lost against the simulator's
//! truth and no row stored twice. Slow and heavy: built only with the `cluster` feature,
//! which `make test-cluster` turns on and `make test` does not.

mod common;
use common::SEC;

fn cluster(args: &[&str]) {
    let status = std::process::Command::new(e2e::root().join("deploy/native/cluster.sh"))
        .args(args)
        .status()
        .expect("cluster.sh");
    assert!(status.success(), "cluster.sh {args:?}: {status}");
}

/// The replica count of each partition of `topic`.
fn replicas(brokers: &str, topic: &str) -> Vec<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("client");
    let metadata = client
        .fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        .expect("metadata");
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.replicas().len())
        .collect()
}

/// The cluster, stopped and removed however the test ends.
struct Cluster;

impl Drop for Cluster {
    fn drop(&mut self) {
        cluster(&["down"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_while_400_symbols_flow_loses_nothing() {
    cluster(&["up"]);
    let _cluster = Cluster;
    let kafka = [
        (
            "KAFKA_BROKERS",
            "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094",
        ),
        ("KAFKA_REPLICATION_FACTOR", "3"),
        ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
    ];
    let run = common::start("K", 400, &kafka, 1).await;
    let baseline = run.flowing().await;
    tokio::time::sleep(10 * SEC).await; // the market runs before the fault
    cluster(&["kill", "2"]);
    // gone longer than a producer keeps a record (message.timeout.ms, 30 s): without
    // replicas, the records of the partitions it led would be lost (and back-filled)
    tokio::time::sleep(40 * SEC).await;
    cluster(&["start", "2"]);
    tokio::time::sleep(10 * SEC).await; // and after it is back
    let compared = run.equals_truth_after(&baseline).await;
    assert!(
        compared > 200,
        "most symbols traded and were compared: {compared}"
    );
    // Nothing was healed by back-fill: the replicas kept every record through the failover.
    let (gaps, _) = run.ours("sync_gaps_detected_total").await;
    assert_eq!(gaps, 0.0, "no gap opened while a broker was down");
    let (_, streams) = run.ours("sync_gaps_open").await;
    assert!(
        streams > 200,
        "the verifier reports our streams ({streams})"
    );
    assert_eq!(
        replicas(kafka[0].1, kit::contract::topics::AGGTRADES),
        vec![3; 6]
    );
    run.finish().await;
}
