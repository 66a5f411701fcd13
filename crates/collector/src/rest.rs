//! The REST client: every request goes through the [`Governor`], carries its endpoint's
//! weight, and feeds the answer back (used-weight header, 429, 418, 403). Metrics per
//! endpoint. Header values are hostile input: they saturate rather than overflow, and a
//! `Retry-After` too large for any integer still means "a long time", not "no header".

use crate::governor::{Class, Governor, Window};
use crate::metrics::CollectorMetrics;
use kit::Telemetry;
use market::rest::{parse_retry_after, parse_used_weight, parse_weight_limit};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a REST call failed.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{endpoint}: rate limited (HTTP {status}); paused for {retry_after:?}")]
    RateLimited {
        endpoint: &'static str,
        status: u16,
        retry_after: Duration,
    },
    #[error("{endpoint}: HTTP 403 from Binance's WAF; paused for {retry_after:?}: {body}")]
    Forbidden {
        endpoint: &'static str,
        retry_after: Duration,
        body: String,
    },
    #[error("{endpoint}: HTTP {status}: {body}")]
    Api {
        endpoint: &'static str,
        status: u16,
        body: String,
    },
    #[error("{endpoint}: transient failure: {reason}")]
    Transient {
        endpoint: &'static str,
        reason: String,
    },
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

impl Endpoint {
    const fn new(path: &'static str, weight: u32) -> Self {
        Self { path, weight }
    }
}

pub const PING: Endpoint = Endpoint::new("/api/v3/ping", 1);
pub const TIME: Endpoint = Endpoint::new("/api/v3/time", 1);
pub const EXCHANGE_INFO: Endpoint = Endpoint::new("/api/v3/exchangeInfo", 20);
pub const AGG_TRADES: Endpoint = Endpoint::new("/api/v3/aggTrades", 4);
pub const KLINES: Endpoint = Endpoint::new("/api/v3/klines", 2);

/// `/api/v3/ticker/24hr` listing `symbols` symbols, at its weight for that many.
pub fn ticker_24hr(symbols: usize) -> Endpoint {
    Endpoint::new("/api/v3/ticker/24hr", market::ticker::weight(symbols))
}

pub struct BinanceRest {
    http: reqwest::Client,
    base: String,
    governor: Arc<Governor>,
    metrics: CollectorMetrics,
    telemetry: Telemetry,
}

impl BinanceRest {
    pub fn new(
        base: &str,
        governor: Arc<Governor>,
        metrics: CollectorMetrics,
        telemetry: Telemetry,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            governor,
            metrics,
            telemetry,
        })
    }

    pub fn governor(&self) -> &Governor {
        &self.governor
    }

    /// GETs `endpoint` with `query`, through the governor as `class`; returns the body of
    /// a 200.
    pub async fn get(
        &self,
        class: Class,
        endpoint: Endpoint,
        query: &[(&str, String)],
    ) -> Result<String, RestError> {
        self.governor.acquire(class, endpoint.weight).await;
        self.send(endpoint, query).await
    }

    /// Reads the exchange's count of our IP's used weight with a ping (weight 1) while the
    /// governor holds our own requests back ([`Governor::try_probe`]); `None` when no probe
    /// may go now. Never waits.
    pub async fn probe_used_weight(&self) -> Option<Result<String, RestError>> {
        if !self.governor.try_probe().await {
            return None;
        }
        Some(self.send(PING, &[]).await)
    }

    async fn send(
        &self,
        endpoint: Endpoint,
        query: &[(&str, String)],
    ) -> Result<String, RestError> {
        let header = format!("x-mbx-used-weight-{}", self.governor.window().await.label);
        let started = Instant::now();
        let sent = self
            .http
            .get(format!("{}{}", self.base, endpoint.path))
            .query(query)
            .send()
            .await;
        self.metrics
            .request_duration
            .with_label_values(&[endpoint.path])
            .observe(started.elapsed().as_secs_f64());
        let response = match sent {
            Ok(r) => r,
            Err(err) => {
                self.metrics
                    .requests
                    .with_label_values(&[endpoint.path, "error"])
                    .inc();
                return Err(RestError::Transient {
                    endpoint: endpoint.path,
                    reason: err.to_string(),
                });
            }
        };
        let status = response.status().as_u16();
        self.metrics
            .requests
            .with_label_values(&[endpoint.path, &status.to_string()])
            .inc();
        if let Some(used) = response
            .headers()
            .get(&header)
            .and_then(|v| parse_used_weight(v.to_str().ok()?))
        {
            self.governor.observe_used(used).await;
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| parse_retry_after(v.to_str().ok()?));
        let body = response.text().await.map_err(|e| RestError::Transient {
            endpoint: endpoint.path,
            reason: e.to_string(),
        })?;
        self.classify(endpoint.path, status, retry_after, body)
            .await
    }

    async fn classify(
        &self,
        endpoint: &'static str,
        status: u16,
        retry_after: Option<Duration>,
        body: String,
    ) -> Result<String, RestError> {
        match status {
            200 => {
                self.governor.succeeded().await;
                Ok(body)
            }
            429 | 418 => {
                let default = Duration::from_secs(if status == 418 { 120 } else { 60 });
                let wanted = retry_after.unwrap_or(default).max(Duration::from_secs(1));
                let retry_after = self.governor.block(status, wanted).await;
                Err(RestError::RateLimited {
                    endpoint,
                    status,
                    retry_after,
                })
            }
            403 => {
                let retry_after = self.governor.forbidden().await;
                let err = RestError::Forbidden {
                    endpoint,
                    retry_after,
                    body,
                };
                self.telemetry
                    .error(kit::contract::ErrorKind::BinanceWafForbidden, &err);
                Err(err)
            }
            500..=599 => Err(RestError::Transient {
                endpoint,
                reason: format!("HTTP {status}: {body}"),
            }),
            _ => Err(RestError::Api {
                endpoint,
                status,
                body,
            }),
        }
    }

    /// Reads REQUEST_WEIGHT from exchangeInfo and configures the governor with it.
    pub async fn load_limits(&self) -> Result<Window, RestError> {
        let body = self.get(Class::Info, EXCHANGE_INFO, &[]).await?;
        let window = parse_weight_limit(&body).ok_or_else(|| RestError::Api {
            endpoint: EXCHANGE_INFO.path,
            status: 200,
            body: "no REQUEST_WEIGHT limit".into(),
        })?;
        self.governor.configure(window.clone()).await;
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::ban::BanStore;
    use crate::governor::{MAX_BLOCK, WAF_FIRST_BLOCK};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An HTTP server that answers every request with the same `status`, `headers` and
    /// `body`; returns its base URL and the count of requests it answered.
    async fn answering(
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let extra: String = headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\r\n"))
                    .collect();
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}", body.len());
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        (base, hits)
    }

    fn client(base: &str, governor: Governor) -> (BinanceRest, Telemetry) {
        let telemetry = Telemetry::new("collector", "test").expect("telemetry");
        let metrics = CollectorMetrics::register(telemetry.registry()).expect("metrics");
        let rest =
            BinanceRest::new(base, Arc::new(governor), metrics, telemetry.clone()).expect("client");
        (rest, telemetry)
    }

    fn state_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "collector-rest-{name}-{}-{}",
            std::process::id(),
            kit::time::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn hostile_retry_after_and_used_weight_headers_are_capped_not_a_panic() {
        let headers = &[
            ("retry-after", "99999999999"),
            ("x-mbx-used-weight-1m", "99999999999"),
        ];
        let (base, _) = answering(
            429,
            headers,
            r#"{"code":-1003,"msg":"Too much request weight used"}"#,
        )
        .await;
        let (rest, _) = client(&base, Governor::new(0.8, None));
        match rest.get(Class::Backfill, TIME, &[]).await {
            Err(RestError::RateLimited {
                status: 429,
                retry_after,
                ..
            }) => assert_eq!(retry_after, MAX_BLOCK),
            other => panic!("expected a capped 429, got {other:?}"),
        }
        assert!(rest
            .governor()
            .blocked_for()
            .await
            .is_some_and(|d| d <= MAX_BLOCK && d > MAX_BLOCK - Duration::from_secs(60)));
        assert_eq!(
            rest.governor().used().await,
            u32::MAX,
            "the header's count, saturated"
        );
    }

    #[tokio::test]
    async fn a_418_seen_before_a_restart_blocks_rest_after_it() {
        let dir = state_dir("restart");
        let (base, hits) = answering(
            418,
            &[("retry-after", "120")],
            r#"{"code":-1003,"msg":"Way too much request weight used; IP banned"}"#,
        )
        .await;
        let (before, _) = client(
            &base,
            Governor::new(0.8, None).remembering(BanStore::new(&dir, None)),
        );
        assert!(matches!(
            before.get(Class::Backfill, TIME, &[]).await,
            Err(RestError::RateLimited { status: 418, .. })
        ));
        drop(before);
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        let (after, _) = client(
            &base,
            Governor::new(0.8, None).remembering(BanStore::new(&dir, None)),
        );
        let first = tokio::time::timeout(Duration::from_millis(500), after.load_limits()).await;
        assert!(first.is_err(), "exchangeInfo waits for the remembered ban");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "not one request during the ban"
        );
        assert!(after
            .governor()
            .blocked_for()
            .await
            .is_some_and(|d| d > Duration::from_secs(100)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_waf_403_pauses_for_minutes_under_its_own_error_kind() {
        let (base, hits) = answering(403, &[], "<html>403 Forbidden</html>").await;
        let (rest, telemetry) = client(&base, Governor::new(0.8, None));
        match rest.get(Class::Backfill, TIME, &[]).await {
            Err(err @ RestError::Forbidden { .. }) => {
                assert!(err.retryable(), "a later retry may pass")
            }
            other => panic!("expected a WAF 403, got {other:?}"),
        }
        assert_eq!(
            telemetry.error_count(kit::contract::ErrorKind::BinanceWafForbidden),
            1
        );
        assert!(rest
            .governor()
            .blocked_for()
            .await
            .is_some_and(|d| d > WAF_FIRST_BLOCK - Duration::from_secs(10)));
        assert!(tokio::time::timeout(
            Duration::from_millis(300),
            rest.get(Class::Backfill, TIME, &[])
        )
        .await
        .is_err());
        assert_eq!(hits.load(Ordering::SeqCst), 1, "no retry every few seconds");
    }
}
