//! The consuming side: reads batches from Kafka, decodes and validates them (what cannot
//! be read or would not fit the tables goes to `<topic>.dlq`), writes each batch in one
//! transaction (retrying while PostgreSQL is away; splitting the batch around a record the
//! database refuses, which is dead-lettered), stores offsets only after the commit, sends
//! back-fill requests for new gaps and re-sends them with back-off until the gaps heal, and
//! keeps the metrics current.

use crate::metrics::SyncMetrics;
use crate::verifier::{parse_stream, step_of, Input, Outcome, Verifier};
use crate::{store, validate, Config};
use kit::app::Service;
use kit::contract::topics;
use kit::kafka::{self, KafkaContext};
use kit::record::{self, Undecodable};
use kit::restarts::{RestartEvent, RESTART_VERSION};
use kit::retry::Backoff;
use kit::time::now_ms;
use kit::Telemetry;
use market::{AggTrade, BackfillRequest, Head, Kline, Stream, SCHEMA_VERSION};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::PgPool;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

pub struct Pipeline {
    config: Config,
    pool: PgPool,
    metrics: SyncMetrics,
    producer: FutureProducer<KafkaContext>,
    telemetry: Telemetry,
    shutdown: CancellationToken,
    verifier: Mutex<Verifier>,
    /// Per open gap: when its back-fill request is due again, and the back-off after that.
    retries: Mutex<HashMap<i64, (Instant, Backoff)>>,
}

/// Why a message cannot become an [`Input`]; it is dead-lettered with this as the reason.
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
    #[error(transparent)]
    Invalid(#[from] validate::Invalid),
    #[error("unexpected topic {0}")]
    Topic(String),
}

/// Decodes one message of `topic`, or says why it cannot (see [`decode_at`]).
pub fn decode(topic: &str, payload: Option<&[u8]>) -> Result<Input, Rejected> {
    decode_at(topic, payload, now_ms())
}

/// Decodes one message of `topic` and checks every field the database will cast, with
/// `now_ms` as the clock.
pub fn decode_at(topic: &str, payload: Option<&[u8]>, now_ms: i64) -> Result<Input, Rejected> {
    Ok(match topic {
        topics::AGGTRADES => {
            let a = record::decode(payload, "aggTrade", SCHEMA_VERSION, |r: &AggTrade| r.v)?;
            validate::agg(&a, now_ms)?;
            Input::Agg(a)
        }
        topics::KLINES => {
            let k = record::decode(payload, "kline", SCHEMA_VERSION, |r: &Kline| r.v)?;
            validate::kline(&k, now_ms)?;
            Input::Kline(k)
        }
        topics::HEADS => {
            let h = record::decode(payload, "head", SCHEMA_VERSION, |r: &Head| r.v)?;
            validate::head(&h, now_ms)?;
            Input::Head(h)
        }
        topics::RESTARTS => {
            let r = record::decode(payload, "restart", RESTART_VERSION, |r: &RestartEvent| r.v)?;
            validate::restart(&r, now_ms)?;
            Input::Restart(r)
        }
        other => return Err(Rejected::Topic(other.to_string())),
    })
}

/// What a failed write means.
#[derive(Debug)]
pub enum DbFault {
    /// The data itself was refused (SQLSTATE class 22 data exception, 23 integrity
    /// violation): retrying cannot help; the record is dead-lettered.
    Data(String),
    /// Anything else (connection lost, pool timeout, server shutting down): retry.
    Transient(sqlx::Error),
}

/// Sorts a database error by its SQLSTATE class.
pub fn classify(err: sqlx::Error) -> DbFault {
    if let sqlx::Error::Database(db) = &err {
        if let Some(code) = db
            .code()
            .filter(|c| c.starts_with("22") || c.starts_with("23"))
        {
            return DbFault::Data(format!(
                "database refused the record: SQLSTATE {code}: {}",
                db.message()
            ));
        }
    }
    DbFault::Transient(err)
}

/// Writes `count` items in order through `write(range)`, splitting a run the database
/// refuses in halves until the refused items stand alone. Returns each accepted run's
/// outcome and each refused item's index with the reason; `None` when `write` gives up
/// (shutdown).
pub async fn write_splitting<O, W, Fut>(
    count: usize,
    mut write: W,
) -> Option<(Vec<O>, Vec<(usize, String)>)>
where
    W: FnMut(std::ops::Range<usize>) -> Fut,
    Fut: std::future::Future<Output = Option<Result<O, String>>>,
{
    let (mut done, mut refused) = (Vec::new(), Vec::new());
    let mut runs = Vec::new();
    runs.push(0..count);
    while let Some(run) = runs.pop() {
        if run.is_empty() {
            continue;
        }
        match write(run.clone()).await? {
            Ok(outcome) => done.push(outcome),
            Err(reason) if run.len() == 1 => refused.push((run.start, reason)),
            Err(_) => {
                let mid = run.start + run.len() / 2;
                runs.push(mid..run.end);
                runs.push(run.start..mid);
            }
        }
    }
    Some((done, refused))
}

impl Pipeline {
    /// The pipeline of `service`: it publishes with its producer, counts errors in its
    /// telemetry and stops with it.
    pub fn new(config: Config, pool: PgPool, metrics: SyncMetrics, service: &Service) -> Self {
        let (producer, telemetry) = (service.producer.clone(), service.telemetry.clone());
        let shutdown = service.shutdown.clone();
        Self {
            config,
            pool,
            metrics,
            producer,
            telemetry,
            shutdown,
            verifier: Mutex::new(Verifier::default()),
            retries: Mutex::default(),
        }
    }

    /// Migrates, resumes from the database, then consumes until shutdown. A subscription
    /// that fails ends the task with the error (the service stops and is restarted).
    pub async fn run(
        self: std::sync::Arc<Self>,
        consumer: StreamConsumer<KafkaContext>,
    ) -> Result<(), kit::KitError> {
        if !crate::migrate_until_done(&self.pool, &self.telemetry, &self.shutdown).await {
            return Ok(());
        }
        self.resume().await;
        consumer.subscribe(&[
            topics::AGGTRADES,
            topics::KLINES,
            topics::HEADS,
            topics::RESTARTS,
        ])?;
        while !self.shutdown.is_cancelled() {
            let batch = self.collect(&consumer).await;
            // Shutdown may have cut a dead-letter write short: store nothing of this batch
            // (it is read again, at least once).
            if batch.is_empty() || self.shutdown.is_cancelled() {
                continue;
            }
            let Some(outcomes) = self.write(&batch).await else {
                return Ok(());
            };
            for (msg, _) in &batch {
                kafka::store_offset(&consumer, msg, &self.telemetry);
            }
            for outcome in outcomes {
                self.after_commit(outcome).await;
            }
        }
        Ok(())
    }

    /// Writes the batch's decoded records; a record the database refuses is dead-lettered
    /// and the rest are written. `None` on shutdown.
    async fn write(&self, batch: &[(BorrowedMessage<'_>, Option<Input>)]) -> Option<Vec<Outcome>> {
        let (index, inputs) = self.plausible(batch).await?;
        let (outcomes, refused) =
            write_splitting(inputs.len(), |run| self.persist_retrying(&inputs[run])).await?;
        self.observe_latency(&inputs, refused.iter().map(|(i, _)| *i));
        for (i, reason) in refused {
            let msg = &batch[index[i]].0;
            self.telemetry.error(
                kit::contract::ErrorKind::DbRefusedRecord,
                &format!("{}: {reason}", msg.topic()),
            );
            if !kafka::dead_letter(&self.producer, msg, &reason, &self.shutdown).await {
                return None;
            }
        }
        Some(outcomes)
    }

    /// Each committed live aggregate trade's time from the exchange's event to its row.
    fn observe_latency(&self, inputs: &[Input], refused: impl Iterator<Item = usize>) {
        let refused: std::collections::HashSet<usize> = refused.collect();
        let now = now_ms();
        for (i, input) in inputs.iter().enumerate() {
            if let Input::Agg(a) = input {
                if a.source == market::Source::Ws && !refused.contains(&i) {
                    let at = a.event_time_ms.unwrap_or(a.trade_time_ms);
                    let secs = now.saturating_sub(at).max(0) as f64 / 1000.0;
                    self.metrics.end_to_end.observe(secs);
                }
            }
        }
    }

    /// The batch's decoded inputs that the state finds plausible, with their positions;
    /// the others (a trade id far past the exchange's head) are dead-lettered. `None` on
    /// shutdown.
    async fn plausible(
        &self,
        batch: &[(BorrowedMessage<'_>, Option<Input>)],
    ) -> Option<(Vec<usize>, Vec<Input>)> {
        let doubts: Vec<Option<String>> = {
            let verifier = self.verifier.lock().await;
            batch
                .iter()
                .map(|(_, input)| input.as_ref().and_then(|i| verifier.implausible(i)))
                .collect()
        };
        let (mut index, mut inputs) = (Vec::new(), Vec::new());
        for (i, ((msg, input), doubt)) in batch.iter().zip(doubts).enumerate() {
            match (input, doubt) {
                (None, _) => {}
                (Some(input), None) => {
                    index.push(i);
                    inputs.push(input.clone());
                }
                (Some(_), Some(reason)) => {
                    self.telemetry.error(
                        kit::contract::ErrorKind::BadRecord,
                        &format!("{}: {reason}", msg.topic()),
                    );
                    if !kafka::dead_letter(&self.producer, msg, &reason, &self.shutdown).await {
                        return None;
                    }
                }
            }
        }
        Some((index, inputs))
    }

    async fn resume(&self) {
        let load = || async {
            let states = store::load_states(&self.pool).await?;
            let gaps =
                store::load_open_gaps(&self.pool, |s| parse_stream(s).map_or(1, step_of)).await?;
            let mut v = Verifier::resume(states, gaps);
            v.last_trade_ids = store::load_last_trade_ids(&self.pool).await?;
            Ok::<_, sqlx::Error>(v)
        };
        let resumed = kit::retry::retry(
            &self.shutdown,
            kit::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
            load,
            |e| self.telemetry.error(kit::contract::ErrorKind::DbResume, &e),
        )
        .await;
        if let Some(v) = resumed {
            tracing::info!(
                streams = v.streams.len(),
                open_gaps = v.open_gap_ids().len(),
                "resumed from the database"
            );
            *self.verifier.lock().await = v;
        }
    }

    /// A batch: waits for a first message, then takes more for up to `batch_wait_ms`.
    /// Each entry keeps its message (for the offset) and its decoded input (`None` when
    /// it went to the dead-letter topic).
    async fn collect<'c>(
        &self,
        consumer: &'c StreamConsumer<KafkaContext>,
    ) -> Vec<(BorrowedMessage<'c>, Option<Input>)> {
        let mut batch = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        while (batch.len() as u64) < self.config.batch_max {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, consumer.recv()).await.ok(),
                    None => Some(consumer.recv().await),
                }
            };
            let received = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = next => r,
            };
            match received {
                None => break,
                Some(Err(err)) => {
                    self.telemetry
                        .error(kit::contract::ErrorKind::KafkaConsume, &err);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(Ok(msg)) => {
                    let input = self.decode_or_dead_letter(&msg).await;
                    batch.push((msg, input));
                    deadline.get_or_insert_with(|| {
                        tokio::time::Instant::now()
                            + Duration::from_millis(self.config.batch_wait_ms)
                    });
                }
            }
        }
        batch
    }

    /// The decoded input, or `None` once the message is in the dead-letter topic (or
    /// shutdown stopped that write; the caller then stores no offset).
    async fn decode_or_dead_letter(&self, msg: &BorrowedMessage<'_>) -> Option<Input> {
        match decode(msg.topic(), msg.payload()) {
            Ok(input) => Some(input),
            Err(reason) => {
                self.telemetry.error(
                    kit::contract::ErrorKind::BadRecord,
                    &format!("{}: {reason}", msg.topic()),
                );
                kafka::dead_letter(&self.producer, msg, &reason.to_string(), &self.shutdown).await;
                None
            }
        }
    }

    /// Writes `inputs` in one transaction, retrying with back-off while the database is
    /// away; `Err` when it refuses the data; `None` on shutdown.
    async fn persist_retrying(&self, inputs: &[Input]) -> Option<Result<Outcome, String>> {
        let write = || async {
            match self.persist(inputs).await {
                Ok(outcome) => Ok(Ok(outcome)),
                Err(err) => match classify(err) {
                    DbFault::Data(reason) => Ok(Err(reason)),
                    DbFault::Transient(err) => Err(err),
                },
            }
        };
        kit::retry::retry(
            &self.shutdown,
            kit::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            write,
            |e| self.telemetry.error(kit::contract::ErrorKind::DbWrite, &e),
        )
        .await
    }

    async fn persist(&self, inputs: &[Input]) -> sqlx::Result<Outcome> {
        let mut verifier = self.verifier.lock().await;
        let mut tx = self.pool.begin().await?;
        let (work, outcome) = verifier.apply(&mut tx, inputs, now_ms()).await?;
        tx.commit().await?;
        verifier.commit(work, inputs);
        Ok(outcome)
    }

    async fn after_commit(&self, outcome: Outcome) {
        let m = &self.metrics;
        for (stream, n) in &outcome.persisted {
            m.persisted.with_label_values(&[stream.as_str()]).inc_by(*n);
        }
        for (stream, n) in &outcome.duplicates {
            m.duplicates
                .with_label_values(&[stream.as_str()])
                .inc_by(*n);
        }
        for (stream, n) in &outcome.mismatches {
            m.mismatches
                .with_label_values(&[stream.as_str()])
                .inc_by(*n);
        }
        for (symbol, stream) in &outcome.opened {
            m.gaps_detected
                .with_label_values(&[symbol, stream.as_str()])
                .inc();
        }
        for ((symbol, stream), secs) in &outcome.healed {
            m.gaps_healed
                .with_label_values(&[symbol, stream.as_str()])
                .inc();
            m.heal_seconds.observe(*secs);
        }
        for (id, request) in &outcome.requests {
            self.send(request).await;
            let mut backoff = self.gap_backoff();
            let due = Instant::now() + backoff.next_delay();
            self.retries.lock().await.insert(*id, (due, backoff));
        }
        self.refresh().await;
    }

    /// An unhealed gap's request goes again after BACKFILL_RETRY_SECS, doubling to 5 min.
    fn gap_backoff(&self) -> Backoff {
        let first = Duration::from_secs(self.config.backfill_retry_secs);
        Backoff::new(first, Duration::from_secs(300))
    }

    async fn send(&self, request: &BackfillRequest) {
        let payload = match serde_json::to_vec(request) {
            Ok(p) => p,
            Err(err) => {
                return self
                    .telemetry
                    .error(kit::contract::ErrorKind::Serialize, &err)
            }
        };
        let record = FutureRecord::to(topics::BACKFILL)
            .key(&request.symbol)
            .payload(&payload);
        if let Err((err, _)) = self.producer.send(record, Duration::from_secs(5)).await {
            self.telemetry
                .error(kit::contract::ErrorKind::BackfillRequest, &err); // the re-send loop tries again
        }
    }

    /// Re-sends the request of every gap still open when its back-off runs out, until
    /// shutdown.
    pub async fn resend_loop(self: std::sync::Arc<Self>) -> Result<(), kit::KitError> {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => {}
            }
            let open = self.verifier.lock().await.open_gap_ids();
            let mut due = Vec::new();
            {
                let mut retries = self.retries.lock().await;
                retries.retain(|id, _| open.contains(id));
                for id in &open {
                    let (at, backoff) = retries.entry(*id).or_insert_with(|| {
                        let mut backoff = self.gap_backoff();
                        (Instant::now() + backoff.next_delay(), backoff)
                    });
                    if Instant::now() >= *at {
                        *at = Instant::now() + backoff.next_delay();
                        due.push(*id);
                    }
                }
            }
            for id in due {
                let requests = self.verifier.lock().await.rerequests(id, now_ms());
                for r in &requests {
                    self.send(r).await;
                }
                if let Err(err) = store::count_request(&self.pool, id).await {
                    self.telemetry
                        .error(kit::contract::ErrorKind::DbWrite, &err);
                }
            }
        }
    }

    /// Keeps the per-stream gauges current (lag grows while nothing arrives), until shutdown.
    pub async fn refresh_loop(self: std::sync::Arc<Self>) -> Result<(), kit::KitError> {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = ticker.tick() => self.refresh().await,
            }
        }
    }

    /// Sets the per-stream gauges from the current state, after retiring the symbols
    /// nothing names any more.
    async fn refresh(&self) {
        let mut v = self.verifier.lock().await;
        let now = now_ms();
        let grace_ms =
            i64::try_from(self.config.symbol_retire_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        for symbol in v.retire(now, grace_ms) {
            self.forget(&symbol);
        }
        for ((symbol, stream), state) in &v.streams {
            let labels = [symbol.as_str(), stream.as_str()];
            let c = &state.continuity;
            let lag = ((now - state.last_event_ms) as f64 / 1000.0).max(0.0);
            let missing = v.missing(&(symbol.clone(), *stream));
            let max_lag =
                self.config.max_lag_secs as f64 + if *stream == Stream::Kline { 60.0 } else { 0.0 };
            let m = &self.metrics;
            m.last_event
                .with_label_values(&labels)
                .set(state.last_event_ms as f64 / 1000.0);
            m.lag.with_label_values(&labels).set(lag);
            m.missing.with_label_values(&labels).set(missing);
            m.gaps_open
                .with_label_values(&labels)
                .set(c.gaps.len() as i64);
            m.in_sync.with_label_values(&labels).set(i64::from(
                c.gaps.is_empty() && missing == 0 && lag <= max_lag,
            ));
            if let Some(t) = v.head_times.get(&(symbol.clone(), *stream)) {
                m.head_time
                    .with_label_values(&labels)
                    .set(*t as f64 / 1000.0);
            }
        }
    }

    /// Removes a retired symbol's series, so it neither lags nor shows as a gap forever.
    fn forget(&self, symbol: &str) {
        let m = &self.metrics;
        for stream in [Stream::AggTrade, Stream::Kline] {
            let labels = [symbol, stream.as_str()];
            for g in [&m.last_event, &m.lag, &m.head_time] {
                let _ = g.remove_label_values(&labels);
            }
            for g in [&m.missing, &m.gaps_open, &m.in_sync] {
                let _ = g.remove_label_values(&labels);
            }
        }
        m.retired.inc();
        tracing::warn!(%symbol, retire_secs = self.config.symbol_retire_secs, "symbol retired from the sync metrics: no record or head named it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_each_topic_and_refuses_garbage_with_reasons() {
        let agg = br#"{"v":1,"symbol":"BTCUSDT","agg_id":5,"price":"1.0","qty":"2.0","first_trade_id":1,"last_trade_id":1,"trade_time_ms":1,"buyer_is_maker":true,"event_time_ms":null,"received_at_ms":1,"source":"ws"}"#;
        assert!(matches!(decode(topics::AGGTRADES, Some(agg)), Ok(Input::Agg(a)) if a.agg_id == 5));
        assert!(decode(topics::AGGTRADES, Some(b"{oops"))
            .expect_err("garbage")
            .to_string()
            .contains("not a aggTrade record"));
        assert!(
            decode(topics::KLINES, Some(agg)).is_err(),
            "a trade is not a kline"
        );
        let v2 = String::from_utf8_lossy(agg).replace("\"v\":1", "\"v\":2");
        assert_eq!(
            decode(topics::AGGTRADES, Some(v2.as_bytes()))
                .expect_err("v2")
                .to_string(),
            "aggTrade schema v2 is not supported (expected v1)"
        );
        assert_eq!(
            decode(topics::AGGTRADES, None)
                .expect_err("empty")
                .to_string(),
            "empty payload"
        );
        assert!(decode("elsewhere", Some(agg))
            .expect_err("unknown topic")
            .to_string()
            .contains("unexpected topic"));
    }

    #[test]
    fn restart_events_are_read_at_the_restart_schema_version() {
        let restart = |v: u32| {
            format!(
                r#"{{"v":{v},"service":"collector","at_ms":1,"exit_code":137,"reason":"oom","restart_count":2,"run_time_ms":null}}"#
            )
        };
        let ok = decode(topics::RESTARTS, Some(restart(RESTART_VERSION).as_bytes()));
        assert!(matches!(ok, Ok(Input::Restart(r)) if r.restart_count == 2));
        let next = RESTART_VERSION + 1;
        assert_eq!(
            decode(topics::RESTARTS, Some(restart(next).as_bytes()))
                .expect_err("next version")
                .to_string(),
            format!("restart schema v{next} is not supported (expected v{RESTART_VERSION})")
        );
    }

    #[test]
    fn poison_that_parses_as_json_is_refused_before_the_database() {
        let agg = r#"{"v":1,"symbol":"BTCUSDT","agg_id":5,"price":"1.0","qty":"2.0","first_trade_id":1,"last_trade_id":1,"trade_time_ms":1,"buyer_is_maker":true,"event_time_ms":null,"received_at_ms":1,"source":"ws"}"#;
        let now = 1_800_000_000_000;
        assert!(decode_at(topics::AGGTRADES, Some(agg.as_bytes()), now).is_ok());
        let poison = [
            (agg.replace(r#""price":"1.0""#, r#""price":"abc""#), "price"),
            (
                agg.replace(r#""agg_id":5"#, r#""agg_id":18446744073709551615"#),
                "agg_id",
            ),
            (
                agg.replace(
                    r#""symbol":"BTCUSDT""#,
                    r#""symbol":"BTC'; DROP TABLE aggtrades;--""#,
                ),
                "symbol",
            ),
            (
                agg.replace(
                    r#""trade_time_ms":1"#,
                    r#""trade_time_ms":9000000000000000"#,
                ),
                "ahead",
            ),
        ];
        for (payload, why) in poison {
            let err = decode_at(topics::AGGTRADES, Some(payload.as_bytes()), now).expect_err(why);
            assert!(err.to_string().contains(why), "{err}");
        }
        let kline = format!(
            r#"{{"v":1,"symbol":"ETHUSDT","interval":"1m","open_time_ms":{o},"close_time_ms":{c},"open":"1","high":"1","low":"1","close":"1","volume":"1","quote_volume":"1","trades":1,"taker_buy_base":"1","taker_buy_quote":"1","first_trade_id":null,"last_trade_id":null,"event_time_ms":null,"received_at_ms":1,"source":"ws"}}"#,
            o = now + 7 * 86_400_000 - (now + 7 * 86_400_000) % 60_000,
            c = now + 7 * 86_400_000 - (now + 7 * 86_400_000) % 60_000 + 59_999
        );
        assert!(decode_at(topics::KLINES, Some(kline.as_bytes()), now)
            .expect_err("future kline")
            .to_string()
            .contains("ahead"));
    }

    /// A writer that refuses any run holding a poisoned item, as PostgreSQL refuses a
    /// transaction with one bad row.
    fn refusing(
        items: &[bool],
    ) -> impl FnMut(std::ops::Range<usize>) -> std::future::Ready<Option<Result<Vec<usize>, String>>> + '_
    {
        move |run| {
            let poisoned = items[run.clone()].iter().any(|bad| *bad);
            std::future::ready(Some(if poisoned {
                Err("SQLSTATE 22P02".into())
            } else {
                Ok(run.collect())
            }))
        }
    }

    #[tokio::test]
    async fn a_refused_record_is_split_out_and_everything_else_is_written_in_order() {
        let items = [false, false, true, false, false, false, true, false];
        let (done, refused) = write_splitting(items.len(), refusing(&items))
            .await
            .expect("no shutdown");
        let written: Vec<usize> = done.into_iter().flatten().collect();
        assert_eq!(written, vec![0, 1, 3, 4, 5, 7], "every good item, in order");
        assert_eq!(
            refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![2, 6]
        );
        let clean = [false; 5];
        let (done, refused) = write_splitting(clean.len(), refusing(&clean))
            .await
            .expect("no shutdown");
        assert_eq!(
            (done.len(), refused.len()),
            (1, 0),
            "a clean batch is one transaction"
        );
        let gave_up = write_splitting(3, |_| std::future::ready(None::<Result<(), String>>)).await;
        assert!(gave_up.is_none(), "shutdown ends the write");
    }
}
