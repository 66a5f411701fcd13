//! Market records and their exact Binance JSON shapes (BINANCE.md). Prices and quantities
//! are integers in units of 1e-8 and printed with 8 decimals, as Binance prints them.

use serde::Serialize;
use serde_json::{json, Value};

/// Units per 1.0 for prices and quantities.
pub const UNIT: i128 = 100_000_000;

/// `v` units of 1e-8 as a Binance decimal string, e.g. `4312517000000` → "43125.17000000".
pub fn decimal(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let v = v.abs();
    format!("{sign}{}.{:08}", v / UNIT, v % UNIT)
}

/// One aggregate trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggTrade {
    pub id: u64,
    pub price: i64,
    pub qty: i64,
    pub first_trade_id: u64,
    pub last_trade_id: u64,
    pub time_ms: i64,
    pub buyer_is_maker: bool,
}

#[derive(Serialize)]
struct AggRow<'a> {
    a: u64,
    p: &'a str,
    q: &'a str,
    f: u64,
    l: u64,
    #[serde(rename = "T")]
    t: i64,
    m: bool,
    #[serde(rename = "M")]
    best: bool,
}

#[derive(Serialize)]
struct AggEvent<'a> {
    e: &'static str,
    #[serde(rename = "E")]
    event_ms: i64,
    s: &'a str,
    #[serde(flatten)]
    row: AggRow<'a>,
}

impl AggTrade {
    /// The REST `/api/v3/aggTrades` row.
    pub fn rest_json(&self) -> Value {
        let (p, q) = (decimal(self.price.into()), decimal(self.qty.into()));
        serde_json::to_value(self.row(&p, &q)).unwrap_or(Value::Null)
    }

    /// The `<symbol>@aggTrade` stream payload, serialized once per event.
    pub fn ws_json(&self, symbol: &str, event_ms: i64) -> String {
        let (p, q) = (decimal(self.price.into()), decimal(self.qty.into()));
        let event = AggEvent {
            e: "aggTrade",
            event_ms,
            s: symbol,
            row: self.row(&p, &q),
        };
        serde_json::to_string(&event).unwrap_or_default()
    }

    fn row<'a>(&self, p: &'a str, q: &'a str) -> AggRow<'a> {
        AggRow {
            a: self.id,
            p,
            q,
            f: self.first_trade_id,
            l: self.last_trade_id,
            t: self.time_ms,
            m: self.buyer_is_maker,
            best: true,
        }
    }

    /// Raw trades inside this aggregate.
    pub fn trade_count(&self) -> u64 {
        self.last_trade_id - self.first_trade_id + 1
    }
}

/// One kline (candlestick). `first_trade_id`/`last_trade_id` are -1 for a minute without trades.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kline {
    pub open_time: i64,
    pub close_time: i64,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    pub volume: i128,
    pub quote_volume: i128,
    pub trades: u64,
    pub taker_buy_base: i128,
    pub taker_buy_quote: i128,
    pub first_trade_id: i64,
    pub last_trade_id: i64,
}

impl Kline {
    /// An empty bar at `open_time` whose prices all equal the previous close.
    pub fn empty(open_time: i64, interval_ms: i64, price: i64) -> Self {
        Self {
            open_time,
            close_time: open_time + interval_ms - 1,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: 0,
            quote_volume: 0,
            trades: 0,
            taker_buy_base: 0,
            taker_buy_quote: 0,
            first_trade_id: -1,
            last_trade_id: -1,
        }
    }

    /// Adds one aggregate trade (which must fall inside this bar).
    pub fn add(&mut self, t: &AggTrade) {
        if self.trades == 0 {
            self.open = t.price;
            self.high = t.price;
            self.low = t.price;
            self.first_trade_id = i64::try_from(t.first_trade_id).unwrap_or(-1);
        }
        self.high = self.high.max(t.price);
        self.low = self.low.min(t.price);
        self.close = t.price;
        let quote = i128::from(t.price) * i128::from(t.qty) / UNIT;
        self.volume += i128::from(t.qty);
        self.quote_volume += quote;
        if !t.buyer_is_maker {
            self.taker_buy_base += i128::from(t.qty);
            self.taker_buy_quote += quote;
        }
        self.trades += t.trade_count();
        self.last_trade_id = i64::try_from(t.last_trade_id).unwrap_or(-1);
    }

    /// The REST `/api/v3/klines` row.
    pub fn rest_json(&self) -> Value {
        json!([
            self.open_time,
            decimal(self.open.into()),
            decimal(self.high.into()),
            decimal(self.low.into()),
            decimal(self.close.into()),
            decimal(self.volume),
            self.close_time,
            decimal(self.quote_volume),
            self.trades,
            decimal(self.taker_buy_base),
            decimal(self.taker_buy_quote),
            "0"
        ])
    }

    /// The `<symbol>@kline_1m` stream payload.
    pub fn ws_json(&self, symbol: &str, event_ms: i64, closed: bool) -> String {
        json!({
            "e": "kline", "E": event_ms, "s": symbol,
            "k": {
                "t": self.open_time, "T": self.close_time, "s": symbol, "i": "1m",
                "f": self.first_trade_id, "L": self.last_trade_id,
                "o": decimal(self.open.into()), "c": decimal(self.close.into()),
                "h": decimal(self.high.into()), "l": decimal(self.low.into()),
                "v": decimal(self.volume), "n": self.trades, "x": closed,
                "q": decimal(self.quote_volume), "V": decimal(self.taker_buy_base),
                "Q": decimal(self.taker_buy_quote), "B": "0"
            }
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(id: u64, price: i64, qty: i64, maker: bool) -> AggTrade {
        AggTrade {
            id,
            price,
            qty,
            first_trade_id: id * 2,
            last_trade_id: id * 2 + 1,
            time_ms: 1_000,
            buyer_is_maker: maker,
        }
    }

    #[test]
    fn decimals_are_exact_with_eight_places() {
        assert_eq!(decimal(4_312_517_000_000), "43125.17000000");
        assert_eq!(decimal(1_234_000), "0.01234000");
        assert_eq!(decimal(-5), "-0.00000005");
    }

    #[test]
    fn agg_trade_shapes_match_binance() {
        let t = trade(26_129, 1_000_000_000, 5_000_000, true);
        let rest = t.rest_json();
        assert_eq!(
            rest,
            serde_json::json!({"a":26129,"p":"10.00000000","q":"0.05000000","f":52258,"l":52259,"T":1000,"m":true,"M":true})
        );
        let ws: Value = serde_json::from_str(&t.ws_json("BTCUSDT", 1_001)).expect("json");
        assert_eq!(ws["e"], "aggTrade");
        assert_eq!(ws["E"], 1_001);
        assert_eq!(ws["s"], "BTCUSDT");
        assert_eq!(ws["a"], 26_129);
        assert_eq!(ws["p"], "10.00000000");
    }

    #[test]
    fn kline_aggregates_trades_exactly() {
        let mut k = Kline::empty(60_000, 60_000, 900_000_000);
        k.add(&trade(1, 1_000_000_000, 10_000_000, false)); // taker buy 0.1 @ 10
        k.add(&trade(2, 1_200_000_000, 20_000_000, true));
        k.add(&trade(3, 800_000_000, 10_000_000, false));
        assert_eq!(
            (k.open, k.high, k.low, k.close),
            (1_000_000_000, 1_200_000_000, 800_000_000, 800_000_000)
        );
        assert_eq!(k.volume, 40_000_000);
        assert_eq!(k.quote_volume, 100_000_000 + 240_000_000 + 80_000_000);
        assert_eq!(k.taker_buy_base, 20_000_000);
        assert_eq!((k.trades, k.first_trade_id, k.last_trade_id), (6, 2, 7));
        let row = k.rest_json();
        assert_eq!(row[0], 60_000);
        assert_eq!(row[6], 119_999);
        assert_eq!(row[7], "4.20000000");
        assert_eq!(row[11], "0");
        let ws: Value = serde_json::from_str(&k.ws_json("ETHUSDT", 5, true)).expect("json");
        assert_eq!(ws["k"]["x"], true);
        assert_eq!(ws["k"]["i"], "1m");
        assert_eq!(ws["k"]["n"], 6);
    }
}
