//! The rate-limit governor: every REST request to Binance asks it for its weight first.
//!
//! It keeps the used weight of the current window (our own count, corrected upwards by
//! Binance's `X-MBX-USED-WEIGHT-*` header), queues a request rather than let the window
//! cross `share` of the limit, and stops every request while a 429's `Retry-After` or a
//! 418 ban lasts — so not one request is sent during a ban. Windows align to the wall
//! clock, as Binance's do; time comes from tokio, so tests pause and advance it.
//!
//! Requests come in classes ([`Class`]): back-fill heals gaps, so it comes first and may use
//! the whole budget; heads may use at most [`Class::Heads`]'s share of it and exchangeInfo
//! less, so back-fill always keeps a reserved part of every window, however many symbols
//! the heads cover.
//!
//! Every number from the exchange (headers, exchangeInfo) is hostile input: arithmetic on
//! it saturates, and no pause is longer than [`MAX_BLOCK`]. Bans are remembered across
//! restarts through a [`BanStore`]; a 403 (the WAF) gets a long back-off of its own.

use crate::ban::{Ban, BanStore};
use crate::metrics::CollectorMetrics;
use kit::http::Degraded;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The longest single pause: a longer `Retry-After` (hostile, or a ban of days) is capped
/// and logged; after it one request asks again, and a ban still running answers 418 again.
pub const MAX_BLOCK: Duration = Duration::from_secs(3600);
/// The first pause after a 403 (Binance's WAF); it doubles with each 403 in a row, up to
/// [`MAX_BLOCK`], and starts again after a success.
pub const WAF_FIRST_BLOCK: Duration = Duration::from_secs(300);
/// Probes of the used weight ([`Governor::try_probe`]) stop short of this share of the
/// limit, so they never cause a 429 themselves.
pub const PROBE_CEILING: f64 = 0.98;
/// The component `/readyz` lists as degraded while REST is paused.
pub const COMPONENT: &str = "binance_rest";

/// Who asks for weight, in order of priority: a class may fill the window's budget only up
/// to its ceiling ([`Class::ceiling`]); what lies above is reserved for the classes before
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Back-fill of a gap: the whole budget.
    Backfill,
    /// Heads, the exchange's newest ids: up to half of the budget.
    Heads,
    /// exchangeInfo (limits, symbols): up to a quarter.
    Info,
}

impl Class {
    /// The share of the budget this class may fill.
    pub fn ceiling(self) -> f64 {
        match self {
            Class::Backfill => 1.0,
            Class::Heads => 0.5,
            Class::Info => 0.25,
        }
    }
}

/// The REQUEST_WEIGHT limit and its window (market::rest parses it from exchangeInfo).
pub use market::rest::WeightWindow as Window;

#[derive(Debug)]
struct State {
    window: Window,
    index: u64,
    used: u32,
    blocked_until: Option<Instant>,
    /// The HTTP status that caused the current pause.
    blocked_by: u16,
    /// The pause the next 403 gets.
    waf_step: Duration,
}

pub struct Governor {
    state: Mutex<State>,
    share: f64,
    metrics: Option<CollectorMetrics>,
    store: Option<BanStore>,
    degraded: Option<Degraded>,
    origin: Instant,
    origin_wall_ms: u64,
}

impl Governor {
    /// `share` of the limit may be used per window (e.g. 0.8 leaves 20 % headroom).
    pub fn new(share: f64, metrics: Option<CollectorMetrics>) -> Self {
        let state = State {
            window: Window::default(),
            index: 0,
            used: 0,
            blocked_until: None,
            blocked_by: 0,
            waf_step: WAF_FIRST_BLOCK,
        };
        let origin_wall_ms = u64::try_from(kit::time::now_ms()).unwrap_or(0);
        let g = Self {
            state: Mutex::new(state),
            share: share.clamp(0.01, 1.0),
            metrics,
            store: None,
            degraded: None,
            origin: Instant::now(),
            origin_wall_ms,
        };
        g.show(&Window::default(), 0);
        g
    }

    /// Remembers bans in `store` and honours the one it holds, before any request.
    pub fn remembering(mut self, store: BanStore) -> Self {
        if let Some(ban) = store.load() {
            self.restore(ban);
        }
        self.store = Some(store);
        self
    }

    /// Shows every pause in `degraded` (as [`COMPONENT`], for `/readyz`) while it lasts.
    pub fn reporting(mut self, degraded: Degraded) -> Self {
        let s = self.state.get_mut();
        if let Some(until) = s.blocked_until {
            let left = until.saturating_duration_since(Instant::now());
            degraded.set(COMPONENT, reason(s.blocked_by, left));
        }
        self.degraded = Some(degraded);
        self
    }

    fn restore(&mut self, ban: Ban) {
        let left = Duration::from_millis(ban.banned_until_ms.saturating_sub(self.wall_ms()));
        if left.is_zero() {
            tracing::info!(
                status = ban.status,
                banned_until_ms = ban.banned_until_ms,
                "remembered Binance ban has ended"
            );
            return;
        }
        let left = capped(left);
        let s = self.state.get_mut();
        (s.blocked_until, s.blocked_by) = (Some(Instant::now() + left), ban.status);
        tracing::warn!(
            status = ban.status,
            banned_until_ms = ban.banned_until_ms,
            left_secs = left.as_secs(),
            "remembered Binance ban: REST paused until it ends"
        );
    }

    fn wall_ms(&self) -> u64 {
        self.origin_wall_ms
            .saturating_add(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn show(&self, window: &Window, used: u32) {
        if let Some(m) = &self.metrics {
            m.rate_limit_used
                .with_label_values(&["request_weight", &window.label])
                .set(i64::from(used));
            m.rate_limit_max
                .with_label_values(&["request_weight", &window.label])
                .set(i64::from(window.limit));
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

    /// Waits until `weight` fits in `class`'s part of the window and no block is active,
    /// then reserves it.
    pub async fn acquire(&self, class: Class, weight: u32) {
        loop {
            let wake = {
                let mut s = self.state.lock().await;
                match self.try_reserve(&mut s, class, weight) {
                    None => return,
                    Some(at) => at,
                }
            };
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Reserves `weight` now, or says when to try again.
    fn try_reserve(&self, s: &mut State, class: Class, weight: u32) -> Option<Instant> {
        let now = Instant::now();
        if let Some(until) = s.blocked_until.filter(|u| now < *u) {
            return Some(until);
        }
        if s.blocked_until.take().is_some() {
            if let Some(d) = &self.degraded {
                d.clear(COMPONENT);
            }
        }
        let wall = self.wall_ms();
        let window_ms = s.window.window_ms.max(1);
        let index = wall / window_ms;
        if index != s.index {
            (s.index, s.used) = (index, 0);
        }
        let budget = share_of(s.window.limit, self.share * class.ceiling());
        let after = s.used.saturating_add(weight);
        if s.used == 0 || after <= budget {
            s.used = after;
            self.show(&s.window, s.used);
            return None;
        }
        let next_window_ms = index
            .saturating_add(1)
            .saturating_mul(window_ms)
            .saturating_sub(wall)
            .max(1);
        Some(now + capped(Duration::from_millis(next_window_ms)))
    }

    /// Reserves weight 1 for a probe of the exchange's count, without waiting: only while
    /// our own budget is spent (our requests wait, so nothing of ours would show the count
    /// rising further: others on our IP may be pushing it to the limit), no block is on,
    /// and one more request stays under [`PROBE_CEILING`] of the limit.
    pub async fn try_probe(&self) -> bool {
        let mut s = self.state.lock().await;
        if s.blocked_until.is_some_and(|u| Instant::now() < u) {
            return false;
        }
        let index = self.wall_ms() / s.window.window_ms.max(1);
        if index != s.index {
            return false; // a new window: our own requests go again
        }
        let budget = share_of(s.window.limit, self.share);
        let ceiling = share_of(s.window.limit, PROBE_CEILING);
        let after = s.used.saturating_add(1);
        if s.used < budget || after > ceiling {
            return false;
        }
        s.used = after;
        self.show(&s.window, s.used);
        true
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

    /// Stops every request for `retry_after` (after a 429, or a 418 ban), at most
    /// [`MAX_BLOCK`]; returns the pause applied. The ban is remembered across restarts.
    pub async fn block(&self, status: u16, retry_after: Duration) -> Duration {
        if let Some(m) = &self.metrics {
            m.rate_limited
                .with_label_values(&[&status.to_string()])
                .inc();
        }
        let pause = self.pause(status, retry_after).await;
        tracing::warn!(
            status,
            retry_after_secs = pause.as_secs(),
            "Binance rate limit: all REST requests paused"
        );
        pause
    }

    /// Stops every request after a 403 (Binance's WAF): 5 min, doubling with each 403 in a
    /// row up to [`MAX_BLOCK`]; returns the pause applied.
    pub async fn forbidden(&self) -> Duration {
        let step = {
            let mut s = self.state.lock().await;
            let step = s.waf_step;
            s.waf_step = capped(step.saturating_mul(2));
            step
        };
        let pause = self.pause(403, step).await;
        tracing::warn!(
            pause_secs = pause.as_secs(),
            "Binance WAF answered 403: all REST requests paused"
        );
        pause
    }

    /// A request succeeded: the next 403 starts the WAF back-off again.
    pub async fn succeeded(&self) {
        self.state.lock().await.waf_step = WAF_FIRST_BLOCK;
    }

    async fn pause(&self, status: u16, wanted: Duration) -> Duration {
        let pause = capped(wanted);
        if pause < wanted {
            tracing::warn!(
                status,
                wanted_secs = wanted.as_secs(),
                capped_secs = pause.as_secs(),
                "Retry-After longer than the cap; pausing for the cap"
            );
        }
        let until = Instant::now() + pause;
        if let Some(store) = &self.store {
            // First, before any await: written even if this task is cancelled right after.
            let pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
            store.save(Ban {
                banned_until_ms: self.wall_ms().saturating_add(pause_ms),
                status,
            });
        }
        {
            let mut s = self.state.lock().await;
            if s.blocked_until.is_none_or(|u| u < until) {
                (s.blocked_until, s.blocked_by) = (Some(until), status);
                if let Some(d) = &self.degraded {
                    d.set(COMPONENT, reason(status, pause));
                }
            }
        }
        pause
    }

    /// Whether requests are paused right now (for readiness and tests).
    pub async fn blocked(&self) -> bool {
        self.blocked_for().await.is_some()
    }

    /// How long requests stay paused, if they are.
    pub async fn blocked_for(&self) -> Option<Duration> {
        let until = self.state.lock().await.blocked_until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Weight reserved or reported in the current window.
    pub async fn used(&self) -> u32 {
        self.state.lock().await.used
    }
}

/// What `/readyz` says about a pause.
fn reason(status: u16, left: Duration) -> String {
    format!("REST paused after HTTP {status} for {} s", left.as_secs())
}

/// `d`, at most [`MAX_BLOCK`].
fn capped(d: Duration) -> Duration {
    d.min(MAX_BLOCK)
}

/// `share` of `limit`, rounded down (the weight we may use of it).
fn share_of(limit: u32, share: f64) -> u32 {
    (f64::from(limit) * share).floor() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Windows align to the wall clock: moves paused time to just after a window's start,
    /// so a test's waits (up to a minute) never cross into the next window by chance.
    async fn at_window_start(window: &Window) {
        let wall = u64::try_from(kit::time::now_ms()).unwrap_or(0);
        tokio::time::advance(Duration::from_millis(
            window.window_ms - wall % window.window_ms + 10,
        ))
        .await;
    }

    fn small() -> Window {
        Window {
            limit: 100,
            window_ms: 3_600_000,
            label: "60m".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn queues_rather_than_cross_the_share_of_the_limit() {
        let g = Governor::new(0.5, None);
        g.configure(small()).await;
        at_window_start(&small()).await;
        for _ in 0..12 {
            g.acquire(Class::Backfill, 4).await; // 48 of a 50 budget
        }
        let start = Instant::now();
        let waited =
            tokio::time::timeout(Duration::from_secs(1), g.acquire(Class::Backfill, 4)).await;
        assert!(
            waited.is_err(),
            "the 13th request must wait for the next window"
        );
        g.acquire(Class::Backfill, 4).await; // paused time jumps to the next window
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert_eq!(
            g.used().await,
            4,
            "a new window starts with only this request"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn probes_go_only_while_our_budget_is_spent_and_stay_under_the_ceiling() {
        let g = Governor::new(0.5, None);
        g.configure(small()).await;
        at_window_start(&small()).await;
        g.acquire(Class::Backfill, 40).await;
        assert!(!g.try_probe().await, "our own requests still go: no probe");
        g.acquire(Class::Backfill, 10).await; // 50: the budget is spent
        assert!(g.try_probe().await, "held back: a probe reads the count");
        assert_eq!(g.used().await, 51);
        g.observe_used(97).await; // others on our IP
        assert!(g.try_probe().await, "98 of 100 is still under the ceiling");
        assert!(!g.try_probe().await, "99 would pass the ceiling");
        g.block(429, Duration::from_secs(10)).await;
        g.observe_used(60).await;
        assert!(!g.try_probe().await, "nothing during a pause");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ban_stops_every_request_until_it_ends() {
        let g = Governor::new(0.8, None);
        g.block(418, Duration::from_secs(120)).await;
        assert!(g.blocked().await);
        assert!(
            tokio::time::timeout(Duration::from_secs(119), g.acquire(Class::Backfill, 1))
                .await
                .is_err()
        );
        tokio::time::timeout(Duration::from_secs(2), g.acquire(Class::Backfill, 1))
            .await
            .expect("allowed after the ban");
        assert!(!g.blocked().await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_header_count_raises_ours_but_never_lowers_it() {
        let g = Governor::new(1.0, None);
        g.configure(small()).await;
        at_window_start(&small()).await;
        g.acquire(Class::Backfill, 10).await;
        g.observe_used(95).await;
        assert_eq!(g.used().await, 95);
        g.observe_used(3).await;
        assert_eq!(g.used().await, 95);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), g.acquire(Class::Backfill, 10))
                .await
                .is_err(),
            "95 + 10 > 100"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_block_is_not_shortened_by_a_later_shorter_one() {
        let g = Governor::new(1.0, None);
        g.block(418, Duration::from_secs(60)).await;
        g.block(429, Duration::from_secs(5)).await;
        assert!(
            tokio::time::timeout(Duration::from_secs(30), g.acquire(Class::Backfill, 1))
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_retry_after_is_capped_at_an_hour_not_a_panic() {
        let g = Governor::new(0.8, None);
        let pause = g.block(429, Duration::from_secs(99_999_999_999)).await;
        assert_eq!(pause, MAX_BLOCK);
        assert!(g.blocked_for().await.is_some_and(|d| d <= MAX_BLOCK));
        assert!(tokio::time::timeout(
            MAX_BLOCK - Duration::from_secs(1),
            g.acquire(Class::Backfill, 1)
        )
        .await
        .is_err());
        tokio::time::timeout(Duration::from_secs(2), g.acquire(Class::Backfill, 1))
            .await
            .expect("allowed after the capped pause");
        assert_eq!(
            g.block(418, Duration::from_secs(u64::MAX)).await,
            MAX_BLOCK,
            "Duration::MAX-sized Retry-After"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_used_weight_header_of_u32_max_waits_for_the_next_window() {
        let g = Governor::new(1.0, None);
        g.configure(small()).await;
        at_window_start(&small()).await;
        g.acquire(Class::Backfill, 1).await;
        g.observe_used(u32::MAX).await;
        assert!(
            tokio::time::timeout(Duration::from_secs(60), g.acquire(Class::Backfill, 4))
                .await
                .is_err(),
            "nothing fits above the limit"
        );
        assert_eq!(g.used().await, u32::MAX, "no wrap to a small count");
        g.acquire(Class::Backfill, 4).await; // paused time jumps to the next window
        assert_eq!(
            g.used().await,
            4,
            "the next window starts with only this request"
        );
        g.observe_used(u32::MAX).await;
        assert!(
            tokio::time::timeout(Duration::from_secs(1), g.acquire(Class::Backfill, u32::MAX))
                .await
                .is_err()
        );
    }

    fn state_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "collector-gov-{name}-{}-{}",
            std::process::id(),
            kit::time::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test(start_paused = true)]
    async fn a_ban_seen_before_a_restart_blocks_the_new_instance() {
        let dir = state_dir("restart");
        let before = Governor::new(0.8, None).remembering(BanStore::new(&dir, None));
        before.block(418, Duration::from_secs(120)).await;
        drop(before);
        let after = Governor::new(0.8, None).remembering(BanStore::new(&dir, None));
        assert!(after.blocked().await, "the new instance starts banned");
        assert!(
            tokio::time::timeout(Duration::from_secs(115), after.acquire(Class::Backfill, 1))
                .await
                .is_err()
        );
        tokio::time::timeout(Duration::from_secs(10), after.acquire(Class::Backfill, 1))
            .await
            .expect("allowed once the ban ends");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_ban_in_the_file_does_not_block() {
        let dir = state_dir("expired");
        let store = BanStore::new(&dir, None);
        let past = u64::try_from(kit::time::now_ms()).expect("after 1970") - 1_000;
        store.save(Ban {
            banned_until_ms: past,
            status: 418,
        });
        let g = Governor::new(0.8, None).remembering(BanStore::new(&dir, None));
        assert!(!g.blocked().await);
        tokio::time::timeout(Duration::from_millis(1), g.acquire(Class::Backfill, 1))
            .await
            .expect("no pause");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waf_403_backs_off_for_minutes_doubling_until_a_success() {
        let g = Governor::new(0.8, None);
        assert_eq!(g.forbidden().await, WAF_FIRST_BLOCK);
        assert!(tokio::time::timeout(
            WAF_FIRST_BLOCK - Duration::from_secs(1),
            g.acquire(Class::Backfill, 1)
        )
        .await
        .is_err());
        g.acquire(Class::Backfill, 1).await;
        assert_eq!(g.forbidden().await, 2 * WAF_FIRST_BLOCK);
        for _ in 0..5 {
            g.forbidden().await;
        }
        assert_eq!(g.forbidden().await, MAX_BLOCK, "capped");
        g.succeeded().await;
        assert_eq!(
            g.forbidden().await,
            WAF_FIRST_BLOCK,
            "a success starts the back-off again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_shown_as_degraded_until_the_next_request_passes() {
        let dir = state_dir("degraded");
        Governor::new(0.8, None)
            .remembering(BanStore::new(&dir, None))
            .block(418, Duration::from_secs(60))
            .await;
        let degraded = Degraded::default();
        let g = Governor::new(0.8, None)
            .remembering(BanStore::new(&dir, None))
            .reporting(degraded.clone());
        assert_eq!(
            degraded.list().len(),
            1,
            "a remembered ban is shown from the start"
        );
        assert!(
            degraded.list()[0].1.contains("HTTP 418"),
            "{:?}",
            degraded.list()
        );
        g.acquire(Class::Backfill, 1).await; // paused time runs to the ban's end
        assert!(
            degraded.list().is_empty(),
            "cleared once requests pass again"
        );
        g.block(429, Duration::from_secs(5)).await;
        assert_eq!(
            degraded.list(),
            [(COMPONENT, "REST paused after HTTP 429 for 5 s".to_string())]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(start_paused = true)]
    async fn back_fill_is_served_while_heads_are_held_at_their_ceiling() {
        let g = Governor::new(1.0, None);
        g.configure(small()).await;
        at_window_start(&small()).await;
        for _ in 0..5 {
            g.acquire(Class::Heads, 10).await; // 50 of 100: the heads' ceiling
        }
        let held = tokio::time::timeout(Duration::from_secs(60), g.acquire(Class::Heads, 10));
        assert!(held.await.is_err(), "heads wait for the next window");
        let info = tokio::time::timeout(Duration::from_secs(1), g.acquire(Class::Info, 1));
        assert!(info.await.is_err(), "exchangeInfo's quarter is spent too");
        for _ in 0..5 {
            tokio::time::timeout(Duration::from_millis(1), g.acquire(Class::Backfill, 10))
                .await
                .expect("back-fill has the other half, at once");
        }
        assert_eq!(g.used().await, 100);
    }
}
