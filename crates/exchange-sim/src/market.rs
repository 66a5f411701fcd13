//! One symbol's deterministic market: a seeded random walk of aggregate trades with
//! contiguous ids, 1-minute klines built from exactly those trades, and a small order book.
//!
//! History is bounded (`history_trades`, `history_klines`): older records are dropped, so
//! memory stays flat however long the simulator runs. REST, WebSocket and `/sim/truth` all
//! read the same records, so they agree exactly.

use crate::records::{AggTrade, Kline};
use crate::rng::{symbol_seed, Rng};
use std::collections::VecDeque;

pub const KLINE_MS: i64 = 60_000;
/// Price tick 0.01 and quantity step 0.00001, in units of 1e-8.
const TICK: i64 = 1_000_000;
const QTY_STEP: i64 = 1_000;
const BOOK_LEVELS: i64 = 20;
/// The highest trade rate per symbol: above it one 10 ms engine step would generate more
/// trades than a client can take, and an unbounded rate would never finish a step.
pub const MAX_TRADES_PER_SEC: f64 = 100_000.0;

/// `rate` within `0..=MAX_TRADES_PER_SEC` (NaN is 0).
fn bounded_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        return 0.0;
    }
    rate.clamp(0.0, MAX_TRADES_PER_SEC)
}

/// How a market is generated and how much of it is kept.
#[derive(Debug, Clone)]
pub struct MarketConfig {
    pub seed: u64,
    pub trades_per_sec: f64,
    pub history_trades: usize,
    pub history_klines: usize,
}

const DAY_MS: i64 = 86_400_000;

/// One symbol's 24 h rolling statistics; prices and volumes in units of 1e-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticker {
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub last: i64,
    pub volume: i128,
    pub quote_volume: i128,
    pub open_time: i64,
    pub close_time: i64,
    pub first_id: i64,
    pub last_id: i64,
    pub count: i64,
}

/// What one step of the clock produced.
#[derive(Debug, Default)]
pub struct Step {
    pub trades: Vec<AggTrade>,
    pub closed: Vec<Kline>,
}

/// One depth diff: `U`..`u` and the changed levels.
#[derive(Debug, Clone)]
pub struct DepthDiff {
    pub first_update_id: u64,
    pub final_update_id: u64,
    pub bids: Vec<(i64, i64)>,
    pub asks: Vec<(i64, i64)>,
}

#[derive(Debug)]
pub struct Market {
    pub symbol: String,
    config: MarketConfig,
    rng: Rng,
    next_agg_id: u64,
    next_trade_id: u64,
    price: i64,
    carry: f64,
    trades: VecDeque<AggTrade>,
    klines: VecDeque<Kline>,
    current: Kline,
    last_update_id: u64,
}

impl Market {
    pub fn new(symbol: &str, mut config: MarketConfig, start_price: i64, now_ms: i64) -> Self {
        config.trades_per_sec = bounded_rate(config.trades_per_sec);
        let mut rng = Rng::new(symbol_seed(config.seed, symbol));
        let next_agg_id = u64::try_from(rng.range(100_000, 900_000)).unwrap_or(100_000);
        let open = now_ms - now_ms.rem_euclid(KLINE_MS);
        Self {
            symbol: symbol.to_string(),
            next_trade_id: next_agg_id * 3,
            next_agg_id,
            price: start_price,
            carry: 0.0,
            trades: VecDeque::new(),
            klines: VecDeque::new(),
            current: Kline::empty(open, KLINE_MS, start_price),
            last_update_id: next_agg_id * 10,
            rng,
            config,
        }
    }

    pub fn set_rate(&mut self, trades_per_sec: f64) {
        self.config.trades_per_sec = bounded_rate(trades_per_sec);
    }

    pub fn rate(&self) -> f64 {
        self.config.trades_per_sec
    }

    /// Advances the market to `now_ms`, `dt_secs` of market time after the previous step.
    pub fn step(&mut self, now_ms: i64, dt_secs: f64) -> Step {
        let mut step = Step {
            closed: self.close_until(now_ms),
            ..Step::default()
        };
        self.carry += self.config.trades_per_sec * dt_secs;
        let due = self.carry.floor();
        self.carry -= due;
        for _ in 0..(due as u64) {
            let trade = self.next_trade(now_ms);
            self.current.add(&trade);
            self.push_trade(trade);
            step.trades.push(trade);
        }
        step
    }

    /// Closes every bar that ended before `now_ms`, including empty minutes.
    fn close_until(&mut self, now_ms: i64) -> Vec<Kline> {
        let mut closed = Vec::new();
        while now_ms > self.current.close_time {
            let next = Kline::empty(self.current.close_time + 1, KLINE_MS, self.current.close);
            let done = std::mem::replace(&mut self.current, next);
            self.klines.push_back(done.clone());
            if self.klines.len() > self.config.history_klines {
                self.klines.pop_front();
            }
            closed.push(done);
        }
        closed
    }

    fn next_trade(&mut self, now_ms: i64) -> AggTrade {
        self.price = (self.price + self.rng.range(-2, 2) * TICK).max(TICK);
        let raw = u64::try_from(self.rng.range(1, 3)).unwrap_or(1);
        let trade = AggTrade {
            id: self.next_agg_id,
            price: self.price,
            qty: self.rng.range(1, 2_000) * QTY_STEP,
            first_trade_id: self.next_trade_id,
            last_trade_id: self.next_trade_id + raw - 1,
            time_ms: now_ms,
            buyer_is_maker: self.rng.coin(),
        };
        self.next_agg_id += 1;
        self.next_trade_id += raw;
        trade
    }

    fn push_trade(&mut self, trade: AggTrade) {
        self.trades.push_back(trade);
        if self.trades.len() > self.config.history_trades {
            self.trades.pop_front();
        }
    }

    /// The open bar (what the kline stream pushes every 2 s with `x: false`).
    pub fn current_kline(&self) -> &Kline {
        &self.current
    }

    pub fn last_price(&self) -> i64 {
        self.price
    }

    /// The 24 h rolling statistics (`/api/v3/ticker/24hr`) over the held bars and the open
    /// one: a history shorter than a day gives a shorter window. Raw trade ids are -1 and
    /// the count 0 when nothing traded in it, as on Binance.
    pub fn ticker_24h(&self, now_ms: i64) -> Ticker {
        let since = now_ms.saturating_sub(DAY_MS);
        let bars: Vec<&Kline> = self
            .klines
            .iter()
            .chain(std::iter::once(&self.current))
            .filter(|k| k.close_time >= since)
            .collect();
        let traded = || bars.iter().filter(|k| k.trades > 0);
        let first_id = traded().next().map_or(-1, |k| k.first_trade_id);
        let last_id = traded().next_back().map_or(-1, |k| k.last_trade_id);
        Ticker {
            open: bars.first().map_or(self.price, |k| k.open),
            high: bars.iter().map(|k| k.high).max().unwrap_or(self.price),
            low: bars.iter().map(|k| k.low).min().unwrap_or(self.price),
            last: self.price,
            volume: bars.iter().map(|k| k.volume).sum(),
            quote_volume: bars.iter().map(|k| k.quote_volume).sum(),
            open_time: since,
            close_time: now_ms,
            first_id,
            last_id,
            count: if first_id < 0 {
                0
            } else {
                last_id - first_id + 1
            },
        }
    }

    /// Id of the newest aggregate trade, if any.
    pub fn last_agg_id(&self) -> Option<u64> {
        self.trades.back().map(|t| t.id)
    }

    /// Id of the oldest aggregate trade still held.
    pub fn first_agg_id(&self) -> Option<u64> {
        self.trades.front().map(|t| t.id)
    }

    /// Trades with id ≥ `from_id`, at most `limit` (ids are contiguous, so this is an index).
    pub fn aggs_from_id(&self, from_id: u64, limit: usize) -> Vec<AggTrade> {
        let Some(first) = self.first_agg_id() else {
            return Vec::new();
        };
        let start = usize::try_from(from_id.saturating_sub(first)).unwrap_or(usize::MAX);
        self.trades
            .iter()
            .skip(start)
            .take(limit)
            .copied()
            .collect()
    }

    /// Trades with `start_ms ≤ T ≤ end_ms`, oldest first, at most `limit`.
    pub fn aggs_by_time(&self, start_ms: i64, end_ms: i64, limit: usize) -> Vec<AggTrade> {
        let start = self.trades.partition_point(|t| t.time_ms < start_ms);
        self.trades
            .iter()
            .skip(start)
            .take_while(|t| t.time_ms <= end_ms)
            .take(limit)
            .copied()
            .collect()
    }

    /// The newest `limit` trades, oldest first.
    pub fn aggs_recent(&self, limit: usize) -> Vec<AggTrade> {
        let skip = self.trades.len().saturating_sub(limit);
        self.trades.iter().skip(skip).copied().collect()
    }

    /// Closed bars plus the open one with `start ≤ open_time ≤ end`, at most `limit`:
    /// the oldest first when `start` is given, else the newest `limit`.
    pub fn klines(&self, start: Option<i64>, end: Option<i64>, limit: usize) -> Vec<Kline> {
        let (lo, hi) = (start.unwrap_or(i64::MIN), end.unwrap_or(i64::MAX));
        let all = self.klines.iter().chain(std::iter::once(&self.current));
        let matching: Vec<Kline> = all
            .filter(|k| k.open_time >= lo && k.open_time <= hi)
            .cloned()
            .collect();
        if start.is_some() {
            matching.into_iter().take(limit).collect()
        } else {
            let skip = matching.len().saturating_sub(limit);
            matching.into_iter().skip(skip).collect()
        }
    }

    /// Closed bars only, for `/sim/truth`.
    pub fn closed_klines(&self, start: i64, end: i64) -> Vec<Kline> {
        self.klines
            .iter()
            .filter(|k| k.open_time >= start && k.open_time <= end)
            .cloned()
            .collect()
    }

    /// All held trades with `from ≤ id ≤ to`, for `/sim/truth`.
    pub fn aggs_between_ids(&self, from: u64, to: u64) -> Vec<AggTrade> {
        let n = usize::try_from(to.saturating_sub(from).saturating_add(1)).unwrap_or(usize::MAX);
        self.aggs_from_id(from, n)
    }

    /// The next depth diff; update ids are contiguous (`U` = previous `u` + 1).
    pub fn depth_diff(&mut self) -> DepthDiff {
        let changes = u64::try_from(self.rng.range(1, 4)).unwrap_or(1);
        let first = self.last_update_id + 1;
        self.last_update_id += changes;
        let mut diff = DepthDiff {
            first_update_id: first,
            final_update_id: self.last_update_id,
            bids: vec![],
            asks: vec![],
        };
        for _ in 0..changes {
            let level = self.rng.range(1, BOOK_LEVELS);
            let qty = self.rng.range(0, 50_000) * QTY_STEP;
            if self.rng.coin() {
                diff.bids.push((self.price - level * TICK, qty));
            } else {
                diff.asks.push((self.price + level * TICK, qty));
            }
        }
        diff
    }

    /// A book snapshot of `limit` levels a side (synthetic around the last price):
    /// (lastUpdateId, bids, asks), each level (price, quantity) in ticks and lots.
    pub fn depth_snapshot(&mut self, limit: usize) -> (u64, Levels, Levels) {
        let levels = i64::try_from(limit).unwrap_or(BOOK_LEVELS);
        let mut level = |side: i64, i: i64| {
            (
                self.price + side * i * TICK,
                self.rng.range(1, 50_000) * QTY_STEP,
            )
        };
        let bids: Vec<_> = (1..=levels).map(|i| level(-1, i)).collect();
        let asks: Vec<_> = (1..=levels).map(|i| level(1, i)).collect();
        (self.last_update_id, bids, asks)
    }

    pub fn held_trades(&self) -> usize {
        self.trades.len()
    }

    pub fn held_klines(&self) -> usize {
        self.klines.len()
    }
}

/// Book levels, (price, quantity) in ticks and lots.
pub type Levels = Vec<(i64, i64)>;

#[cfg(test)]
mod tests {
    use super::*;

    fn market(rate: f64) -> Market {
        let cfg = MarketConfig {
            seed: 42,
            trades_per_sec: rate,
            history_trades: 1_000,
            history_klines: 3,
        };
        Market::new("BTCUSDT", cfg, 4_300_000_000_000, 0)
    }

    #[test]
    fn ids_are_contiguous_and_trade_ids_chain() {
        let mut m = market(100.0);
        let trades: Vec<AggTrade> = (1..=50).flat_map(|i| m.step(i * 100, 0.1).trades).collect();
        assert_eq!(trades.len(), 500);
        for w in trades.windows(2) {
            assert_eq!(w[1].id, w[0].id + 1);
            assert_eq!(w[1].first_trade_id, w[0].last_trade_id + 1);
        }
    }

    #[test]
    fn same_seed_gives_the_same_market() {
        let (mut a, mut b) = (market(50.0), market(50.0));
        for i in 1..=20 {
            assert_eq!(a.step(i * 100, 0.1).trades, b.step(i * 100, 0.1).trades);
        }
    }

    #[test]
    fn klines_close_per_minute_and_equal_their_trades() {
        let mut m = market(10.0);
        let mut closed = Vec::new();
        let mut trades = Vec::new();
        for i in 1..=1_300 {
            let s = m.step(i * 100, 0.1); // 130 s of market time
            closed.extend(s.closed);
            trades.extend(s.trades);
        }
        assert_eq!(closed.len(), 2);
        let first: Vec<&AggTrade> = trades.iter().filter(|t| t.time_ms < KLINE_MS).collect();
        let mut rebuilt = Kline::empty(0, KLINE_MS, 4_300_000_000_000);
        first.iter().for_each(|t| rebuilt.add(t));
        assert_eq!(closed[0], rebuilt);
        assert_eq!(closed[1].open_time, KLINE_MS);
    }

    #[test]
    fn history_is_bounded_and_queries_respect_it() {
        let mut m = market(1_000.0);
        for i in 1..=30 {
            m.step(i * 100, 0.1);
        }
        assert_eq!(m.held_trades(), 1_000); // 3000 generated, 1000 kept
        let first = m.first_agg_id().expect("first");
        assert_eq!(m.aggs_from_id(first + 10, 5)[0].id, first + 10);
        assert_eq!(
            m.aggs_from_id(first - 50, 2)[0].id,
            first,
            "older ids start at the oldest held"
        );
        assert_eq!(m.aggs_recent(3).last().map(|t| t.id), m.last_agg_id());
        let by_time = m.aggs_by_time(2_900, 3_000, 10_000);
        assert!(by_time.iter().all(|t| (2_900..=3_000).contains(&t.time_ms)));
        for i in 31..=3_000 {
            m.step(i * 100, 0.0001);
        }
        assert_eq!(m.held_klines(), 3);
    }

    #[test]
    fn the_ticker_names_the_newest_raw_trade_id_of_the_held_trades() {
        let mut m = market(50.0);
        let t0 = m.current_kline().open_time;
        assert_eq!(m.ticker_24h(t0).last_id, -1, "nothing traded yet");
        for i in 1..=150 {
            m.step(t0 + i * 1_000, 1.0);
        }
        let newest = m.aggs_recent(1)[0];
        let ticker = m.ticker_24h(t0 + 150_000);
        assert_eq!(
            ticker.last_id,
            i64::try_from(newest.last_trade_id).expect("small")
        );
        assert_eq!(ticker.count, ticker.last_id - ticker.first_id + 1);
        assert!(ticker.low <= ticker.last && ticker.last <= ticker.high);
        assert_eq!(ticker.close_time, t0 + 150_000);
    }

    #[test]
    fn depth_update_ids_are_contiguous() {
        let mut m = market(1.0);
        let a = m.depth_diff();
        let b = m.depth_diff();
        assert_eq!(b.first_update_id, a.final_update_id + 1);
        assert_eq!(m.depth_snapshot(5).0, b.final_update_id);
    }
}
