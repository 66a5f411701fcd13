//! Back-fill: takes requests from `sync.backfill.v1` (symbol, stream, id or time range),
//! fetches the range over REST through the governor, page by page, and publishes it with
//! `source = backfill`. A request's offset is stored only after all its records are
//! delivered; a request that cannot be read goes to `sync.backfill.v1.dlq`.

use crate::governor::Class;
use crate::metrics::CollectorMetrics;
use crate::publish::Publisher;
use crate::rest::{BinanceRest, RestError, AGG_TRADES, KLINES};
use kit::contract::topics;
use kit::kafka::{self, KafkaContext};
use kit::record::{self, Undecodable};
use kit::time::now_ms;
use kit::Telemetry;
use market::binance::{parse_agg_rows, parse_kline_rows};
use market::rest::{KLINE_INTERVAL, KLINE_MS};
use market::{BackfillRange, BackfillRequest, Stream};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::FutureProducer;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PAGE: usize = 1000;

/// How long a served range stays "in flight": its records are on their way through Kafka
/// to the verifier, which may ask for the same range again meanwhile (its re-requests
/// start 10 s apart). A request inside a range served this recently is not fetched again;
/// after it, the range is fetched again, as records lost on the way must be.
pub const IN_FLIGHT: Duration = Duration::from_secs(30);

/// The ranges served within [`IN_FLIGHT`], by symbol and stream.
#[derive(Debug, Default)]
pub struct Recent {
    served: std::collections::VecDeque<(String, Stream, u64, u64, tokio::time::Instant)>,
}

impl Recent {
    /// A request's symbol, stream and range as inclusive bounds (ids, or ms as u64).
    fn bounds(req: &BackfillRequest) -> (u64, u64) {
        match req.range {
            BackfillRange::Ids { from_id, to_id } => (from_id, to_id),
            BackfillRange::Time { start_ms, end_ms } => (
                u64::try_from(start_ms).unwrap_or(0),
                u64::try_from(end_ms).unwrap_or(0),
            ),
        }
    }

    /// Whether `req` lies inside a range served within [`IN_FLIGHT`].
    pub fn covers(&mut self, req: &BackfillRequest) -> bool {
        let now = tokio::time::Instant::now();
        while self
            .served
            .front()
            .is_some_and(|(.., at)| now.duration_since(*at) > IN_FLIGHT)
        {
            self.served.pop_front();
        }
        let (lo, hi) = Self::bounds(req);
        self.served.iter().any(|(symbol, stream, from, to, _)| {
            *symbol == req.symbol && *stream == req.stream && *from <= lo && hi <= *to
        })
    }

    /// Remembers `req`'s range as served now.
    pub fn served(&mut self, req: &BackfillRequest) {
        let (lo, hi) = Self::bounds(req);
        let now = tokio::time::Instant::now();
        self.served
            .push_back((req.symbol.clone(), req.stream, lo, hi, now));
    }
}

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("rest: {0}")]
    Rest(#[from] RestError),
    #[error("decode: {0}")]
    Decode(#[from] market::binance::CodecError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("shutting down")]
    Stopped,
}

pub struct Backfiller {
    pub rest: Arc<BinanceRest>,
    pub publisher: Arc<Publisher>,
    pub metrics: CollectorMetrics,
    pub symbols: Vec<String>,
    pub shutdown: CancellationToken,
    /// Ranges served within [`IN_FLIGHT`]: a request inside one is not fetched twice.
    pub recent: std::sync::Mutex<Recent>,
}

impl Backfiller {
    /// Serves one request; returns how many records were published. A request for a
    /// symbol this collector does not collect belongs to another collector (each may own
    /// some symbols): it is skipped, not an error.
    pub async fn handle(&self, req: &BackfillRequest) -> Result<usize, BackfillError> {
        if !self.symbols.contains(&req.symbol) {
            tracing::debug!(symbol = %req.symbol, "back-fill request for a symbol collected elsewhere; skipped");
            return Ok(0);
        }
        if self.recent.lock().is_ok_and(|mut r| r.covers(req)) {
            tracing::info!(symbol = %req.symbol, stream = req.stream.as_str(), range = ?req.range, "back-fill range served moments ago and still in flight; not fetched again");
            return Ok(0);
        }
        let served = self.fetch(req).await?;
        if let Ok(mut recent) = self.recent.lock() {
            recent.served(req);
        }
        Ok(served)
    }

    async fn fetch(&self, req: &BackfillRequest) -> Result<usize, BackfillError> {
        match (req.stream, &req.range) {
            (Stream::AggTrade, BackfillRange::Ids { from_id, to_id }) if from_id <= to_id => {
                self.aggs(&req.symbol, *from_id, *to_id).await
            }
            (Stream::Kline, BackfillRange::Time { start_ms, end_ms }) if start_ms <= end_ms => {
                self.klines(&req.symbol, *start_ms, *end_ms).await
            }
            _ => Err(BackfillError::Invalid(format!(
                "range {:?} does not fit stream {:?}",
                req.range, req.stream
            ))),
        }
    }

    async fn aggs(&self, symbol: &str, from: u64, to: u64) -> Result<usize, BackfillError> {
        let (mut next, mut total) = (from, 0);
        while next <= to {
            let query = [
                ("symbol", symbol.to_string()),
                ("fromId", next.to_string()),
                ("limit", PAGE.to_string()),
            ];
            let body = self.get_retrying(AGG_TRADES, &query).await?;
            let page: Vec<_> = parse_agg_rows(symbol, &body, now_ms())?
                .into_iter()
                .filter(|t| t.agg_id <= to)
                .collect();
            let Some(last) = page.last().map(|t| t.agg_id) else {
                break;
            };
            self.publish(symbol, Stream::AggTrade, topics::AGGTRADES, &page)
                .await?;
            (next, total) = (last + 1, total + page.len());
        }
        Ok(total)
    }

    async fn klines(&self, symbol: &str, start: i64, end: i64) -> Result<usize, BackfillError> {
        let (mut next, mut total) = (start, 0);
        let exchange_now = self.server_time_retrying().await?;
        while next <= end {
            let query = [
                ("symbol", symbol.to_string()),
                ("interval", KLINE_INTERVAL.to_string()),
                ("startTime", next.to_string()),
                ("endTime", end.to_string()),
                ("limit", PAGE.to_string()),
            ];
            let body = self.get_retrying(KLINES, &query).await?;
            let page = parse_kline_rows(symbol, KLINE_INTERVAL, &body, exchange_now)?;
            let Some(last) = page.last().map(|k| k.open_time_ms) else {
                break;
            };
            self.publish(symbol, Stream::Kline, topics::KLINES, &page)
                .await?;
            (next, total) = (last + KLINE_MS, total + page.len());
        }
        Ok(total)
    }

    async fn publish<T: serde::Serialize>(
        &self,
        symbol: &str,
        stream: Stream,
        topic: &'static str,
        page: &[T],
    ) -> Result<(), BackfillError> {
        self.publisher.publish_all(topic, symbol, page).await?;
        self.metrics
            .backfill_records
            .with_label_values(&[symbol, stream.as_str()])
            .inc_by(page.len() as u64);
        Ok(())
    }

    async fn server_time_retrying(&self) -> Result<i64, BackfillError> {
        let body = self.get_retrying(crate::rest::TIME, &[]).await?;
        market::rest::parse_server_time(&body)
            .ok_or_else(|| BackfillError::Invalid(format!("no serverTime in {body}")))
    }

    /// Retries rate limits and transient failures (the governor makes them wait); an error
    /// that retrying cannot cure ends the request.
    async fn get_retrying(
        &self,
        endpoint: crate::rest::Endpoint,
        query: &[(&str, String)],
    ) -> Result<String, BackfillError> {
        let attempt = || async {
            match self.rest.get(Class::Backfill, endpoint, query).await {
                Err(err) if err.retryable() => Err(err),
                done => Ok(done),
            }
        };
        let failed =
            |err: RestError| tracing::warn!(error = %err, "back-fill request failed; retrying");
        match kit::retry::retry(
            &self.shutdown,
            kit::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            attempt,
            failed,
        )
        .await
        {
            Some(done) => Ok(done?),
            None => Err(BackfillError::Stopped),
        }
    }
}

/// Reads a back-fill request, or says why it cannot (it is dead-lettered with the reason).
pub fn parse_request(payload: Option<&[u8]>) -> Result<BackfillRequest, Undecodable> {
    record::decode(
        payload,
        "back-fill request",
        market::SCHEMA_VERSION,
        |r: &BackfillRequest| r.v,
    )
}

/// Consumes `sync.backfill.v1` until `shutdown`.
pub async fn consume(
    backfiller: Backfiller,
    consumer: StreamConsumer<KafkaContext>,
    producer: FutureProducer<KafkaContext>,
    telemetry: Telemetry,
) -> Result<(), kit::KitError> {
    consumer.subscribe(&[topics::BACKFILL])?;
    let shutdown = backfiller.shutdown.clone();
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            msg = consumer.recv() => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(err) => {
                telemetry.error(kit::contract::ErrorKind::KafkaConsume, &err);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        // Serving may wait out a Binance ban inside the governor: shutdown must not.
        let served = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            served = handle_message(&backfiller, &msg, &producer, &telemetry) => served,
        };
        if served {
            kafka::store_offset(&consumer, &msg, &telemetry);
        }
    }
}

/// Serves one message; whether its offset may be stored.
async fn handle_message(
    b: &Backfiller,
    msg: &BorrowedMessage<'_>,
    producer: &FutureProducer<KafkaContext>,
    telemetry: &Telemetry,
) -> bool {
    let req = match parse_request(msg.payload()) {
        Ok(req) => req,
        Err(reason) => {
            telemetry.error(kit::contract::ErrorKind::BackfillBadRequest, &reason);
            return kafka::dead_letter(producer, msg, &reason.to_string(), &b.shutdown).await;
        }
    };
    match b.handle(&req).await {
        Ok(n) => {
            tracing::info!(request_id = %req.request_id, symbol = %req.symbol, stream = req.stream.as_str(), records = n, "back-fill served");
            true
        }
        Err(BackfillError::Stopped) => false,
        Err(err @ BackfillError::Invalid(_)) => {
            telemetry.error(kit::contract::ErrorKind::BackfillBadRequest, &err);
            kafka::dead_letter(producer, msg, &err.to_string(), &b.shutdown).await
        }
        Err(err) => {
            telemetry.error(kit::contract::ErrorKind::BackfillFailed, &err);
            kafka::dead_letter(producer, msg, &err.to_string(), &b.shutdown).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(symbol: &str, stream: Stream, range: BackfillRange) -> BackfillRequest {
        BackfillRequest {
            v: market::SCHEMA_VERSION,
            request_id: "t".into(),
            symbol: symbol.into(),
            stream,
            range,
            reason: "gap".into(),
            requested_at_ms: 0,
        }
    }

    #[test]
    fn requests_are_read_as_back_fill_requests_of_the_market_schema() {
        let mut json = serde_json::to_value(req(
            "BTCUSDT",
            Stream::AggTrade,
            BackfillRange::Ids {
                from_id: 1,
                to_id: 2,
            },
        ))
        .expect("json");
        let read = parse_request(Some(json.to_string().as_bytes())).expect("current version");
        assert_eq!(read.symbol, "BTCUSDT");
        json["v"] = (market::SCHEMA_VERSION + 1).into();
        let err = parse_request(Some(json.to_string().as_bytes())).expect_err("next version");
        assert!(
            err.to_string().starts_with("back-fill request schema v"),
            "{err}"
        );
        let err = parse_request(Some(b"[]")).expect_err("not a request");
        assert!(
            err.to_string()
                .starts_with("not a back-fill request record: "),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_range_inside_one_in_flight_is_not_fetched_twice_and_later_it_is() {
        let mut recent = Recent::default();
        let ids = |from_id, to_id| BackfillRange::Ids { from_id, to_id };
        let gap = req("BTCUSDT", Stream::AggTrade, ids(100, 200));
        assert!(!recent.covers(&gap), "nothing served yet");
        recent.served(&gap);
        assert!(recent.covers(&gap), "the same range again");
        assert!(
            recent.covers(&req("BTCUSDT", Stream::AggTrade, ids(150, 200))),
            "a part of it"
        );
        assert!(
            !recent.covers(&req("BTCUSDT", Stream::AggTrade, ids(150, 201))),
            "reaches past it"
        );
        assert!(
            !recent.covers(&req("ETHUSDT", Stream::AggTrade, ids(100, 200))),
            "another symbol"
        );
        let minutes = BackfillRange::Time {
            start_ms: 100,
            end_ms: 200,
        };
        assert!(
            !recent.covers(&req("BTCUSDT", Stream::Kline, minutes)),
            "another stream"
        );
        tokio::time::advance(IN_FLIGHT + Duration::from_secs(1)).await;
        assert!(
            !recent.covers(&gap),
            "after IN_FLIGHT the range is fetched again"
        );
        assert!(recent.served.is_empty(), "and forgotten");
    }
}
