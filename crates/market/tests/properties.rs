//! Property tests of the Binance codecs (random input on every `cargo test`; `make fuzz`
//! goes further): no input panics; generated frames and rows read back to exactly the
//! records they were made from; `decimal::check` accepts exactly `digits[.digits]`.

use market::binance::{parse_agg_rows, parse_frame, parse_kline_rows, CodecError, Frame};
use market::{decimal, AggTrade, Kline, Source, SCHEMA_VERSION};
use proptest::prelude::*;
use serde_json::{json, Value};

/// 256 cases unless `PROPTEST_CASES` says otherwise; failures are not persisted.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Exact decimals as Binance prints them, leading and trailing zeros included.
fn dec() -> impl Strategy<Value = String> {
    "[0-9]{1,20}(\\.[0-9]{1,18})?"
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            any::<String>(),
            dec(),
            Just("aggTrade".to_string()),
            Just("kline".to_string())
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        let key = prop_oneof![
            "[a-zA-Z]{1,2}",
            Just("e".to_string()),
            Just("k".to_string()),
            Just("data".to_string()),
            Just("stream".to_string())
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map(key, inner, 0..12)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
struct Agg {
    event_ms: i64,
    symbol: String,
    id: u64,
    price: String,
    qty: String,
    first: u64,
    last: u64,
    trade_ms: i64,
    maker: bool,
}

fn agg() -> impl Strategy<Value = Agg> {
    (
        any::<i64>(),
        any::<String>(),
        any::<u64>(),
        dec(),
        dec(),
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<bool>(),
    )
        .prop_map(
            |(event_ms, symbol, id, price, qty, first, last, trade_ms, maker)| Agg {
                event_ms,
                symbol,
                id,
                price,
                qty,
                first,
                last,
                trade_ms,
                maker,
            },
        )
}

impl Agg {
    fn ws(&self) -> Value {
        json!({"e": "aggTrade", "E": self.event_ms, "s": self.symbol, "a": self.id, "p": self.price, "q": self.qty,
               "f": self.first, "l": self.last, "T": self.trade_ms, "m": self.maker, "M": true})
    }

    fn rest(&self) -> Value {
        json!({"a": self.id, "p": self.price, "q": self.qty, "f": self.first, "l": self.last, "T": self.trade_ms, "m": self.maker, "M": true})
    }

    fn record(
        &self,
        symbol: &str,
        event_ms: Option<i64>,
        received_at_ms: i64,
        source: Source,
    ) -> AggTrade {
        AggTrade {
            v: SCHEMA_VERSION,
            symbol: symbol.to_string(),
            agg_id: self.id,
            price: self.price.clone(),
            qty: self.qty.clone(),
            first_trade_id: self.first,
            last_trade_id: self.last,
            trade_time_ms: self.trade_ms,
            buyer_is_maker: self.maker,
            event_time_ms: event_ms,
            received_at_ms,
            source,
        }
    }
}

#[derive(Debug, Clone)]
struct Bar {
    open_ms: i64,
    close_ms: i64,
    /// open, high, low, close, volume, quote volume, taker base, taker quote
    decimals: [String; 8],
    trades: u64,
    ids: (i64, i64),
}

fn bar() -> impl Strategy<Value = Bar> {
    let decimals = [dec(), dec(), dec(), dec(), dec(), dec(), dec(), dec()];
    (
        any::<i64>(),
        any::<i64>(),
        decimals,
        any::<u64>(),
        any::<(i64, i64)>(),
    )
        .prop_map(|(open_ms, close_ms, decimals, trades, ids)| Bar {
            open_ms,
            close_ms,
            decimals,
            trades,
            ids,
        })
}

impl Bar {
    fn ws(&self, event_ms: i64, symbol: &str, interval: &str, closed: bool) -> Value {
        let [o, h, l, c, v, q, tb, tq] = &self.decimals;
        json!({"e": "kline", "E": event_ms, "s": symbol, "k": {"t": self.open_ms, "T": self.close_ms, "s": symbol, "i": interval,
               "f": self.ids.0, "L": self.ids.1, "o": o, "c": c, "h": h, "l": l, "v": v, "n": self.trades, "x": closed,
               "q": q, "V": tb, "Q": tq, "B": "0"}})
    }

    fn rest(&self) -> Value {
        let [o, h, l, c, v, q, tb, tq] = &self.decimals;
        json!([
            self.open_ms,
            o,
            h,
            l,
            c,
            v,
            self.close_ms,
            q,
            self.trades,
            tb,
            tq,
            "0"
        ])
    }

    fn record(
        &self,
        symbol: &str,
        interval: &str,
        event_ms: Option<i64>,
        received_at_ms: i64,
        source: Source,
    ) -> Kline {
        let [o, h, l, c, v, q, tb, tq] = self.decimals.clone();
        let ids = (source == Source::Ws).then_some(self.ids);
        Kline {
            v: SCHEMA_VERSION,
            symbol: symbol.to_string(),
            interval: interval.to_string(),
            open_time_ms: self.open_ms,
            close_time_ms: self.close_ms,
            open: o,
            high: h,
            low: l,
            close: c,
            volume: v,
            quote_volume: q,
            trades: self.trades,
            taker_buy_base: tb,
            taker_buy_quote: tq,
            first_trade_id: ids.map(|i| i.0),
            last_trade_id: ids.map(|i| i.1),
            event_time_ms: event_ms,
            received_at_ms,
            source,
        }
    }
}

/// What `decimal::check` must accept, written differently from it: one or two dot-separated
/// non-empty runs of ASCII digits, at most 64 bytes.
fn is_binance_decimal(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit());
    let parts: Vec<&str> = s.split('.').collect();
    s.len() <= 64 && parts.len() <= 2 && parts.iter().all(|p| digits(p))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>(), now in any::<i64>()) {
        let _ = parse_frame(&text, now);
        let _ = parse_agg_rows("X", &text, now);
        let _ = parse_kline_rows("X", "1m", &text, now);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json_value(), now in any::<i64>()) {
        let text = v.to_string();
        let _ = parse_frame(&text, now);
        let _ = parse_frame(&json!({"stream": "x", "data": v}).to_string(), now);
        let _ = parse_agg_rows("X", &text, now);
        let _ = parse_kline_rows("X", "1m", &text, now);
    }

    #[test]
    fn damaged_frames_are_errors_or_records_never_panics(a in agg(), b in bar(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        for frame in [a.ws().to_string(), b.ws(1, "BTCUSDT", "1m", true).to_string()] {
            let at = cut.index(frame.len() + 1);
            let _ = parse_frame(frame.get(..at).unwrap_or(&frame), 0);
            let mut bytes = frame.into_bytes();
            if let Some(x) = bytes.get_mut(at) {
                *x = byte;
            }
            let _ = parse_frame(&String::from_utf8_lossy(&bytes), 0);
        }
    }

    #[test]
    fn agg_trade_frames_read_back_exactly(a in agg(), received in any::<i64>(), wrapped in any::<bool>()) {
        let frame = if wrapped { json!({"stream": "x@aggTrade", "data": a.ws()}) } else { a.ws() };
        let parsed = parse_frame(&frame.to_string(), received).expect("a valid aggTrade frame");
        prop_assert_eq!(parsed, Frame::AggTrade(a.record(&a.symbol, Some(a.event_ms), received, Source::Ws)));
    }

    #[test]
    fn kline_frames_read_back_exactly(b in bar(), symbol in any::<String>(), interval in any::<String>(), event_ms in any::<i64>(), closed in any::<bool>(), received in any::<i64>()) {
        let parsed = parse_frame(&b.ws(event_ms, &symbol, &interval, closed).to_string(), received).expect("a valid kline frame");
        prop_assert_eq!(parsed, Frame::Kline { kline: b.record(&symbol, &interval, Some(event_ms), received, Source::Ws), closed });
    }

    #[test]
    fn rest_agg_rows_read_back_exactly(rows in prop::collection::vec(agg(), 0..20), symbol in any::<String>(), received in any::<i64>()) {
        let body = Value::from(rows.iter().map(Agg::rest).collect::<Vec<_>>()).to_string();
        let parsed = parse_agg_rows(&symbol, &body, received).expect("valid rows");
        let expected: Vec<AggTrade> = rows.iter().map(|a| a.record(&symbol, None, received, Source::Backfill)).collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn rest_kline_rows_read_back_and_only_closed_bars_are_kept(rows in prop::collection::vec(bar(), 0..20), now in any::<i64>()) {
        let body = Value::from(rows.iter().map(Bar::rest).collect::<Vec<_>>()).to_string();
        let parsed = parse_kline_rows("ETHUSDT", "1m", &body, now).expect("valid rows");
        let expected: Vec<Kline> = rows.iter().filter(|b| b.close_ms < now).map(|b| b.record("ETHUSDT", "1m", None, now, Source::Backfill)).collect();
        prop_assert_eq!(parsed, expected);
    }

    #[test]
    fn one_bad_decimal_fails_the_whole_answer(rows in prop::collection::vec(agg(), 1..10), bad in "[0-9]*[^0-9.][0-9.]*", pick in any::<prop::sample::Index>()) {
        let mut values: Vec<Value> = rows.iter().map(Agg::rest).collect();
        let i = pick.index(values.len());
        values[i]["p"] = Value::from(bad.clone());
        let err = parse_agg_rows("X", &Value::from(values).to_string(), 0).expect_err("a bad price");
        prop_assert!(matches!(&err, CodecError::Decimal(e) if e.field == "p" && e.value == bad), "{err}");
    }

    #[test]
    fn decimal_check_accepts_exactly_digits_dot_digits(s in prop_oneof![any::<String>(), "[0-9.]{0,70}", "[0-9.eE+ -]{0,8}", dec()]) {
        let result = decimal::check("p", &s);
        prop_assert_eq!(result.is_ok(), is_binance_decimal(&s), "{:?} → {:?}", s, result);
        match result {
            Ok(kept) => prop_assert_eq!(kept, s, "returned unchanged"),
            Err(e) => prop_assert_eq!((e.field, e.value), ("p", s)),
        }
    }
}
