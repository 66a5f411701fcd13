//! The REST client: every request goes through the [`Governor`], carries its endpoint's
//! weight, and feeds the answer back (used-weight header, 429, 418). Metrics per endpoint.

use crate::governor::{Governor, Window};
use crate::metrics::CollectorMetrics;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{endpoint}: rate limited (HTTP {status}); paused for {retry_after:?}")]
    RateLimited { endpoint: &'static str, status: u16, retry_after: Duration },
    #[error("{endpoint}: HTTP {status}: {body}")]
    Api { endpoint: &'static str, status: u16, body: String },
    #[error("{endpoint}: transient failure: {reason}")]
    Transient { endpoint: &'static str, reason: String },
}

impl RestError {
    /// Whether trying again later can succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, RestError::Api { .. })
    }
}

/// One Binance REST endpoint and its weight.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub path: &'static str,
    pub weight: u32,
}

pub const TIME: Endpoint = Endpoint { path: "/api/v3/time", weight: 1 };
pub const EXCHANGE_INFO: Endpoint = Endpoint { path: "/api/v3/exchangeInfo", weight: 20 };
pub const AGG_TRADES: Endpoint = Endpoint { path: "/api/v3/aggTrades", weight: 4 };
pub const KLINES: Endpoint = Endpoint { path: "/api/v3/klines", weight: 2 };

pub struct BinanceRest {
    http: reqwest::Client,
    base: String,
    governor: Arc<Governor>,
    metrics: CollectorMetrics,
}

impl BinanceRest {
    pub fn new(base: &str, governor: Arc<Governor>, metrics: CollectorMetrics) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), governor, metrics })
    }

    pub fn governor(&self) -> &Governor {
        &self.governor
    }

    /// GETs `endpoint` with `query`, through the governor; returns the body of a 200.
    pub async fn get(&self, endpoint: Endpoint, query: &[(&str, String)]) -> Result<String, RestError> {
        self.governor.acquire(endpoint.weight).await;
        let header = format!("x-mbx-used-weight-{}", self.governor.window().await.label);
        let started = Instant::now();
        let sent = self.http.get(format!("{}{}", self.base, endpoint.path)).query(query).send().await;
        self.metrics.request_duration.with_label_values(&[endpoint.path]).observe(started.elapsed().as_secs_f64());
        let response = match sent {
            Ok(r) => r,
            Err(err) => {
                self.metrics.requests.with_label_values(&[endpoint.path, "error"]).inc();
                return Err(RestError::Transient { endpoint: endpoint.path, reason: err.to_string() });
            }
        };
        let status = response.status().as_u16();
        self.metrics.requests.with_label_values(&[endpoint.path, &status.to_string()]).inc();
        if let Some(used) = response.headers().get(&header).and_then(|v| v.to_str().ok()?.parse().ok()) {
            self.governor.observe_used(used).await;
        }
        let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body = response.text().await.map_err(|e| RestError::Transient { endpoint: endpoint.path, reason: e.to_string() })?;
        self.classify(endpoint.path, status, retry_after, body).await
    }

    async fn classify(&self, endpoint: &'static str, status: u16, retry_after: Option<u64>, body: String) -> Result<String, RestError> {
        match status {
            200 => Ok(body),
            429 | 418 => {
                let default = if status == 418 { 120 } else { 60 };
                let retry_after = Duration::from_secs(retry_after.unwrap_or(default).max(1));
                self.governor.block(status, retry_after).await;
                Err(RestError::RateLimited { endpoint, status, retry_after })
            }
            500..=599 | 403 => Err(RestError::Transient { endpoint, reason: format!("HTTP {status}: {body}") }),
            _ => Err(RestError::Api { endpoint, status, body }),
        }
    }

    /// The exchange's clock (ms): whether a kline has closed is the exchange's call.
    pub async fn server_time(&self) -> Result<i64, RestError> {
        let body = self.get(TIME, &[]).await?;
        parse_server_time(&body).ok_or(RestError::Api { endpoint: TIME.path, status: 200, body })
    }

    /// Reads REQUEST_WEIGHT from exchangeInfo and configures the governor with it.
    pub async fn load_limits(&self) -> Result<Window, RestError> {
        let body = self.get(EXCHANGE_INFO, &[]).await?;
        let window = parse_weight_limit(&body).ok_or_else(|| RestError::Api { endpoint: EXCHANGE_INFO.path, status: 200, body: "no REQUEST_WEIGHT limit".into() })?;
        self.governor.configure(window.clone()).await;
        Ok(window)
    }
}

/// `serverTime` of a `/api/v3/time` body.
pub fn parse_server_time(body: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(body).ok()?["serverTime"].as_i64()
}

/// The REQUEST_WEIGHT entry of an exchangeInfo body.
pub fn parse_weight_limit(body: &str) -> Option<Window> {
    let info: serde_json::Value = serde_json::from_str(body).ok()?;
    let entry = info["rateLimits"].as_array()?.iter().find(|l| l["rateLimitType"] == "REQUEST_WEIGHT")?;
    let num = entry["intervalNum"].as_u64()?;
    let (unit_ms, letter) = match entry["interval"].as_str()? {
        "SECOND" => (1_000, 's'),
        "MINUTE" => (60_000, 'm'),
        "HOUR" => (3_600_000, 'h'),
        "DAY" => (86_400_000, 'd'),
        _ => return None,
    };
    Some(Window { limit: u32::try_from(entry["limit"].as_u64()?).ok()?, window_ms: num * unit_ms, label: format!("{num}{letter}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_request_weight_limit_from_exchange_info() {
        let body = r#"{"rateLimits":[{"rateLimitType":"RAW_REQUESTS","interval":"MINUTE","intervalNum":5,"limit":300000},
                                     {"rateLimitType":"REQUEST_WEIGHT","interval":"MINUTE","intervalNum":1,"limit":6000}]}"#;
        assert_eq!(parse_weight_limit(body), Some(Window { limit: 6000, window_ms: 60_000, label: "1m".into() }));
        assert_eq!(parse_weight_limit(r#"{"rateLimits":[]}"#), None);
        assert_eq!(parse_server_time(r#"{"serverTime":1499827319559}"#), Some(1_499_827_319_559));
        assert_eq!(parse_server_time(r#"{"code":-1000}"#), None);
    }
}
