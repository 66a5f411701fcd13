//! Consumer lag measured from outside the consumers, against the native stack's Kafka
//! (127.0.0.1:9092): a group of this test's own reads a topic of its own, commits and
//! stops; restart-watcher (the whole service, run in-process) then shows that group's lag
//! growing by exactly what is produced after it stopped, a partition the group never
//! committed on counted from the log start, and the group's series gone once the group
//! is deleted. Every wait is on a condition, with a deadline.

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const KAFKA: &str = "127.0.0.1:9092";
const PARTITIONS: i32 = 3;

fn admin() -> Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()?)
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))
}

async fn create_topic(topic: &str) -> Result<()> {
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for result in admin()?.create_topics(&[new], &options()).await? {
        result.map_err(|(t, code)| anyhow!("creating {t}: {code}"))?;
    }
    Ok(())
}

/// This test's names start with it, followed by `<pid>-<unix ms>`.
const PREFIX: &str = "restart-watcher-lag-test-";

/// Deletes the topics and groups an earlier run of this test left behind when it failed
/// before its own clean-up (those more than 10 minutes old, so a run beside this one keeps
/// its own).
async fn remove_leftovers() -> Result<()> {
    let old = |name: &str| {
        name.strip_prefix(PREFIX)
            .and_then(|rest| rest.rsplit('-').next()?.parse::<i64>().ok())
            .is_some_and(|ms| kit::time::now_ms().saturating_sub(ms) > 600_000)
    };
    let lister: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()?;
    let (topics, groups) = tokio::task::spawn_blocking(move || -> Result<_> {
        let metadata = lister.fetch_metadata(None, Duration::from_secs(10))?;
        let topics: Vec<String> = metadata.topics().iter().map(|t| t.name().into()).collect();
        let list = lister.fetch_group_list(None, Duration::from_secs(10))?;
        let groups: Vec<String> = list.groups().iter().map(|g| g.name().into()).collect();
        Ok((topics, groups))
    })
    .await??;
    let topics: Vec<&str> = topics
        .iter()
        .map(String::as_str)
        .filter(|t| old(t))
        .collect();
    let groups: Vec<&str> = groups
        .iter()
        .map(String::as_str)
        .filter(|g| old(g))
        .collect();
    let admin = admin()?;
    if !topics.is_empty() {
        admin.delete_topics(&topics, &options()).await?;
    }
    if !groups.is_empty() {
        admin.delete_groups(&groups, &options()).await?;
    }
    Ok(())
}

/// Produces `n` records to `partition`, each acknowledged before the next.
async fn produce(producer: &FutureProducer, topic: &str, partition: i32, n: usize) -> Result<()> {
    for i in 0..n {
        let payload = format!("record {i}");
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key("k")
            .payload(&payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| anyhow!("producing to {topic}[{partition}]: {e}"))?;
    }
    Ok(())
}

/// The group reads partitions 0 and 1 of `topic` (never 2) from the beginning until it has
/// `expected` records, commits where it stands, and stops (the client is closed).
fn consume_commit_and_stop(group: &str, topic: &str, expected: usize) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in [0, 1] {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut read = 0;
    while read < expected {
        ensure!(
            std::time::Instant::now() < deadline,
            "read {read} of {expected} records within 30 s"
        );
        if let Some(msg) = consumer.poll(Duration::from_millis(200)) {
            msg?;
            read += 1;
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    Ok(())
}

/// `kafka_consumer_group_lag` of `group` on `topic`, by partition, from an exposition.
fn lags(exposition: &str, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    let (g, t) = (format!("group=\"{group}\""), format!("topic=\"{topic}\""));
    exposition
        .lines()
        .filter(|l| l.starts_with("kafka_consumer_group_lag{") && l.contains(&g))
        .filter(|l| l.contains(&t))
        .filter_map(|l| {
            let p = l
                .split("partition=\"")
                .nth(1)?
                .split('"')
                .next()?
                .parse()
                .ok()?;
            let v = l.rsplit(' ').next()?.parse().ok()?;
            Some((p, v))
        })
        .collect()
}

/// Reads `url` until `done` holds for its body, at most `secs`; the last body on failure.
async fn until(
    client: &reqwest::Client,
    url: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Ok(response) = client.get(url).send().await {
            last = response.text().await.unwrap_or_default();
            if done(&last) {
                return Ok(last);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ours: Vec<&str> = last
        .lines()
        .filter(|l| l.contains("kafka_consumer_group_lag") || l.contains("kafka_lag"))
        .collect();
    bail!("{what} not within {secs} s; last lag lines: {ours:#?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the native stack's Kafka; `make test` runs it"]
async fn a_stopped_groups_lag_grows_by_exactly_what_is_produced_and_a_deleted_group_goes(
) -> Result<()> {
    remove_leftovers().await?;
    let tag = format!("{}-{}", std::process::id(), kit::time::now_ms());
    let topic = format!("{PREFIX}{tag}");
    let group = format!("{PREFIX}{tag}");
    let watcher_group = format!("{PREFIX}watcher-{tag}");
    create_topic(&topic).await?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .create()?;
    for (partition, n) in [(0, 5), (1, 3), (2, 2)] {
        produce(&producer, &topic, partition, n).await?;
    }
    let (g, t) = (group.clone(), topic.clone());
    tokio::task::spawn_blocking(move || consume_commit_and_stop(&g, &t, 8)).await??;

    // restart-watcher, measuring only this group, every second; its own heartbeat
    // consumer in a group of its own (never the stack's watcher's group).
    let vars = std::collections::HashMap::from([
        ("KAFKA_BROKERS", KAFKA),
        ("LAG_GROUPS", group.as_str()),
        ("LAG_INTERVAL_SECS", "1"),
        ("LAG_FORGET_SECS", "0"),
        ("CONSUMER_GROUP", watcher_group.as_str()),
    ]);
    let config: restart_watcher::Config = kit::config::parse_from_map(&vars)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let token = CancellationToken::new();
    let watcher = tokio::spawn(restart_watcher::run(config, listener, token.clone()));
    let client = reqwest::Client::new();

    let expect = |want: [(i32, i64); 3]| {
        let (group, topic) = (group.clone(), topic.clone());
        move |body: &str| lags(body, &group, &topic) == BTreeMap::from(want)
    };
    until(
        &client,
        &url,
        30,
        "lag 0 where the group committed, 2 on the partition it never committed on",
        expect([(0, 0), (1, 0), (2, 2)]),
    )
    .await?;

    for (partition, n) in [(0, 7), (1, 4)] {
        produce(&producer, &topic, partition, n).await?;
    }
    until(
        &client,
        &url,
        30,
        "the stopped group's lag grown by exactly what was produced",
        expect([(0, 7), (1, 4), (2, 2)]),
    )
    .await?;

    for result in admin()?.delete_groups(&[&group], &options()).await? {
        result.map_err(|(g, code)| anyhow!("deleting group {g}: {code}"))?;
    }
    let body = until(
        &client,
        &url,
        30,
        "the deleted group's series removed",
        |b| !b.contains(&format!("group=\"{group}\"")),
    )
    .await?;
    for kind in [
        "kafka_lag_metadata",
        "kafka_lag_offsets",
        "kafka_lag_watermarks",
    ] {
        ensure!(
            !body.contains(&format!("kind=\"{kind}\"")),
            "no measurement failed ({kind}):\n{body}"
        );
    }

    token.cancel();
    tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .context("restart-watcher stops on shutdown")??
        .context("restart-watcher ends cleanly")?;
    // Leave nothing behind on the shared stack (best effort: the watcher's group may still
    // be settling its departure; the next run removes what is left).
    let admin = admin()?;
    let _ = admin.delete_topics(&[&topic], &options()).await;
    let _ = admin.delete_groups(&[&watcher_group], &options()).await;
    Ok(())
}
