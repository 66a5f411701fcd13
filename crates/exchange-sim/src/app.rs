//! The simulator's configuration and shared state.

use crate::clock::SimClock;
use crate::faults::{Faults, StreamKind};
use crate::limits::{LimitConfig, Limiter};
use crate::market::{Market, MarketConfig};
use crate::metrics::SimMetrics;
use clap::Parser;
use kit::contract::ports;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// exchange-sim's configuration, from the environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "exchange-sim", version)]
pub struct Config {
    #[arg(
        long,
        env = "LISTEN_ADDR",
        default_value_t = SocketAddr::from(([0, 0, 0, 0], ports::EXCHANGE_SIM))
    )]
    pub listen: SocketAddr,
    /// Symbols traded, comma separated.
    #[arg(
        long,
        env = "SIM_SYMBOLS",
        value_delimiter = ',',
        default_value = "BTCUSDT,ETHUSDT,BNBUSDT"
    )]
    pub symbols: Vec<String>,
    /// Seed of every symbol's random walk: the same seed gives the same market.
    #[arg(long, env = "SIM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Aggregate trades per second per symbol (real time), on average over the symbols.
    #[arg(long, env = "SIM_TRADES_PER_SEC", default_value_t = 20.0)]
    pub trades_per_sec: f64,
    /// Skew of the rates over the symbols, in list order: symbol k (from 1) trades in
    /// proportion to k^-skew, the total staying SIM_TRADES_PER_SEC × symbols. 0: every
    /// symbol alike; 1.5 at 400 symbols and 25/s: the first near 4,000/s, the tenth near
    /// 125/s, the last near 0.5/s (a real market's few hot pairs and long tail).
    #[arg(long, env = "SIM_RATE_SKEW", default_value_t = 0.0)]
    pub rate_skew: f64,
    /// Market clock speed: 10 makes a 1-minute kline close every 6 real seconds.
    #[arg(long, env = "SIM_SPEED", default_value_t = 1.0)]
    pub speed: f64,
    /// Aggregate trades kept per symbol (older ones are forgotten; memory stays flat).
    #[arg(long, env = "SIM_HISTORY_TRADES", default_value_t = 200_000)]
    pub history_trades: usize,
    /// Aggregate trades kept over all symbols (about 60 bytes each): each symbol keeps at
    /// most this divided by the symbol count, so 400 symbols stay within the same memory.
    #[arg(long, env = "SIM_HISTORY_TRADES_TOTAL", default_value_t = 4_000_000)]
    pub history_trades_total: usize,
    /// Closed 1m klines kept per symbol.
    #[arg(long, env = "SIM_HISTORY_KLINES", default_value_t = 1_440)]
    pub history_klines: usize,
    /// REQUEST_WEIGHT limit per window (Binance: 6000 per minute).
    #[arg(long, env = "SIM_WEIGHT_LIMIT", default_value_t = 6_000)]
    pub weight_limit: u32,
    /// Weight window in seconds (Binance: 60; shorter only to speed up tests).
    #[arg(long, env = "SIM_WEIGHT_WINDOW_SECS", default_value_t = 60)]
    pub weight_window_secs: u64,
    /// Requests answered 429 in one window before the client is banned (418).
    #[arg(long, env = "SIM_BAN_AFTER", default_value_t = 5)]
    pub ban_after: u32,
    /// Ban length in seconds (Binance: from 2 minutes up to 3 days).
    #[arg(long, env = "SIM_BAN_SECS", default_value_t = 120)]
    pub ban_secs: u64,
    /// Server ping period on WebSocket connections.
    #[arg(long, env = "SIM_WS_PING_SECS", default_value_t = 20)]
    pub ws_ping_secs: u64,
    /// Close a connection whose client has not answered a ping for this long.
    #[arg(long, env = "SIM_WS_PONG_TIMEOUT_SECS", default_value_t = 60)]
    pub ws_pong_timeout_secs: u64,
    /// Connection lifetime (Binance: 24 h).
    #[arg(long, env = "SIM_WS_LIFETIME_SECS", default_value_t = 86_400)]
    pub ws_lifetime_secs: u64,
    /// Incoming messages per second a client may send before it is disconnected.
    #[arg(long, env = "SIM_WS_MAX_CLIENT_MSGS_PER_SEC", default_value_t = 5)]
    pub ws_max_client_msgs_per_sec: u32,
    /// Log format: json or text.
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

/// One event on the streams, serialized once for every connection.
#[derive(Debug)]
pub struct Event {
    /// Stream name as clients subscribe to it, e.g. `btcusdt@aggTrade`.
    pub stream: String,
    pub payload: String,
}

/// Commands to every WebSocket session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCmd {
    /// Drop the TCP connection without a close frame.
    Disconnect,
    /// Send `{"e":"serverShutdown"}` (then keep serving until the client leaves).
    ServerShutdown,
    /// Send malformed frames: not JSON, a trade without a price, a negative quantity.
    Garbage,
}

pub struct SymbolState {
    pub name: String,
    pub lower: String,
    pub market: Mutex<Market>,
}

/// Everything the engine, the REST API, the streams and the control API share.
pub struct App {
    pub config: Config,
    pub clock: SimClock,
    pub symbols: Vec<SymbolState>,
    pub limiter: Mutex<Limiter>,
    pub faults: Mutex<Faults>,
    pub events: broadcast::Sender<Arc<Event>>,
    pub commands: broadcast::Sender<SessionCmd>,
    pub metrics: SimMetrics,
    started: Instant,
}

/// Each of `n` symbols' trades per second: `average` each when `skew` is 0, else in
/// proportion to k^-skew (k from 1), summing to `average × n`.
pub fn rates(average: f64, skew: f64, n: usize) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-skew.max(0.0))).collect();
    let sum: f64 = weights.iter().sum();
    weights
        .iter()
        .map(|w| average * n as f64 * w / sum)
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl App {
    pub fn new(config: Config, metrics: SimMetrics) -> Arc<Self> {
        let clock = SimClock::new(config.speed);
        let rates = rates(
            config.trades_per_sec,
            config.rate_skew,
            config.symbols.len(),
        );
        let market_config = |i: usize| MarketConfig {
            seed: config.seed,
            trades_per_sec: rates[i],
            history_trades: config
                .history_trades
                .min(config.history_trades_total / config.symbols.len().max(1))
                .max(1),
            history_klines: config.history_klines,
        };
        let symbols = config
            .symbols
            .iter()
            .enumerate()
            .map(|(i, s)| SymbolState {
                name: s.to_uppercase(),
                lower: s.to_lowercase(),
                market: Mutex::new(Market::new(
                    &s.to_uppercase(),
                    market_config(i),
                    start_price(i),
                    clock.now_ms(),
                )),
            })
            .collect();
        let limiter = Limiter::new(LimitConfig {
            weight_limit: config.weight_limit,
            window_ms: config.weight_window_secs.max(1).saturating_mul(1000),
            ban_after: config.ban_after,
            ban_ms: config.ban_secs.saturating_mul(1000),
        });
        let (events, _) = broadcast::channel(65_536);
        let (commands, _) = broadcast::channel(16);
        Arc::new(Self {
            config,
            clock,
            symbols,
            limiter: Mutex::new(limiter),
            faults: Mutex::new(Faults::default()),
            events,
            commands,
            metrics,
            started: Instant::now(),
        })
    }

    /// Real monotonic milliseconds since start (rate limits and faults).
    pub fn real_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Wall-clock milliseconds: weight windows align to the clock, as Binance's do.
    pub fn wall_ms(&self) -> u64 {
        u64::try_from(kit::time::now_ms()).unwrap_or(0)
    }

    pub fn symbol(&self, name: &str) -> Option<&SymbolState> {
        self.symbols.iter().find(|s| s.name == name)
    }

    pub fn market<'a>(&self, s: &'a SymbolState) -> MutexGuard<'a, Market> {
        lock(&s.market)
    }

    /// Trades every market through `minutes` market minutes at once (10 s of trading per
    /// minute), so property tests and fuzzers start with closed klines and history.
    pub fn warm_up(&self, minutes: i64) {
        for s in &self.symbols {
            let mut market = self.market(s);
            let start = market.current_kline().open_time;
            for minute in 1..=minutes {
                market.step(start.saturating_add(minute.saturating_mul(60_000)), 10.0);
            }
        }
    }

    pub fn limiter(&self) -> MutexGuard<'_, Limiter> {
        lock(&self.limiter)
    }

    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    /// Publishes one stream event unless a drop fault withholds it.
    pub fn publish(&self, symbol: &SymbolState, kind: StreamKind, stream: String, payload: String) {
        if self
            .faults()
            .should_drop(&symbol.name, kind, self.real_ms())
        {
            self.metrics.ws_dropped.inc();
            return;
        }
        let _ = self.events.send(Arc::new(Event { stream, payload }));
    }

    /// The server ping period, 1 s to 1 day (a longer one would overflow `Instant + period`).
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.config.ws_ping_secs.clamp(1, 86_400))
    }
}

/// Distinct, realistic starting prices (units of 1e-8).
fn start_price(index: usize) -> i64 {
    const PRICES: [i64; 3] = [6_500_000_000_000, 320_000_000_000, 60_000_000_000];
    PRICES[index % PRICES.len()] / (1 + i64::try_from(index / PRICES.len()).unwrap_or(0))
}

#[cfg(test)]
mod rate_tests {
    use super::rates;

    #[test]
    fn skewed_rates_keep_the_total_and_give_hot_pairs_and_a_long_tail() {
        let flat = rates(20.0, 0.0, 3);
        assert!(flat.iter().all(|r| (r - 20.0).abs() < 1e-9), "{flat:?}");
        let skewed = rates(25.0, 1.5, 400);
        let total: f64 = skewed.iter().sum();
        assert!((total - 10_000.0).abs() < 1e-6, "{total}");
        assert!(
            skewed[0] > 3_000.0 && skewed[9] > 100.0,
            "hot: {:?}",
            &skewed[..10]
        );
        assert!(skewed[399] < 1.0, "tail: {}", skewed[399]);
        assert!(skewed.windows(2).all(|w| w[0] >= w[1]));
        assert!(rates(1.0, 1.0, 0).is_empty());
    }
}
