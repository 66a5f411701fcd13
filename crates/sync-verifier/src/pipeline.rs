//! The consuming side: reads batches from Kafka, decodes them (unreadable messages go to
//! `<topic>.dlq`), writes each batch in one transaction (retrying while PostgreSQL is
//! away), stores offsets only after the commit, sends back-fill requests for new gaps and
//! re-sends them with back-off until the gaps heal, and keeps the metrics current.

use crate::metrics::SyncMetrics;
use crate::verifier::{parse_stream, step_of, Input, Outcome, Verifier};
use crate::{store, Config};
use kit::contract::topics;
use kit::kafka::{self, KafkaContext};
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
    /// Per open gap: when to re-send its request, and the current back-off.
    retries: Mutex<HashMap<i64, (Instant, Duration)>>,
}

/// Decodes one message of `topic`, or says why it cannot.
pub fn decode(topic: &str, payload: Option<&[u8]>) -> Result<Input, String> {
    let payload = payload.ok_or("empty payload")?;
    fn v1<T: serde::de::DeserializeOwned>(p: &[u8], what: &str, v: impl Fn(&T) -> u32) -> Result<T, String> {
        let r: T = serde_json::from_slice(p).map_err(|e| format!("not a {what} record: {e}"))?;
        if v(&r) != SCHEMA_VERSION {
            return Err(format!("{what} schema v{} is not supported", v(&r)));
        }
        Ok(r)
    }
    match topic {
        topics::AGGTRADES => v1::<AggTrade>(payload, "aggTrade", |r| r.v).map(Input::Agg),
        topics::KLINES => v1::<Kline>(payload, "kline", |r| r.v).map(Input::Kline),
        topics::HEADS => v1::<Head>(payload, "head", |r| r.v).map(Input::Head),
        topics::RESTARTS => v1::<kit::restarts::RestartEvent>(payload, "restart", |r| r.v).map(Input::Restart),
        other => Err(format!("unexpected topic {other}")),
    }
}

impl Pipeline {
    pub fn new(config: Config, pool: PgPool, metrics: SyncMetrics, producer: FutureProducer<KafkaContext>, telemetry: Telemetry, shutdown: CancellationToken) -> Self {
        Self { config, pool, metrics, producer, telemetry, shutdown, verifier: Mutex::new(Verifier::default()), retries: Mutex::default() }
    }

    /// Migrates, resumes from the database, then consumes until shutdown.
    pub async fn run(self: std::sync::Arc<Self>, consumer: StreamConsumer<KafkaContext>) -> Result<(), kit::KitError> {
        if !crate::migrate_until_done(&self.pool, &self.telemetry, &self.shutdown).await {
            return Ok(());
        }
        self.resume().await;
        let (me, me2) = (self.clone(), self.clone());
        tokio::spawn(async move { me.resend_loop().await });
        tokio::spawn(async move { me2.refresh_loop().await });
        consumer.subscribe(&[topics::AGGTRADES, topics::KLINES, topics::HEADS, topics::RESTARTS])?;
        while !self.shutdown.is_cancelled() {
            let batch = self.collect(&consumer).await;
            if batch.is_empty() {
                continue;
            }
            let inputs: Vec<Input> = batch.iter().filter_map(|(_, i)| i.clone()).collect();
            let Some(outcome) = self.persist_retrying(&inputs).await else { return Ok(()) };
            for (msg, _) in &batch {
                consumer.store_offset_from_message(msg)?;
            }
            self.after_commit(outcome).await;
        }
        Ok(())
    }

    async fn resume(&self) {
        let load = || async {
            let states = store::load_states(&self.pool).await?;
            let gaps = store::load_open_gaps(&self.pool, |s| parse_stream(s).map_or(1, step_of)).await?;
            Ok::<_, sqlx::Error>(Verifier::resume(states, gaps))
        };
        let resumed = kit::shutdown::retry(&self.shutdown, Duration::from_millis(500), Duration::from_secs(10), load, |e| self.telemetry.error("db_resume", &e)).await;
        if let Some(v) = resumed {
            tracing::info!(streams = v.streams.len(), open_gaps = v.open_gap_ids().len(), "resumed from the database");
            *self.verifier.lock().await = v;
        }
    }

    /// A batch: waits for a first message, then takes more for up to `batch_wait_ms`.
    /// Each entry keeps its message (for the offset) and its decoded input (`None` when
    /// it went to the dead-letter topic).
    async fn collect<'c>(&self, consumer: &'c StreamConsumer<KafkaContext>) -> Vec<(BorrowedMessage<'c>, Option<Input>)> {
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
                    self.telemetry.error("kafka_consume", &err);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some(Ok(msg)) => {
                    let input = self.decode_or_dead_letter(&msg).await;
                    batch.push((msg, input));
                    deadline.get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_millis(self.config.batch_wait_ms));
                }
            }
        }
        batch
    }

    async fn decode_or_dead_letter(&self, msg: &BorrowedMessage<'_>) -> Option<Input> {
        match decode(msg.topic(), msg.payload()) {
            Ok(input) => Some(input),
            Err(reason) => {
                self.telemetry.error("bad_record", &format!("{}: {reason}", msg.topic()));
                kafka::dead_letter(&self.producer, msg, &reason, &self.shutdown).await;
                None
            }
        }
    }

    /// Writes the batch, retrying with back-off while the database fails; `None` on shutdown.
    async fn persist_retrying(&self, inputs: &[Input]) -> Option<Outcome> {
        let write = || self.persist(inputs);
        kit::shutdown::retry(&self.shutdown, Duration::from_millis(200), Duration::from_secs(5), write, |e| self.telemetry.error("db_write", &e)).await
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
            m.duplicates.with_label_values(&[stream.as_str()]).inc_by(*n);
        }
        for (stream, n) in &outcome.mismatches {
            m.mismatches.with_label_values(&[stream.as_str()]).inc_by(*n);
        }
        for (symbol, stream) in &outcome.opened {
            m.gaps_detected.with_label_values(&[symbol, stream.as_str()]).inc();
        }
        for ((symbol, stream), secs) in &outcome.healed {
            m.gaps_healed.with_label_values(&[symbol, stream.as_str()]).inc();
            m.heal_seconds.observe(*secs);
        }
        let first = Duration::from_secs(self.config.backfill_retry_secs);
        for (id, request) in &outcome.requests {
            self.send(request).await;
            self.retries.lock().await.insert(*id, (Instant::now() + first, first));
        }
        self.refresh().await;
    }

    async fn send(&self, request: &BackfillRequest) {
        let payload = match serde_json::to_vec(request) {
            Ok(p) => p,
            Err(err) => return self.telemetry.error("serialize", &err),
        };
        let record = FutureRecord::to(topics::BACKFILL).key(&request.symbol).payload(&payload);
        if let Err((err, _)) = self.producer.send(record, Duration::from_secs(5)).await {
            self.telemetry.error("backfill_request", &err); // the re-send loop tries again
        }
    }

    /// Re-sends the request of every gap still open when its back-off runs out.
    async fn resend_loop(&self) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let first = Duration::from_secs(self.config.backfill_retry_secs);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let open = self.verifier.lock().await.open_gap_ids();
            let mut due = Vec::new();
            {
                let mut retries = self.retries.lock().await;
                retries.retain(|id, _| open.contains(id));
                for id in &open {
                    let (at, delay) = retries.entry(*id).or_insert((Instant::now() + first, first));
                    if Instant::now() >= *at {
                        *delay = (*delay * 2).min(Duration::from_secs(300));
                        *at = Instant::now() + *delay;
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
                    self.telemetry.error("db_write", &err);
                }
            }
        }
    }

    async fn refresh_loop(&self) {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => self.refresh().await,
            }
        }
    }

    /// Sets the per-stream gauges from the current state.
    async fn refresh(&self) {
        let v = self.verifier.lock().await;
        let now = now_ms();
        for ((symbol, stream), state) in &v.streams {
            let labels = [symbol.as_str(), stream.as_str()];
            let c = &state.continuity;
            let lag = ((now - state.last_event_ms) as f64 / 1000.0).max(0.0);
            let missing = c.missing_to(v.heads.get(&(symbol.clone(), *stream)).copied());
            let max_lag = self.config.max_lag_secs as f64 + if *stream == Stream::Kline { 60.0 } else { 0.0 };
            let m = &self.metrics;
            m.last_event.with_label_values(&labels).set(state.last_event_ms as f64 / 1000.0);
            m.lag.with_label_values(&labels).set(lag);
            m.missing.with_label_values(&labels).set(missing);
            m.gaps_open.with_label_values(&labels).set(c.gaps.len() as i64);
            m.in_sync.with_label_values(&labels).set(i64::from(c.gaps.is_empty() && missing == 0 && lag <= max_lag));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_each_topic_and_refuses_garbage_with_reasons() {
        let agg = br#"{"v":1,"symbol":"BTCUSDT","agg_id":5,"price":"1.0","qty":"2.0","first_trade_id":1,"last_trade_id":1,"trade_time_ms":1,"buyer_is_maker":true,"event_time_ms":null,"received_at_ms":1,"source":"ws"}"#;
        assert!(matches!(decode(topics::AGGTRADES, Some(agg)), Ok(Input::Agg(a)) if a.agg_id == 5));
        assert!(decode(topics::AGGTRADES, Some(b"{oops")).unwrap_err().contains("not a aggTrade record"));
        assert!(decode(topics::KLINES, Some(agg)).is_err(), "a trade is not a kline");
        let v2 = String::from_utf8_lossy(agg).replace("\"v\":1", "\"v\":2");
        assert!(decode(topics::AGGTRADES, Some(v2.as_bytes())).unwrap_err().contains("v2"));
        assert!(decode(topics::AGGTRADES, None).is_err());
    }
}
