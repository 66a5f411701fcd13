//! Binance REST metadata as BINANCE.md describes it: the server time, the REQUEST_WEIGHT
//! limit and window from exchangeInfo, the `Retry-After` and `X-MBX-USED-WEIGHT-*` headers,
//! and the one kline interval the platform syncs. Parsing only: no I/O, no policy (the
//! collector's governor decides what to do with them).

use std::time::Duration;

/// The kline interval the platform collects and verifies, as Binance names it.
pub const KLINE_INTERVAL: &str = "1m";
/// Its length in milliseconds.
pub const KLINE_MS: i64 = 60_000;

/// No REQUEST_WEIGHT window is longer than a day: a longer one is broken input.
pub const MAX_WINDOW_MS: u64 = 86_400_000;

/// The REQUEST_WEIGHT limit and its window, from exchangeInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightWindow {
    pub limit: u32,
    pub window_ms: u64,
    /// Label and header suffix, e.g. `1m`.
    pub label: String,
}

impl Default for WeightWindow {
    /// Binance's published spot limit (6000 a minute) until exchangeInfo says otherwise.
    fn default() -> Self {
        Self {
            limit: 6000,
            window_ms: 60_000,
            label: "1m".into(),
        }
    }
}

/// The symbols of an exchangeInfo body that trade now (`status` TRADING, spot allowed)
/// against `quote` (e.g. USDT), sorted; `None` when the body has no symbol list.
pub fn parse_trading_symbols(body: &str, quote: &str) -> Option<Vec<String>> {
    let info: serde_json::Value = serde_json::from_str(body).ok()?;
    let mut names: Vec<String> = info["symbols"]
        .as_array()?
        .iter()
        .filter(|s| s["status"] == "TRADING" && s["quoteAsset"] == quote)
        .filter(|s| s["isSpotTradingAllowed"].as_bool() != Some(false))
        .filter_map(|s| s["symbol"].as_str())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// `serverTime` of a `/api/v3/time` body.
pub fn parse_server_time(body: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?["serverTime"].as_i64()
}

/// The REQUEST_WEIGHT entry of an exchangeInfo body; `None` for a limit of 0 or a window
/// of 0 or longer than a day (no such REQUEST_WEIGHT window exists: the input is broken).
pub fn parse_weight_limit(body: &str) -> Option<WeightWindow> {
    let info: serde_json::Value = serde_json::from_str(body).ok()?;
    let entry = info["rateLimits"]
        .as_array()?
        .iter()
        .find(|l| l["rateLimitType"] == "REQUEST_WEIGHT")?;
    let num = entry["intervalNum"].as_u64()?;
    let (unit_ms, letter) = match entry["interval"].as_str()? {
        "SECOND" => (1_000, 's'),
        "MINUTE" => (60_000, 'm'),
        "HOUR" => (3_600_000, 'h'),
        "DAY" => (86_400_000, 'd'),
        _ => return None,
    };
    let window_ms = num
        .checked_mul(unit_ms)
        .filter(|ms| (1..=MAX_WINDOW_MS).contains(ms))?;
    let limit = u32::try_from(entry["limit"].as_u64()?)
        .ok()
        .filter(|l| *l > 0)?;
    Some(WeightWindow {
        limit,
        window_ms,
        label: format!("{num}{letter}"),
    })
}

/// A `Retry-After` in seconds; digits too many for a u64 saturate (a very long time is
/// still a very long time). The governor caps the pause.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_digits(value).map(Duration::from_secs)
}

/// An `X-MBX-USED-WEIGHT-*` value; a count beyond u32 saturates to u32::MAX.
pub fn parse_used_weight(value: &str) -> Option<u32> {
    parse_digits(value).map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

fn parse_digits(value: &str) -> Option<u64> {
    let digits = value.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_request_weight_limit_from_exchange_info() {
        let body = r#"{"rateLimits":[{"rateLimitType":"RAW_REQUESTS","interval":"MINUTE","intervalNum":5,"limit":300000},
                                     {"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000}]}"#;
        assert_eq!(
            parse_weight_limit(body),
            Some(WeightWindow {
                limit: 6000,
                window_ms: 60_000,
                label: "1m".into()
            })
        );
        assert_eq!(parse_weight_limit(r#"{"rateLimits":[]}"#), None);
        assert_eq!(
            parse_server_time(r#"{"serverTime":1499827319559}"#),
            Some(1_499_827_319_559)
        );
        assert_eq!(parse_server_time(r#"{"code":-1000}"#), None);
    }

    #[test]
    fn broken_exchange_info_limits_are_refused() {
        let info = |num: &str, interval: &str, limit: &str| {
            format!(
                r#"{{"rateLimits":[{{"rateLimitType":"REQUEST_WEIGHT","interval":"{interval}","intervalNum":{num},"limit":{limit}}}]}}"#
            )
        };
        for (num, interval, limit, why) in [
            ("18446744073709551615", "DAY", "6000", "window overflows"),
            ("2", "DAY", "6000", "window over a day"),
            ("0", "MINUTE", "6000", "empty window"),
            ("1", "MINUTE", "0", "no limit"),
            ("1", "MINUTE", "4294967296", "limit beyond u32"),
        ] {
            assert_eq!(
                parse_weight_limit(&info(num, interval, limit)),
                None,
                "{why}"
            );
        }
        assert_eq!(
            parse_weight_limit(&info("1", "DAY", "1")).map(|w| w.window_ms),
            Some(86_400_000)
        );
    }

    #[test]
    fn header_numbers_saturate() {
        assert_eq!(
            parse_retry_after("99999999999"),
            Some(Duration::from_secs(99_999_999_999))
        );
        assert_eq!(
            parse_retry_after("999999999999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_used_weight("4294967295"), Some(u32::MAX));
        assert_eq!(parse_used_weight("99999999999"), Some(u32::MAX));
        assert_eq!(parse_used_weight("12"), Some(12));
        assert_eq!(parse_used_weight(""), None);
    }

    #[test]
    fn trading_symbols_are_those_trading_against_the_quote() {
        let body = r#"{"symbols":[
            {"symbol":"ETHUSDT","status":"TRADING","quoteAsset":"USDT","isSpotTradingAllowed":true},
            {"symbol":"BTCUSDT","status":"TRADING","quoteAsset":"USDT"},
            {"symbol":"LUNAUSDT","status":"BREAK","quoteAsset":"USDT"},
            {"symbol":"ETHBTC","status":"TRADING","quoteAsset":"BTC"},
            {"symbol":"MARGINUSDT","status":"TRADING","quoteAsset":"USDT","isSpotTradingAllowed":false},
            {"symbol":"BAD/USDT","status":"TRADING","quoteAsset":"USDT"},
            {"symbol":"BTCUSDT","status":"TRADING","quoteAsset":"USDT"}]}"#;
        assert_eq!(
            parse_trading_symbols(body, "USDT"),
            Some(vec!["BTCUSDT".to_string(), "ETHUSDT".to_string()])
        );
        assert_eq!(parse_trading_symbols("{}", "USDT"), None);
        assert_eq!(parse_trading_symbols("not json", "USDT"), None);
    }
}
