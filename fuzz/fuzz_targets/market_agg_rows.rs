//! `market::binance::parse_agg_rows` on any text: never panics; every record it returns is
//! a back-fill record with checked decimals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use market::binance::parse_agg_rows;
use market::{decimal::check, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for t in parse_agg_rows("BTCUSDT", text, 7).unwrap_or_default() {
        assert!(
            t.source == Source::Backfill && t.event_time_ms.is_none() && t.received_at_ms == 7,
            "{t:?}"
        );
        assert!(
            check("p", &t.price).is_ok() && check("q", &t.qty).is_ok(),
            "{t:?}"
        );
    }
});
