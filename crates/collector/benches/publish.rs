//! Normalise + publish rate of the collector against raw rdkafka produce of the same
//! payloads, measured in the same run against the same broker (KAFKA_BROKERS, default the
//! native stack's 127.0.0.1:9092). Prints both rates and their ratio.
//! Run: `make bench`.

use collector::metrics::CollectorMetrics;
use collector::publish::{DropReason, Publisher};
use kit::kafka::{self, KafkaContext};
use market::binance::{parse_frame, Frame};
use rdkafka::producer::{FutureRecord, Producer};
use std::time::{Duration, Instant};

const N: u64 = 100_000;
const TOPIC: &str = "bench.collector.v1";

fn frames() -> Vec<String> {
    (0..N)
        .map(|i| {
            format!(
                r#"{{"stream":"btcusdt@aggTrade","data":{{"e":"aggTrade","E":{t},"s":"BTCUSDT","a":{a},"p":"{p}.{f:08}","q":"0.{q:08}","f":{a2},"l":{a2},"T":{t},"m":{m},"M":true}}}}"#,
                t = 1_700_000_000_000u64 + i,
                a = 1_000_000 + i,
                a2 = 2_000_000 + i,
                p = 60_000 + i % 500,
                f = i % 100,
                q = 1_000 + i % 9_000,
                m = i % 2 == 0
            )
        })
        .collect()
}

fn flush(p: &rdkafka::producer::FutureProducer<KafkaContext>) {
    p.flush(Duration::from_secs(60)).expect("flush");
}

async fn create_topic(brokers: &str) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
    admin.create_topics(&[topic], &AdminOptions::new()).await?; // "already exists" is fine
    Ok(())
}

/// Counts deliveries that failed, so a rate of failures is never reported as speed.
fn delivered(telemetry: &kit::Telemetry) -> u64 {
    telemetry.error_count(kit::contract::ErrorKind::KafkaPublish)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let telemetry = kit::Telemetry::new("collector", "bench")?;
    let ctx = KafkaContext::new(&telemetry)?;
    let producer = kafka::producer(&brokers, "bench", ctx)?;
    let frames = frames();
    create_topic(&brokers).await?;

    // Baseline: the already-normalised JSON, produced raw with the same producer settings.
    let payloads: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| match parse_frame(f, 0) {
            Ok(Frame::AggTrade(t)) => serde_json::to_vec(&t).expect("json"),
            other => panic!("bench frame did not parse: {other:?}"),
        })
        .collect();
    let start = Instant::now();
    let mut futures = Vec::with_capacity(payloads.len());
    for p in &payloads {
        loop {
            match producer.send_result(FutureRecord::to(TOPIC).key("BTCUSDT").payload(p)) {
                Ok(f) => break futures.push(f),
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }
    flush(&producer);
    let failed = futures::future::join_all(futures)
        .await
        .iter()
        .filter(|r| !matches!(r, Ok(Ok(_))))
        .count();
    assert_eq!(
        failed, 0,
        "raw produce failed {failed} times: is Kafka up (make up)?"
    );
    let raw = N as f64 / start.elapsed().as_secs_f64();

    // The collector's path: parse, validate, dedupe, serialize, publish.
    let metrics = CollectorMetrics::register(telemetry.registry())?;
    let (publisher, watcher) = Publisher::new(producer.clone(), telemetry.clone(), metrics);
    let watch = tokio::spawn(watcher);
    let start = Instant::now();
    for f in &frames {
        if let Ok(Frame::AggTrade(t)) = parse_frame(f, 0) {
            // Wait for queue space as the raw baseline does (the stream path drops instead).
            while let Err(DropReason::QueueFull | DropReason::WatchFull) =
                publisher.try_enqueue(TOPIC, "BTCUSDT", &t)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    flush(&producer);
    let ours = N as f64 / start.elapsed().as_secs_f64();
    drop(publisher);
    let _ = watch.await;
    assert_eq!(
        delivered(&telemetry),
        0,
        "the collector's deliveries failed"
    );

    println!("collector publish bench ({N} aggTrade frames, broker {brokers})");
    println!("  raw rdkafka produce of normalised payloads  {raw:>10.0} msg/s");
    println!("  collector normalise + publish               {ours:>10.0} msg/s");
    println!(
        "  ratio collector/raw                          {:.3}",
        ours / raw
    );
    Ok(())
}
