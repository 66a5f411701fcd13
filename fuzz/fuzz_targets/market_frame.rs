//! `market::binance::parse_frame` on any text: never panics; a record it returns carries
//! only prices and quantities that `decimal::check` accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use market::binance::{parse_frame, Frame};
use market::decimal::check;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_frame(text, 0) {
        Ok(Frame::AggTrade(t)) => assert!(
            check("p", &t.price).is_ok() && check("q", &t.qty).is_ok(),
            "{t:?}"
        ),
        Ok(Frame::Kline { kline, .. }) => assert!(
            check("o", &kline.open).is_ok() && check("v", &kline.volume).is_ok(),
            "{kline:?}"
        ),
        _ => {}
    }
});
