//! `market::binance::parse_kline_rows` on any text and any "now": never panics; it returns
//! closed bars only (close time before now).
#![no_main]

use libfuzzer_sys::fuzz_target;
use market::binance::parse_kline_rows;

fuzz_target!(|data: &[u8]| {
    let Some((now, body)) = data.split_first_chunk::<8>() else {
        return;
    };
    let now = i64::from_le_bytes(*now);
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    for k in parse_kline_rows("BTCUSDT", "1m", text, now).unwrap_or_default() {
        assert!(k.close_time_ms < now, "an open bar was returned: {k:?}");
    }
});
