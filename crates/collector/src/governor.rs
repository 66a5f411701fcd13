//! The rate-limit governor: every REST request to Binance asks it for its weight first.
//!
//! It keeps the used weight of the current window (our own count, corrected upwards by
//! Binance's `X-MBX-USED-WEIGHT-*` header), queues a request rather than let the window
//! cross `share` of the limit, and stops every request while a 429's `Retry-After` or a
//! 418 ban lasts — so not one request is sent during a ban. Windows align to the wall
//! clock, as Binance's do; time comes from tokio, so tests pause and advance it.

use crate::metrics::CollectorMetrics;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The REQUEST_WEIGHT limit and its window, from exchangeInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub limit: u32,
    pub window_ms: u64,
    /// Label and header suffix, e.g. `1m`.
    pub label: String,
}

impl Default for Window {
    fn default() -> Self {
        Self { limit: 6000, window_ms: 60_000, label: "1m".into() }
    }
}

#[derive(Debug)]
struct State {
    window: Window,
    index: u64,
    used: u32,
    blocked_until: Option<Instant>,
}

pub struct Governor {
    state: Mutex<State>,
    share: f64,
    metrics: Option<CollectorMetrics>,
    origin: Instant,
    origin_wall_ms: u64,
}

impl Governor {
    /// `share` of the limit may be used per window (e.g. 0.8 leaves 20 % headroom).
    pub fn new(share: f64, metrics: Option<CollectorMetrics>) -> Self {
        let state = State { window: Window::default(), index: 0, used: 0, blocked_until: None };
        let origin_wall_ms = u64::try_from(kit::time::now_ms()).unwrap_or(0);
        let g = Self { state: Mutex::new(state), share: share.clamp(0.01, 1.0), metrics, origin: Instant::now(), origin_wall_ms };
        g.show(&Window::default(), 0);
        g
    }

    fn wall_ms(&self) -> u64 {
        self.origin_wall_ms + u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(0)
    }

    fn show(&self, window: &Window, used: u32) {
        if let Some(m) = &self.metrics {
            m.rate_limit_used.with_label_values(&["request_weight", &window.label]).set(i64::from(used));
            m.rate_limit_max.with_label_values(&["request_weight", &window.label]).set(i64::from(window.limit));
        }
    }

    /// Adopts the limit and window from exchangeInfo.
    pub async fn configure(&self, window: Window) {
        let mut s = self.state.lock().await;
        self.show(&window, s.used);
        s.window = window;
    }

    /// The window as configured (the header to read is `x-mbx-used-weight-<label>`).
    pub async fn window(&self) -> Window {
        self.state.lock().await.window.clone()
    }

    /// Waits until `weight` fits in the window and no block is active, then reserves it.
    pub async fn acquire(&self, weight: u32) {
        loop {
            let wake = {
                let mut s = self.state.lock().await;
                match self.try_reserve(&mut s, weight) {
                    None => return,
                    Some(at) => at,
                }
            };
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Reserves `weight` now, or says when to try again.
    fn try_reserve(&self, s: &mut State, weight: u32) -> Option<Instant> {
        let now = Instant::now();
        if let Some(until) = s.blocked_until.filter(|u| now < *u) {
            return Some(until);
        }
        s.blocked_until = None;
        let wall = self.wall_ms();
        let index = wall / s.window.window_ms.max(1);
        if index != s.index {
            (s.index, s.used) = (index, 0);
        }
        let budget = (f64::from(s.window.limit) * self.share).floor() as u32;
        if s.used == 0 || s.used + weight <= budget {
            s.used += weight;
            self.show(&s.window, s.used);
            return None;
        }
        let next_window_ms = (index + 1) * s.window.window_ms - wall;
        Some(now + Duration::from_millis(next_window_ms))
    }

    /// Takes Binance's count of the window's used weight (never lowers ours: requests of
    /// ours may still be in flight).
    pub async fn observe_used(&self, used: u32) {
        let mut s = self.state.lock().await;
        if used > s.used {
            s.used = used;
            self.show(&s.window, used);
        }
    }

    /// Stops every request for `retry_after` (after a 429, or a 418 ban).
    pub async fn block(&self, status: u16, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut s = self.state.lock().await;
        s.blocked_until = Some(s.blocked_until.map_or(until, |u| u.max(until)));
        if let Some(m) = &self.metrics {
            m.rate_limited.with_label_values(&[&status.to_string()]).inc();
        }
        tracing::warn!(status, retry_after_secs = retry_after.as_secs(), "Binance rate limit: all REST requests paused");
    }

    /// Whether requests are paused right now (for readiness and tests).
    pub async fn blocked(&self) -> bool {
        self.state.lock().await.blocked_until.is_some_and(|u| Instant::now() < u)
    }

    /// Weight reserved or reported in the current window.
    pub async fn used(&self) -> u32 {
        self.state.lock().await.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Window {
        Window { limit: 100, window_ms: 3_600_000, label: "60m".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn queues_rather_than_cross_the_share_of_the_limit() {
        let g = Governor::new(0.5, None);
        g.configure(small()).await;
        for _ in 0..12 {
            g.acquire(4).await; // 48 of a 50 budget
        }
        let start = Instant::now();
        let waited = tokio::time::timeout(Duration::from_secs(1), g.acquire(4)).await;
        assert!(waited.is_err(), "the 13th request must wait for the next window");
        g.acquire(4).await; // paused time jumps to the next window
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert_eq!(g.used().await, 4, "a new window starts with only this request");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ban_stops_every_request_until_it_ends() {
        let g = Governor::new(0.8, None);
        g.block(418, Duration::from_secs(120)).await;
        assert!(g.blocked().await);
        assert!(tokio::time::timeout(Duration::from_secs(119), g.acquire(1)).await.is_err());
        tokio::time::timeout(Duration::from_secs(2), g.acquire(1)).await.expect("allowed after the ban");
        assert!(!g.blocked().await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_count_raises_ours_but_never_lowers_it() {
        let g = Governor::new(1.0, None);
        g.configure(small()).await;
        g.acquire(10).await;
        g.observe_used(95).await;
        assert_eq!(g.used().await, 95);
        g.observe_used(3).await;
        assert_eq!(g.used().await, 95);
        assert!(tokio::time::timeout(Duration::from_secs(1), g.acquire(10)).await.is_err(), "95 + 10 > 100");
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_block_is_not_shortened_by_a_later_shorter_one() {
        let g = Governor::new(1.0, None);
        g.block(418, Duration::from_secs(60)).await;
        g.block(429, Duration::from_secs(5)).await;
        assert!(tokio::time::timeout(Duration::from_secs(30), g.acquire(1)).await.is_err());
    }
}
