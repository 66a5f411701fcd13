//! The verifier's core: applies a batch of records to the database and to the continuity
//! state of each (symbol, stream) in one transaction, and says what to do once it commits
//! (back-fill requests to send, metrics to move). State changes are made on a copy that
//! replaces the live state only after the commit, so a failed transaction changes nothing.

use crate::continuity::{Continuity, Effect, Gap};
use crate::store::{self, SymbolKey};
use kit::restarts::RestartEvent;
use market::{AggTrade, BackfillRange, BackfillRequest, Head, Kline, Stream};
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// One kline's length (market::rest::KLINE_MS: the one place it is defined).
pub const KLINE_STEP_MS: i64 = market::rest::KLINE_MS;

/// How far a streamed trade id may run past the exchange's last sampled id (heads come
/// every few seconds; even the busiest pair trades far fewer ids in that time). A record
/// further ahead would open a gap no back-fill can heal: it is refused instead.
pub const MAX_AHEAD_OF_HEAD: i64 = 1_000_000;

/// Symbols are retired only while heads of other symbols keep arriving this recently: a
/// collector that is down says nothing of which symbols it still wants.
pub const HEADS_ALIVE_MS: i64 = 60_000;

/// One decoded message.
#[derive(Debug, Clone)]
pub enum Input {
    Agg(AggTrade),
    Kline(Kline),
    Head(Head),
    Restart(RestartEvent),
}

pub type Key = (String, Stream);

#[derive(Debug, Clone)]
pub struct StreamState {
    pub continuity: Continuity,
    pub last_event_ms: i64,
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub requests: Vec<(i64, BackfillRequest)>,
    pub opened: Vec<Key>,
    pub healed: Vec<(Key, f64)>,
    pub persisted: BTreeMap<Stream, u64>,
    pub duplicates: BTreeMap<Stream, u64>,
    pub mismatches: BTreeMap<Stream, u64>,
}

#[derive(Debug, Default)]
pub struct Verifier {
    pub streams: HashMap<Key, StreamState>,
    pub heads: HashMap<Key, i64>,
    /// Exchange time of each stream's head (the newest trade; the newest closed kline's
    /// close time), comparable with `StreamState::last_event_ms`.
    pub head_times: HashMap<Key, i64>,
    /// The exchange's newest raw trade id per symbol (heads from the 24 h ticker).
    pub trade_heads: HashMap<String, u64>,
    /// The highest raw trade id (`last_trade_id`, Binance's `l`) stored per symbol.
    pub last_trade_ids: HashMap<String, u64>,
    /// When (wall ms) a record or head last named each symbol.
    mentioned: HashMap<String, i64>,
    /// When (wall ms) the newest head of any symbol arrived.
    last_head_ms: Option<i64>,
    restarts: VecDeque<RestartEvent>,
}

pub fn step_of(stream: Stream) -> i64 {
    match stream {
        Stream::AggTrade => 1,
        Stream::Kline => KLINE_STEP_MS,
    }
}

/// Keyed records of one stream: (symbol, key, event time) plus the records.
struct Keyed {
    stream: Stream,
    rows: Vec<(String, i64, i64)>,
}

impl Verifier {
    /// State as stored: continuity per stream and the gaps still open.
    pub fn resume(
        states: Vec<(String, String, i64, i64)>,
        gaps: Vec<(String, String, Gap)>,
    ) -> Self {
        let mut v = Self::default();
        for (symbol, stream, max_seen, last_event_ms) in states {
            let Some(stream) = parse_stream(&stream) else {
                continue;
            };
            let continuity = Continuity::resume(step_of(stream), Some(max_seen), Vec::new());
            v.streams.insert(
                (symbol, stream),
                StreamState {
                    continuity,
                    last_event_ms,
                },
            );
        }
        let now = kit::time::now_ms();
        for (symbol, _) in v.streams.keys() {
            v.mentioned.insert(symbol.clone(), now);
        }
        for (symbol, stream, gap) in gaps {
            if let Some(s) = parse_stream(&stream).and_then(|st| v.streams.get_mut(&(symbol, st))) {
                s.continuity.gaps.push(gap);
            }
        }
        v
    }

    /// Applies `batch` within `tx`; the caller commits, then calls [`Verifier::commit`].
    pub async fn apply(
        &self,
        tx: &mut PgConnection,
        batch: &[Input],
        now_ms: i64,
    ) -> sqlx::Result<(HashMap<Key, StreamState>, Outcome)> {
        let mut work = self.streams.clone();
        let mut out = Outcome::default();
        let aggs: Vec<AggTrade> = batch
            .iter()
            .filter_map(|i| {
                if let Input::Agg(a) = i {
                    Some(a.clone())
                } else {
                    None
                }
            })
            .collect();
        let klines: Vec<Kline> = batch
            .iter()
            .filter_map(|i| {
                if let Input::Kline(k) = i {
                    Some(k.clone())
                } else {
                    None
                }
            })
            .collect();
        if !aggs.is_empty() {
            let inserted = store::insert_aggs(tx, &aggs).await?;
            self.check_aggs(tx, &aggs, &inserted, &mut out).await?;
            let keyed = Keyed {
                stream: Stream::AggTrade,
                rows: aggs
                    .iter()
                    .map(|a| (a.symbol.clone(), store::big(a.agg_id), a.trade_time_ms))
                    .collect(),
            };
            self.advance(tx, &mut work, keyed, now_ms, &mut out).await?;
        }
        if !klines.is_empty() {
            let inserted = store::insert_klines(tx, &klines).await?;
            self.check_klines(tx, &klines, &inserted, &mut out).await?;
            let keyed = Keyed {
                stream: Stream::Kline,
                rows: klines
                    .iter()
                    .map(|k| (k.symbol.clone(), k.open_time_ms, k.close_time_ms))
                    .collect(),
            };
            self.advance(tx, &mut work, keyed, now_ms, &mut out).await?;
        }
        Ok((work, out))
    }

    /// Adopts the state of a committed batch and the batch's heads and restarts.
    pub fn commit(&mut self, work: HashMap<Key, StreamState>, batch: &[Input]) {
        self.commit_at(work, batch, kit::time::now_ms());
    }

    /// [`Verifier::commit`] at wall time `now_ms`.
    pub fn commit_at(&mut self, work: HashMap<Key, StreamState>, batch: &[Input], now_ms: i64) {
        self.streams = work;
        for input in batch {
            if let Some(symbol) = symbol_of(input) {
                self.mentioned.insert(symbol.to_string(), now_ms);
            }
            match input {
                Input::Head(h) => self.adopt_head(h, now_ms),
                Input::Agg(a) => {
                    let stored = self.last_trade_ids.entry(a.symbol.clone()).or_default();
                    *stored = (*stored).max(a.last_trade_id);
                }
                Input::Restart(r) => {
                    self.restarts.push_back(r.clone());
                    if self.restarts.len() > 100 {
                        self.restarts.pop_front();
                    }
                }
                _ => {}
            }
        }
    }

    async fn check_aggs(
        &self,
        tx: &mut PgConnection,
        aggs: &[AggTrade],
        inserted: &[SymbolKey],
        out: &mut Outcome,
    ) -> sqlx::Result<()> {
        *out.persisted.entry(Stream::AggTrade).or_default() += inserted.len() as u64;
        let again = not_inserted(aggs, inserted, |a| {
            (a.symbol.as_str(), store::big(a.agg_id))
        });
        *out.duplicates.entry(Stream::AggTrade).or_default() += again.len() as u64;
        for (symbol, records) in group(&again, |a| a.symbol.as_str()) {
            let ids: Vec<i64> = records.iter().map(|a| store::big(a.agg_id)).collect();
            let stored = store::stored_aggs(tx, &symbol, &ids).await?;
            for r in records {
                if let Some(s) = stored
                    .iter()
                    .find(|s| s.agg_id == r.agg_id)
                    .filter(|s| !s.same_data(r))
                {
                    tracing::warn!(%symbol, agg_id = r.agg_id, stored = ?s, received = ?r, "aggregate trade mismatch");
                    *out.mismatches.entry(Stream::AggTrade).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    async fn check_klines(
        &self,
        tx: &mut PgConnection,
        klines: &[Kline],
        inserted: &[SymbolKey],
        out: &mut Outcome,
    ) -> sqlx::Result<()> {
        *out.persisted.entry(Stream::Kline).or_default() += inserted.len() as u64;
        let again = not_inserted(klines, inserted, |k| (k.symbol.as_str(), k.open_time_ms));
        *out.duplicates.entry(Stream::Kline).or_default() += again.len() as u64;
        for (symbol, records) in group(&again, |k| k.symbol.as_str()) {
            let times: Vec<i64> = records.iter().map(|k| k.open_time_ms).collect();
            let stored = store::stored_klines(tx, &symbol, &records[0].interval, &times).await?;
            for r in records {
                if let Some(s) = stored
                    .iter()
                    .find(|s| s.open_time_ms == r.open_time_ms)
                    .filter(|s| !s.same_data(r))
                {
                    tracing::warn!(%symbol, open_time = r.open_time_ms, stored = ?s, received = ?r, "kline mismatch");
                    *out.mismatches.entry(Stream::Kline).or_default() += 1;
                }
            }
        }
        Ok(())
    }

    /// Moves continuity forward with the batch's keys (in key order per symbol).
    async fn advance(
        &self,
        tx: &mut PgConnection,
        work: &mut HashMap<Key, StreamState>,
        mut keyed: Keyed,
        now_ms: i64,
        out: &mut Outcome,
    ) -> sqlx::Result<()> {
        keyed.rows.sort();
        let stream = keyed.stream;
        let mut touched: Vec<String> = keyed.rows.iter().map(|r| r.0.clone()).collect();
        touched.dedup(); // sorted by symbol first
        for (symbol, key, event_ms) in keyed.rows {
            let state = work
                .entry((symbol.clone(), stream))
                .or_insert_with(|| StreamState {
                    continuity: Continuity::new(step_of(stream)),
                    last_event_ms: event_ms,
                });
            state.last_event_ms = state.last_event_ms.max(event_ms);
            match state.continuity.observe(key) {
                Effect::GapOpened(gap) => {
                    let cause = self.cause(now_ms);
                    let id = store::open_gap(tx, &symbol, stream, &gap, &cause).await?;
                    if let Some(g) = state.continuity.gaps.last_mut() {
                        g.id = id;
                    }
                    tracing::warn!(%symbol, stream = stream.as_str(), first = gap.first, last = gap.last, %cause, "gap opened");
                    out.requests.push((
                        id,
                        request(&symbol, stream, gap.first, gap.last, id, now_ms),
                    ));
                    out.opened.push((symbol.clone(), stream));
                }
                Effect::Healed(gap) => {
                    let secs = store::heal_gap(tx, gap.id).await?;
                    tracing::info!(%symbol, stream = stream.as_str(), first = gap.first, last = gap.last, secs, "gap healed");
                    out.healed.push(((symbol.clone(), stream), secs));
                }
                _ => {}
            }
        }
        // only the symbols this batch moved: one statement, whatever the symbol count
        let states: Vec<(String, i64, i64)> = touched
            .into_iter()
            .filter_map(|symbol| {
                let state = work.get(&(symbol.clone(), stream))?;
                Some((symbol, state.continuity.max_seen?, state.last_event_ms))
            })
            .collect();
        store::save_states(tx, stream, &states).await
    }

    fn adopt_head(&mut self, h: &Head, now_ms: i64) {
        self.last_head_ms = Some(now_ms);
        let (agg, kline) = (
            (h.symbol.clone(), Stream::AggTrade),
            (h.symbol.clone(), Stream::Kline),
        );
        if let Some(id) = h.last_agg_id {
            self.heads.insert(agg.clone(), store::big(id));
        }
        if let Some(id) = h.last_trade_id {
            self.trade_heads.insert(h.symbol.clone(), id);
        }
        if let Some(t) = h.last_agg_time_ms {
            self.head_times.insert(agg, t);
        }
        if let Some(t) = h.last_closed_kline_open_ms {
            self.heads.insert(kline.clone(), t);
            // the close time, as stored klines count their event time
            self.head_times
                .insert(kline, t.saturating_add(KLINE_STEP_MS - 1));
        }
    }

    /// Forgets the symbols no record or head named for `grace_ms` while heads of other
    /// symbols kept arriving (the collector no longer wants them: delisted, or taken out of
    /// its configuration), so they stop lagging forever; returns them. A retired symbol
    /// that comes back starts over as a new one (the stored watermark only grows).
    pub fn retire(&mut self, now_ms: i64, grace_ms: i64) -> Vec<String> {
        let heads_alive = self
            .last_head_ms
            .is_some_and(|t| now_ms.saturating_sub(t) <= HEADS_ALIVE_MS);
        if !heads_alive {
            return Vec::new();
        }
        let stale: Vec<String> = self
            .mentioned
            .iter()
            .filter(|(_, t)| now_ms.saturating_sub(**t) > grace_ms)
            .map(|(s, _)| s.clone())
            .collect();
        for symbol in &stale {
            self.mentioned.remove(symbol);
            self.streams.retain(|(s, _), _| s != symbol);
            self.heads.retain(|(s, _), _| s != symbol);
            self.head_times.retain(|(s, _), _| s != symbol);
            self.trade_heads.remove(symbol);
            self.last_trade_ids.remove(symbol);
        }
        stale
    }

    /// Why a gap opening now probably happened: a recent restart, or a loss on the stream.
    fn cause(&self, now_ms: i64) -> String {
        let recent = self.restarts.iter().rev().find(|r| {
            now_ms.saturating_sub(r.at_ms) <= 300_000 && r.at_ms <= now_ms.saturating_add(60_000)
        });
        match recent {
            Some(r) => format!("restart of {} ({}) at {}", r.service, r.reason, r.at_ms),
            None => "stream loss".to_string(),
        }
    }

    /// Why `input` cannot be true given what the exchange said (its head), if so: an
    /// aggregate id past the last aggregate id, or a raw trade id past the last raw one,
    /// by more than [`MAX_AHEAD_OF_HEAD`].
    pub fn implausible(&self, input: &Input) -> Option<String> {
        let Input::Agg(a) = input else { return None };
        let past = |what: &str, id: i64, head: i64| {
            (id > head.saturating_add(MAX_AHEAD_OF_HEAD)).then(|| {
                format!("{what} {id} is more than {MAX_AHEAD_OF_HEAD} past the exchange's last id {head}")
            })
        };
        let agg_head = self.heads.get(&(a.symbol.clone(), Stream::AggTrade));
        let trade_head = self.trade_heads.get(&a.symbol);
        agg_head
            .and_then(|h| past("agg_id", store::big(a.agg_id), *h))
            .or_else(|| {
                let (id, head) = (store::big(a.first_trade_id), store::big(*trade_head?));
                past("first_trade_id", id, head)
            })
    }

    /// What `(symbol, stream)` misses: its open gaps, and how far it is behind the exchange's
    /// head (aggregate ids; or raw trades behind the ticker's `lastId`, which counts each
    /// raw trade, so at least the aggregate trades missing).
    pub fn missing(&self, key: &Key) -> i64 {
        let Some(state) = self.streams.get(key) else {
            return 0;
        };
        let c = &state.continuity;
        if let Some(head) = self.heads.get(key) {
            return c.missing_to(Some(*head));
        }
        let behind = match (
            key.1,
            self.trade_heads.get(&key.0),
            self.last_trade_ids.get(&key.0),
        ) {
            (Stream::AggTrade, Some(head), Some(stored)) => {
                store::big(head.saturating_sub(*stored))
            }
            _ => 0,
        };
        c.missing_to(None).saturating_add(behind)
    }

    /// Requests for what is still missing of the gap `id` (for re-sending).
    pub fn rerequests(&self, id: i64, now_ms: i64) -> Vec<BackfillRequest> {
        for ((symbol, stream), state) in &self.streams {
            if let Some(gap) = state.continuity.gaps.iter().find(|g| g.id == id) {
                return gap
                    .missing
                    .iter()
                    .take(10)
                    .map(|(a, b)| request(symbol, *stream, *a, *b, id, now_ms))
                    .collect();
            }
        }
        Vec::new()
    }

    /// Ids of every open gap.
    pub fn open_gap_ids(&self) -> Vec<i64> {
        self.streams
            .values()
            .flat_map(|s| s.continuity.gaps.iter().map(|g| g.id))
            .collect()
    }
}

/// The records of a batch that were not inserted, to compare with what is stored: every
/// record whose (symbol, key) was already stored, and every later copy of a key the batch
/// itself inserted (the first copy is the row; the WebSocket and back-fill versions of one
/// record can share a batch, and must still be compared).
fn symbol_of(input: &Input) -> Option<&str> {
    match input {
        Input::Agg(a) => Some(&a.symbol),
        Input::Kline(k) => Some(&k.symbol),
        Input::Head(h) => Some(&h.symbol),
        Input::Restart(_) => None,
    }
}

pub fn not_inserted<'a, T>(
    records: &'a [T],
    inserted: &[SymbolKey],
    key: impl Fn(&T) -> (&str, i64),
) -> Vec<&'a T> {
    let mut fresh: HashSet<(&str, i64)> = inserted.iter().map(|(s, k)| (s.as_str(), *k)).collect();
    records.iter().filter(|r| !fresh.remove(&key(r))).collect()
}

fn group<'a, T>(items: &[&'a T], key: impl Fn(&T) -> &str) -> BTreeMap<String, Vec<&'a T>> {
    let mut map: BTreeMap<String, Vec<&'a T>> = BTreeMap::new();
    for item in items {
        map.entry(key(item).to_string()).or_default().push(item);
    }
    map
}

pub fn parse_stream(s: &str) -> Option<Stream> {
    match s {
        "aggTrade" => Some(Stream::AggTrade),
        "kline" => Some(Stream::Kline),
        _ => None,
    }
}

fn request(
    symbol: &str,
    stream: Stream,
    first: i64,
    last: i64,
    gap_id: i64,
    now_ms: i64,
) -> BackfillRequest {
    let range = match stream {
        Stream::AggTrade => BackfillRange::Ids {
            from_id: first.max(0) as u64,
            to_id: last.max(0) as u64,
        },
        Stream::Kline => BackfillRange::Time {
            start_ms: first,
            end_ms: last,
        },
    };
    BackfillRequest {
        v: 1,
        request_id: format!("gap-{gap_id}-{now_ms}"),
        symbol: symbol.to_string(),
        stream,
        range,
        reason: format!("gap {gap_id}"),
        requested_at_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trade_id_far_past_the_exchanges_head_is_implausible() {
        let agg = |id: u64| {
            Input::Agg(AggTrade {
                v: 1,
                symbol: "BTCUSDT".into(),
                agg_id: id,
                price: "1".into(),
                qty: "1".into(),
                first_trade_id: 1,
                last_trade_id: 1,
                trade_time_ms: 1,
                buyer_is_maker: false,
                event_time_ms: None,
                received_at_ms: 1,
                source: market::Source::Ws,
            })
        };
        let mut v = Verifier::default();
        assert_eq!(
            v.implausible(&agg(4_000_000_000_000_000_000)),
            None,
            "no head yet: nothing to compare with"
        );
        let head = Head {
            v: 1,
            symbol: "BTCUSDT".into(),
            last_agg_id: Some(5_000),
            last_agg_time_ms: None,
            last_trade_id: None,
            last_closed_kline_open_ms: None,
            interval: "1m".into(),
            observed_at_ms: 1,
        };
        v.commit(v.streams.clone(), &[Input::Head(head)]);
        assert_eq!(
            v.implausible(&agg(5_000 + 1_000_000)),
            None,
            "ahead of a few-seconds-old head is normal"
        );
        assert!(v
            .implausible(&agg(4_000_000_000_000_000_000))
            .expect("refused")
            .contains("past the exchange's last id 5000"));
        assert_eq!(
            v.implausible(&Input::Head(Head {
                v: 1,
                symbol: "X".into(),
                last_agg_id: None,
                last_agg_time_ms: None,
                last_trade_id: None,
                last_closed_kline_open_ms: None,
                interval: "1m".into(),
                observed_at_ms: 1
            })),
            None
        );
    }

    fn head_of(symbol: &str, id: u64, time_ms: i64) -> Input {
        Input::Head(Head {
            v: 1,
            symbol: symbol.into(),
            last_agg_id: Some(id),
            last_agg_time_ms: Some(time_ms),
            last_trade_id: None,
            last_closed_kline_open_ms: Some(120_000),
            interval: "1m".into(),
            observed_at_ms: time_ms,
        })
    }

    fn agg_with_trades(agg_id: u64, first: u64, last: u64) -> Input {
        Input::Agg(AggTrade {
            v: 1,
            symbol: "BTCUSDT".into(),
            agg_id,
            price: "1".into(),
            qty: "1".into(),
            first_trade_id: first,
            last_trade_id: last,
            trade_time_ms: 1,
            buyer_is_maker: false,
            event_time_ms: None,
            received_at_ms: 1,
            source: market::Source::Ws,
        })
    }

    fn ticker_head(symbol: &str, last_trade_id: u64) -> Input {
        Input::Head(Head {
            v: 1,
            symbol: symbol.into(),
            last_agg_id: None,
            last_agg_time_ms: None,
            last_trade_id: Some(last_trade_id),
            last_closed_kline_open_ms: Some(120_000),
            interval: "1m".into(),
            observed_at_ms: 1,
        })
    }

    #[test]
    fn a_ticker_head_counts_the_raw_trades_behind_it_and_bounds_what_is_plausible() {
        let key = ("BTCUSDT".to_string(), Stream::AggTrade);
        let mut v = Verifier::default();
        let mut work = HashMap::new();
        work.insert(key.clone(), state());
        // aggregate 10 holds raw trades 100..=104; the exchange's newest raw trade is 130
        v.commit_at(
            work,
            &[agg_with_trades(10, 100, 104), ticker_head("BTCUSDT", 130)],
            1,
        );
        assert_eq!(v.missing(&key), 26, "raw trades 105..=130 are not stored");
        v.commit_at(v.streams.clone(), &[agg_with_trades(11, 105, 130)], 2);
        assert_eq!(v.missing(&key), 0, "the stored `l` reached the head");
        assert_eq!(
            v.implausible(&agg_with_trades(12, 131 + MAX_AHEAD_OF_HEAD as u64, 131 + MAX_AHEAD_OF_HEAD as u64)),
            Some(format!("first_trade_id {} is more than {MAX_AHEAD_OF_HEAD} past the exchange's last id 130", 131 + MAX_AHEAD_OF_HEAD)),
        );
        assert_eq!(
            v.implausible(&agg_with_trades(12, 131, 140)),
            None,
            "a few trades on is normal"
        );
        assert_eq!(
            v.missing(&("BTCUSDT".to_string(), Stream::Kline)),
            0,
            "no kline state yet"
        );
    }

    fn state() -> StreamState {
        StreamState {
            continuity: Continuity::resume(1, Some(10), Vec::new()),
            last_event_ms: 1,
        }
    }

    #[test]
    fn heads_give_exchange_times_comparable_with_stored_events() {
        let mut v = Verifier::default();
        v.commit_at(HashMap::new(), &[head_of("BTCUSDT", 7, 5_000)], 9_000);
        let agg = ("BTCUSDT".to_string(), Stream::AggTrade);
        let kline = ("BTCUSDT".to_string(), Stream::Kline);
        assert_eq!(v.heads[&agg], 7);
        assert_eq!(v.head_times[&agg], 5_000);
        assert_eq!(
            v.head_times[&kline], 179_999,
            "the newest closed kline's close time"
        );
    }

    #[test]
    fn symbols_nobody_names_any_more_retire_only_while_other_heads_arrive() {
        const GRACE: i64 = 600_000;
        let mut v = Verifier::default();
        let work: HashMap<Key, StreamState> = [
            (("OLDUSDT".to_string(), Stream::AggTrade), state()),
            (("BTCUSDT".to_string(), Stream::AggTrade), state()),
        ]
        .into();
        v.commit_at(
            work,
            &[head_of("OLDUSDT", 1, 1), head_of("BTCUSDT", 1, 1)],
            0,
        );
        assert!(v.retire(GRACE, GRACE).is_empty(), "within the grace period");
        // Heads of BTCUSDT go on; OLDUSDT is named no more.
        let streams = v.streams.clone();
        v.commit_at(streams, &[head_of("BTCUSDT", 2, 2)], GRACE);
        assert!(
            v.retire(GRACE + HEADS_ALIVE_MS + 1, GRACE).is_empty(),
            "no head of any symbol for a minute: the collector may be down, nothing retires"
        );
        let streams = v.streams.clone();
        v.commit_at(streams, &[head_of("BTCUSDT", 3, 3)], GRACE + 2);
        assert_eq!(v.retire(GRACE + 3, GRACE), ["OLDUSDT"]);
        assert!(v.streams.keys().all(|(s, _)| s == "BTCUSDT"));
        assert!(v.heads.keys().all(|(s, _)| s == "BTCUSDT"));
        assert!(v.retire(GRACE + 4, GRACE).is_empty(), "retired once");
    }

    #[test]
    fn a_key_inserted_by_the_batch_is_new_once_and_compared_after() {
        let records = [("A", 1), ("B", 1), ("A", 1), ("A", 2), ("C", 5)];
        let inserted: Vec<SymbolKey> = vec![("A".into(), 1), ("B".into(), 1)];
        let again = not_inserted(&records, &inserted, |r| (r.0, r.1));
        assert_eq!(
            again,
            vec![&("A", 1), &("A", 2), &("C", 5)],
            "A/1's second copy, and what was already stored"
        );
    }
}
