//! Consumer-group lag measured from outside the consumers, the way Burrow and
//! kafka_exporter do it: every `LAG_INTERVAL_SECS` the watcher reads each watched group's
//! committed offsets and each partition's log start and end from the brokers, and exports
//! `kafka_consumer_group_lag{group,topic,partition}`. A consumer that is frozen, crashed or
//! gone reports nothing about itself (its own `kafka_consumer_lag` stops); this keeps
//! counting, so KafkaConsumerLagHigh can fire for it.
//!
//! What the number means:
//! - lag = the partition's log end (high watermark) − the group's committed offset,
//!   never below 0. A committed offset below the log start (retention deleted records the
//!   group never read) counts from the log start: those records are lost, not pending.
//! - The partitions of a group are those of every topic it has committed an offset on. A
//!   partition of such a topic with no committed offset of its own counts from the log
//!   start: that is what an `auto.offset.reset=earliest` group (sync-verifier, the
//!   collector's back-fill consumer) has yet to read there, and it keeps a consumer that
//!   froze before its first commit on a partition from looking healthy. (A `latest` group
//!   is overstated there until its first commit, seconds after it gets a record.) A topic
//!   the group has committed nothing on is not reported: nothing seen from outside says
//!   the group reads it.
//! - The groups are `LAG_GROUPS`: by default the platform's own ([`DEFAULT_GROUPS`]); `*`
//!   adds every group the brokers list. Not every group by default: test and ad-hoc groups
//!   left behind keep their offsets for the broker's `offsets.retention.minutes` (7 days by
//!   default) while their lag grows with the topics, and would raise KafkaConsumerLagHigh
//!   for consumers nobody runs.
//! - A stopped or dead group keeps its series and its lag grows with every record produced:
//!   its committed offsets stay on the brokers (that is the point).
//! - A group gone for good (deleted with `kafka-consumer-groups.sh --delete`, or its offsets
//!   expired `offsets.retention.minutes` after its last member left) has nothing committed;
//!   once the brokers have answered so for `LAG_FORGET_SECS`, its series are removed, so the
//!   alert resolves instead of firing forever. A partition or topic that leaves a group's
//!   answer (a deleted topic) loses its series at once.
//! - A failed read (brokers away, a coordinator moving, the round's time budget spent) keeps
//!   the last values, is logged and counted in `nghenhan_errors_total` under one of
//!   `ErrorKind::KafkaLag*`, and never stops the service.
//!
//! rust-rdkafka 0.38 has no admin call for a group's offsets (ListConsumerGroupOffsets), so
//! each group is read through a consumer client of that `group.id` that never subscribes
//! nor commits: `committed_offsets` sends an OffsetFetch, which neither joins the group nor
//! creates it. Every broker call blocks; a round runs on tokio's blocking pool, each call
//! bounded by what is left of the round's `LAG_TIMEOUT_SECS`, and shutdown abandons a
//! round at once (it then ends within that budget on its own).

use kit::contract::metrics as names;
use kit::contract::ErrorKind;
use kit::kafka::KafkaContext;
use kit::telemetry::registered;
use kit::Telemetry;
use prometheus::{IntGaugeVec, Opts, Registry};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// The groups watched by default: sync-verifier's (`CONSUMER_GROUP` there), the
/// collector's back-fill consumer's (`BACKFILL_GROUP`) and this watcher's heartbeat
/// consumer's (`CONSUMER_GROUP` here). A deployment that renames one sets `LAG_GROUPS`.
pub const DEFAULT_GROUPS: [&str; 3] = ["sync-verifier", "collector-backfill", "restart-watcher"];

/// In `LAG_GROUPS`: also every group the brokers list.
pub const EVERY_GROUP: &str = "*";

/// How the lag is measured, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagSettings {
    /// Groups always read (`LAG_GROUPS` without `*` and empty names).
    pub groups: Vec<String>,
    /// Whether every group the brokers list is read too.
    pub every_group: bool,
    pub interval: Duration,
    /// The longest a round may take; every broker call in it shares it.
    pub budget: Duration,
    /// How long a group has had nothing committed before its series are removed.
    pub forget_ms: i64,
}

impl LagSettings {
    pub fn new(groups: &[String], interval_secs: u64, budget_secs: u64, forget_secs: u64) -> Self {
        let names = groups.iter().map(|g| g.trim()).filter(|g| !g.is_empty());
        let every_group = names.clone().any(|g| g == EVERY_GROUP);
        let mut groups: Vec<String> = names
            .filter(|g| *g != EVERY_GROUP)
            .map(String::from)
            .collect();
        groups.sort();
        groups.dedup();
        Self {
            groups,
            every_group,
            interval: Duration::from_secs(interval_secs),
            budget: Duration::from_secs(budget_secs),
            forget_ms: i64::try_from(forget_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        }
    }

    /// Whether anything is to be measured (`LAG_GROUPS=` turns the measurement off).
    pub fn enabled(&self) -> bool {
        self.every_group || !self.groups.is_empty()
    }
}

/// A partition: (topic, partition).
pub type Key = (String, i32);

/// A group's committed offset on one partition, as the brokers answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    At(i64),
    /// Nothing committed on this partition.
    Nothing,
    /// The brokers answered with an error for this partition.
    Unknown,
}

/// The lag of one partition: the records between where the group resumes and the log
/// end. `committed` `None` (nothing committed) resumes at the log start, and so does a
/// committed offset below it; never negative (a committed offset past the end, as after
/// a truncation, is 0). Negative watermarks (librdkafka's "unknown") count as 0.
pub fn partition_lag(committed: Option<i64>, low: i64, high: i64) -> i64 {
    let low = low.max(0);
    let from = committed.map_or(low, |c| c.max(low));
    high.max(0).saturating_sub(from).max(0)
}

/// One group's measurement: the lag of each partition that could be computed, and the
/// partitions whose inputs could not be read (their series keep their last value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupLag {
    pub lags: BTreeMap<Key, i64>,
    pub unknown: BTreeSet<Key>,
}

impl GroupLag {
    /// Whether the group has nothing committed anywhere (nothing to report).
    pub fn is_empty(&self) -> bool {
        self.lags.is_empty() && self.unknown.is_empty()
    }
}

/// The topics a group has committed at least one offset on.
pub fn topics_in_use(committed: &BTreeMap<Key, Commit>) -> BTreeSet<&str> {
    committed
        .iter()
        .filter(|(_, c)| matches!(c, Commit::At(_)))
        .map(|((topic, _), _)| topic.as_str())
        .collect()
}

/// A group's lag from its committed offsets and the partitions' (log start, log end).
pub fn group_lag(committed: &BTreeMap<Key, Commit>, marks: &HashMap<Key, (i64, i64)>) -> GroupLag {
    let in_use = topics_in_use(committed);
    let mut out = GroupLag::default();
    for (key, commit) in committed {
        let at = match commit {
            Commit::Unknown => {
                out.unknown.insert(key.clone());
                continue;
            }
            _ if !in_use.contains(key.0.as_str()) => continue,
            Commit::At(offset) => Some(*offset),
            Commit::Nothing => None,
        };
        match marks.get(key) {
            Some(&(low, high)) if high >= 0 => {
                out.lags.insert(key.clone(), partition_lag(at, low, high));
            }
            _ => {
                out.unknown.insert(key.clone());
            }
        }
    }
    out
}

/// What a round learned about one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Measured(GroupLag),
    /// Its committed offsets could not be read.
    Failed,
}

#[derive(Debug, Default)]
struct Tracked {
    series: BTreeSet<Key>,
    /// Since when (Unix ms) the brokers have said the group has nothing committed.
    empty_since: Option<i64>,
}

/// The exported series and what they belong to; clock-free (callers pass Unix ms).
pub struct LagBook {
    gauge: IntGaugeVec,
    forget_ms: i64,
    groups: BTreeMap<String, Tracked>,
}

impl LagBook {
    /// Registers `kafka_consumer_group_lag` in `registry`.
    pub fn register(registry: &Registry, forget_ms: i64) -> Result<Self, prometheus::Error> {
        let gauge = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    names::KAFKA_CONSUMER_GROUP_LAG,
                    "Records between a consumer group's committed offset and the partition's log \
                     end, measured from outside the group (also while it is stopped).",
                ),
                &["group", "topic", "partition"],
            )?,
        )?;
        Ok(Self {
            gauge,
            forget_ms,
            groups: BTreeMap::new(),
        })
    }

    /// The groups that have series (they are read every round until forgotten).
    pub fn groups(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// The exported lag, if the series exists.
    pub fn value(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let tracked = self.groups.get(group)?;
        tracked
            .series
            .contains(&(topic.to_string(), partition))
            .then(|| {
                self.gauge
                    .with_label_values(&[group, topic, &partition.to_string()])
                    .get()
            })
    }

    /// Applies what a round learned about `group` at `now_ms`.
    pub fn apply(&mut self, group: &str, answer: Answer, now_ms: i64) {
        let Answer::Measured(lag) = answer else {
            return; // keep the last values
        };
        if lag.is_empty() {
            self.nothing_committed(group, now_ms);
            return;
        }
        let tracked = self.groups.entry(group.to_string()).or_default();
        tracked.empty_since = None;
        let kept: BTreeSet<Key> = tracked
            .series
            .iter()
            .filter(|k| lag.unknown.contains(*k))
            .cloned()
            .collect();
        for gone in tracked
            .series
            .iter()
            .filter(|k| !kept.contains(*k) && !lag.lags.contains_key(*k))
        {
            let _ = self
                .gauge
                .remove_label_values(&[group, &gone.0, &gone.1.to_string()]);
        }
        for ((topic, partition), value) in &lag.lags {
            self.gauge
                .with_label_values(&[group, topic, &partition.to_string()])
                .set(*value);
        }
        tracked.series = kept.into_iter().chain(lag.lags.into_keys()).collect();
    }

    fn nothing_committed(&mut self, group: &str, now_ms: i64) {
        let Some(tracked) = self.groups.get_mut(group) else {
            return;
        };
        let since = *tracked.empty_since.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) < self.forget_ms {
            return;
        }
        for (topic, partition) in &tracked.series {
            let _ = self
                .gauge
                .remove_label_values(&[group, topic, &partition.to_string()]);
        }
        self.groups.remove(group);
        tracing::info!(
            group,
            "consumer group has nothing committed any more; its lag series are removed"
        );
    }
}

/// Why a round measured nothing.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    #[error("{what}: {source}")]
    Kafka {
        what: &'static str,
        source: KafkaError,
    },
    #[error("{0}: the round's time budget of {1:?} is spent")]
    Budget(&'static str, Duration),
    #[error("measurement round did not finish: {0}")]
    Join(String),
}

/// The time left in a round.
struct Budget {
    until: Instant,
    total: Duration,
}

impl Budget {
    fn new(total: Duration) -> Self {
        Self {
            until: Instant::now() + total,
            total,
        }
    }

    fn left(&self, what: &'static str) -> Result<Duration, LagError> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(LagError::Budget(what, self.total));
        }
        Ok(left)
    }
}

type Client = BaseConsumer<KafkaContext>;

/// The measurement: its broker clients (one without a group for metadata, group lists
/// and watermarks; one per watched group for its committed offsets) and its series.
pub struct Lag {
    settings: LagSettings,
    brokers: String,
    client_id: String,
    context: KafkaContext,
    telemetry: Telemetry,
    admin: Client,
    group_clients: HashMap<String, Client>,
    book: LagBook,
}

impl Lag {
    /// Creates the clients (they connect lazily) and registers the metric in `telemetry`'s
    /// registry. Fails only on a configuration librdkafka refuses.
    pub fn new(
        settings: LagSettings,
        brokers: &str,
        client_id: &str,
        context: KafkaContext,
        telemetry: Telemetry,
    ) -> Result<Self, kit::KitError> {
        let admin = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", format!("{client_id}-lag"))
            .create_with_context(context.clone())?;
        let book = LagBook::register(telemetry.registry(), settings.forget_ms)?;
        Ok(Self {
            settings,
            brokers: brokers.to_string(),
            client_id: format!("{client_id}-lag"),
            context,
            telemetry,
            admin,
            group_clients: HashMap::new(),
            book,
        })
    }

    pub fn book(&self) -> &LagBook {
        &self.book
    }

    /// One round at `now_ms` (blocking): reads and applies; `Err` when it measured nothing.
    pub fn measure(&mut self, now_ms: i64) -> Result<(), LagError> {
        let budget = Budget::new(self.settings.budget);
        let groups = self.groups_to_read(&budget);
        self.group_clients.retain(|g, _| groups.contains(g));
        let topics = self.topics(&budget)?;
        let mut committed = BTreeMap::new();
        for group in &groups {
            match self.committed(group, &topics, &budget) {
                Ok(c) => {
                    committed.insert(group.clone(), c);
                }
                Err(err) => self
                    .telemetry
                    .error(ErrorKind::KafkaLagOffsets, &format!("group {group}: {err}")),
            }
        }
        let marks = self.watermarks(&committed, &topics, &budget);
        for group in &groups {
            let answer = match committed.get(group) {
                Some(c) => Answer::Measured(group_lag(c, &marks)),
                None => Answer::Failed,
            };
            self.book.apply(group, answer, now_ms);
        }
        self.serve_events();
        Ok(())
    }

    /// The configured groups, those with series, and (with `*`) the brokers' list.
    fn groups_to_read(&self, budget: &Budget) -> BTreeSet<String> {
        let mut groups: BTreeSet<String> = self.settings.groups.iter().cloned().collect();
        groups.extend(self.book.groups());
        if self.settings.every_group {
            let listed = budget.left("listing groups").and_then(|left| {
                self.admin
                    .fetch_group_list(None, left)
                    .map_err(|source| LagError::Kafka {
                        what: "listing groups",
                        source,
                    })
            });
            match listed {
                Ok(list) => groups.extend(
                    list.groups()
                        .iter()
                        .map(|g| g.name().to_string())
                        .filter(|g| !g.is_empty()),
                ),
                Err(err) => self.telemetry.error(ErrorKind::KafkaLagGroups, &err),
            }
        }
        groups
    }

    /// Every topic but the brokers' internal ones (`__consumer_offsets`, ...), with its
    /// partitions.
    fn topics(&self, budget: &Budget) -> Result<BTreeMap<String, Vec<i32>>, LagError> {
        let metadata = self
            .admin
            .fetch_metadata(None, budget.left("reading topic metadata")?)
            .map_err(|source| LagError::Kafka {
                what: "reading topic metadata",
                source,
            })?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.name().starts_with("__"))
            .map(|t| {
                let partitions = t.partitions().iter().map(|p| p.id()).collect();
                (t.name().to_string(), partitions)
            })
            .collect())
    }

    fn client_for(&mut self, group: &str) -> Result<&Client, LagError> {
        if !self.group_clients.contains_key(group) {
            let client: Client = ClientConfig::new()
                .set("bootstrap.servers", &self.brokers)
                .set("client.id", &self.client_id)
                .set("group.id", group)
                .set("enable.auto.commit", "false")
                .set("enable.auto.offset.store", "false")
                .create_with_context(self.context.clone())
                .map_err(|source| LagError::Kafka {
                    what: "creating the group's client",
                    source,
                })?;
            self.group_clients.insert(group.to_string(), client);
        }
        Ok(&self.group_clients[group])
    }

    /// The group's committed offset on every partition of every topic.
    fn committed(
        &mut self,
        group: &str,
        topics: &BTreeMap<String, Vec<i32>>,
        budget: &Budget,
    ) -> Result<BTreeMap<Key, Commit>, LagError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partitions) in topics {
            for p in partitions {
                tpl.add_partition(topic, *p);
            }
        }
        if tpl.count() == 0 {
            return Ok(BTreeMap::new());
        }
        let left = budget.left("reading committed offsets")?;
        let answer = self
            .client_for(group)?
            .committed_offsets(tpl, left)
            .map_err(|source| LagError::Kafka {
                what: "reading committed offsets",
                source,
            })?;
        Ok(answer
            .elements()
            .iter()
            .map(|e| {
                let commit = match (e.error(), e.offset()) {
                    (Err(_), _) => Commit::Unknown,
                    (Ok(()), Offset::Offset(n)) if n >= 0 => Commit::At(n),
                    (Ok(()), _) => Commit::Nothing,
                };
                ((e.topic().to_string(), e.partition()), commit)
            })
            .collect())
    }

    /// (log start, log end) of every partition of the topics some group has committed on;
    /// the partitions that could not be read are counted once for the round.
    fn watermarks(
        &self,
        committed: &BTreeMap<String, BTreeMap<Key, Commit>>,
        topics: &BTreeMap<String, Vec<i32>>,
        budget: &Budget,
    ) -> HashMap<Key, (i64, i64)> {
        let needed: BTreeSet<&str> = committed.values().flat_map(topics_in_use).collect();
        let mut marks = HashMap::new();
        let (mut failed, mut first) = (0usize, None);
        for topic in needed {
            for p in topics.get(topic).into_iter().flatten() {
                let read = budget.left("reading watermarks").and_then(|left| {
                    self.admin
                        .fetch_watermarks(topic, *p, left)
                        .map_err(|source| LagError::Kafka {
                            what: "reading watermarks",
                            source,
                        })
                });
                match read {
                    Ok(m) => {
                        marks.insert((topic.to_string(), *p), m);
                    }
                    Err(err) => {
                        failed += 1;
                        first.get_or_insert_with(|| format!("{topic}[{p}]: {err}"));
                    }
                }
            }
        }
        if let Some(first) = first {
            let what = format!("{failed} partition(s) unread, the first {first}");
            self.telemetry.error(ErrorKind::KafkaLagWatermarks, &what);
        }
        marks
    }

    /// Serves the clients' queued events (errors reach the Kafka context, which counts
    /// them); a client that is never polled would keep them queued.
    fn serve_events(&self) {
        for client in std::iter::once(&self.admin).chain(self.group_clients.values()) {
            for _ in 0..100 {
                if client.poll(Duration::ZERO).is_none() {
                    break;
                }
            }
        }
    }
}

fn lock(lag: &Mutex<Lag>) -> std::sync::MutexGuard<'_, Lag> {
    lag.lock().unwrap_or_else(|p| p.into_inner())
}

/// Measures every `interval` until `shutdown`; a round that measured nothing is retried
/// with back-off (1 s doubling up to the interval) and each failure counted.
pub async fn run(lag: Lag, shutdown: CancellationToken) -> Result<(), kit::KitError> {
    let interval = lag.settings.interval;
    let telemetry = lag.telemetry.clone();
    let lag = Arc::new(Mutex::new(lag));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let round = || {
            let lag = lag.clone();
            async move {
                let work = move || lock(&lag).measure(kit::time::now_ms());
                tokio::task::spawn_blocking(work)
                    .await
                    .unwrap_or_else(|e| Err(LagError::Join(e.to_string())))
            }
        };
        let failed = |err: LagError| telemetry.error(ErrorKind::KafkaLagMetadata, &err);
        let measured = kit::retry::retry(
            &shutdown,
            kit::retry::Backoff::new(Duration::from_secs(1), interval),
            round,
            failed,
        )
        .await;
        if measured.is_none() {
            break;
        }
    }
    // Closing a group's client may wait on the brokers: not on the runtime's workers.
    let _ = tokio::task::spawn_blocking(move || drop(lag)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, partition: i32) -> Key {
        (topic.to_string(), partition)
    }

    #[test]
    fn lag_is_log_end_minus_committed_from_no_earlier_than_the_log_start() {
        assert_eq!(partition_lag(Some(40), 0, 100), 60);
        assert_eq!(partition_lag(Some(100), 0, 100), 0, "caught up");
        assert_eq!(
            partition_lag(Some(10), 30, 100),
            70,
            "retention deleted 10..30: lost, not pending"
        );
        assert_eq!(partition_lag(None, 30, 100), 70, "nothing committed");
        assert_eq!(
            partition_lag(Some(120), 0, 100),
            0,
            "past the end after a truncation"
        );
        assert_eq!(partition_lag(None, -1, -1), 0, "unknown watermarks");
        assert_eq!(partition_lag(Some(0), i64::MIN, i64::MAX), i64::MAX);
        assert_eq!(partition_lag(Some(i64::MAX), 0, i64::MAX), 0);
    }

    #[test]
    fn a_group_reports_the_topics_it_committed_on_with_uncommitted_partitions_from_the_log_start() {
        let committed = BTreeMap::from([
            (key("market.aggtrades.v1", 0), Commit::At(90)),
            (key("market.aggtrades.v1", 1), Commit::Nothing),
            (key("market.aggtrades.v1", 2), Commit::Unknown),
            (key("market.klines.v1", 0), Commit::At(5)),
            (key("market.klines.v1", 1), Commit::At(5)),
            (key("platform.heartbeats.v1", 0), Commit::Nothing),
        ]);
        let marks = HashMap::from([
            (key("market.aggtrades.v1", 0), (0, 100)),
            (key("market.aggtrades.v1", 1), (20, 50)),
            (key("market.aggtrades.v1", 2), (0, 7)),
            (key("market.klines.v1", 0), (0, 12)),
            (key("platform.heartbeats.v1", 0), (0, 1_000)),
        ]);
        let lag = group_lag(&committed, &marks);
        assert_eq!(
            lag.lags,
            BTreeMap::from([
                (key("market.aggtrades.v1", 0), 10),
                (key("market.aggtrades.v1", 1), 30),
                (key("market.klines.v1", 0), 7),
            ])
        );
        assert_eq!(
            lag.unknown,
            BTreeSet::from([
                key("market.aggtrades.v1", 2),
                key("market.klines.v1", 1), // no watermarks
            ]),
            "heartbeats: never committed on, not reported"
        );
    }

    #[test]
    fn nothing_committed_anywhere_is_an_empty_answer() {
        let committed = BTreeMap::from([(key("t", 0), Commit::Nothing)]);
        let marks = HashMap::from([(key("t", 0), (0, 9))]);
        assert!(group_lag(&committed, &marks).is_empty());
        assert!(group_lag(&BTreeMap::new(), &marks).is_empty());
    }

    fn measured(pairs: &[(&str, i32, i64)], unknown: &[(&str, i32)]) -> Answer {
        Answer::Measured(GroupLag {
            lags: pairs.iter().map(|(t, p, v)| (key(t, *p), *v)).collect(),
            unknown: unknown.iter().map(|(t, p)| key(t, *p)).collect(),
        })
    }

    fn exposition(registry: &Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encodes")
    }

    #[test]
    fn the_book_sets_keeps_and_removes_series() {
        let registry = Registry::new();
        let mut book = LagBook::register(&registry, 60_000).expect("book");
        book.apply("g", measured(&[("t", 0, 5), ("t", 1, 0)], &[]), 0);
        let text = exposition(&registry);
        assert!(
            text.contains(r#"kafka_consumer_group_lag{group="g",partition="0",topic="t"} 5"#),
            "{text}"
        );
        book.apply("g", Answer::Failed, 1_000);
        assert_eq!(
            book.value("g", "t", 0),
            Some(5),
            "a failed read keeps values"
        );
        book.apply("g", measured(&[("t", 0, 9)], &[("t", 1), ("t", 2)]), 2_000);
        assert_eq!(book.value("g", "t", 0), Some(9));
        assert_eq!(book.value("g", "t", 1), Some(0), "unread: last value kept");
        assert_eq!(
            book.value("g", "t", 2),
            None,
            "unread and never known: not made up"
        );
        book.apply("g", measured(&[("u", 0, 3)], &[]), 3_000);
        assert_eq!(book.value("g", "t", 0), None, "left the answer: removed");
        assert_eq!(book.value("g", "t", 1), None);
        assert!(!exposition(&registry).contains(r#"topic="t""#));
        assert_eq!(book.value("g", "u", 0), Some(3));
    }

    #[test]
    fn a_group_with_nothing_committed_is_forgotten_after_the_grace_period() {
        let registry = Registry::new();
        let mut book = LagBook::register(&registry, 60_000).expect("book");
        book.apply("gone", measured(&[("t", 0, 500)], &[]), 0);
        book.apply("gone", measured(&[], &[]), 10_000);
        book.apply("gone", Answer::Failed, 30_000);
        book.apply("gone", measured(&[], &[]), 69_999);
        assert_eq!(
            book.value("gone", "t", 0),
            Some(500),
            "still within the grace"
        );
        book.apply("gone", measured(&[], &[]), 70_000);
        assert_eq!(book.value("gone", "t", 0), None);
        assert!(book.groups().is_empty(), "no longer read");
        assert!(!exposition(&registry).contains("gone"));
        book.apply("never", measured(&[], &[]), 0);
        assert!(
            book.groups().is_empty(),
            "a group never seen is not tracked"
        );
    }

    #[test]
    fn a_group_that_commits_again_within_the_grace_is_kept() {
        let mut book = LagBook::register(&Registry::new(), 60_000).expect("book");
        book.apply("g", measured(&[("t", 0, 1)], &[]), 0);
        book.apply("g", measured(&[], &[]), 1_000);
        book.apply("g", measured(&[("t", 0, 2)], &[]), 2_000);
        book.apply("g", measured(&[], &[]), 62_000);
        assert_eq!(book.value("g", "t", 0), Some(2), "the grace starts over");
        let mut at_once = LagBook::register(&Registry::new(), 0).expect("book");
        at_once.apply("g", measured(&[("t", 0, 1)], &[]), 0);
        at_once.apply("g", measured(&[], &[]), 0);
        assert_eq!(at_once.value("g", "t", 0), None, "LAG_FORGET_SECS=0");
    }

    #[test]
    fn settings_read_groups_every_group_and_off() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let s = LagSettings::new(&names(&["b", " a ", "", "a", "*"]), 10, 5, 60);
        assert_eq!(s.groups, names(&["a", "b"]));
        assert!(s.every_group && s.enabled());
        assert_eq!(s.forget_ms, 60_000);
        assert!(!LagSettings::new(&names(&[""]), 10, 5, 60).enabled());
        assert_eq!(
            LagSettings::new(&[], 1, 1, u64::MAX).forget_ms,
            i64::MAX,
            "saturates"
        );
    }
}
