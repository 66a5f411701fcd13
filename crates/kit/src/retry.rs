//! Back-off and retry, written once: every loop in the services that tries again after a
//! failure waits a [`Backoff`] (capped doubling, optional jitter, reset after a success),
//! and [`retry`] runs an attempt until it succeeds or shutdown comes, whichever is first.
//!
//! It owns timing only: what counts as a failure, and what a failure logs and counts, is
//! the caller's (the `failed` callback).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Capped exponential back-off: `first`, doubling up to `cap`; back to `first` on
/// [`reset`](Backoff::reset). With jitter ("equal jitter": half fixed, half random), a
/// fleet of clients reconnecting after the same outage does not hammer a server in step.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
    jitter: bool,
    rng: u64,
}

impl Backoff {
    pub fn new(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            cap: cap.max(first),
            step: first,
            jitter: false,
            rng: u64::try_from(crate::time::now_ms()).unwrap_or(1) | 1,
        }
    }

    /// Each delay between half and all of its step.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The delay to wait now; the step after it doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.cap);
        if !self.jitter {
            return step;
        }
        let half = step / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(u64::MAX - 1) + 1;
        half + Duration::from_millis(self.random() % spread)
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.step = self.first;
    }

    fn random(&mut self) -> u64 {
        // xorshift64: spreading reconnects needs no cryptographic randomness
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

/// Sleeps `delay`; false if `shutdown` came first.
pub async fn sleep(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Runs `attempt` until it succeeds, waiting `backoff` between tries; each failure goes to
/// `failed` (to log and count it). `None` when `shutdown` comes first, also in the middle
/// of an attempt (which is dropped: an attempt must be safe to abandon, as a transaction
/// that rolls back is).
pub async fn retry<T, E, F, Fut>(
    shutdown: &CancellationToken,
    mut backoff: Backoff,
    mut attempt: F,
    mut failed: impl FnMut(E),
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return None,
            outcome = attempt() => outcome,
        };
        match outcome {
            Ok(value) => return Some(value),
            Err(err) => failed(err),
        }
        if !sleep(shutdown, backoff.next_delay()).await {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jittered_delays_stay_between_half_and_all_of_their_step() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max).with_jitter();
        let mut step = min;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            seen.insert(d);
            step = (step * 2).min(max);
        }
        assert!(seen.len() > 5, "jitter spreads the delays: {seen:?}");
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_backs_off_until_success_or_shutdown() {
        let token = CancellationToken::new();
        let mut tries = 0;
        let mut failures = 0;
        let start = tokio::time::Instant::now();
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let got = retry(
            &token,
            backoff,
            || {
                tries += 1;
                let n = tries;
                async move {
                    if n < 4 {
                        Err("no")
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| failures += 1,
        )
        .await;
        assert_eq!((got, failures), (Some(4), 3));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1 + 2 + 4),
            "1 s, 2 s, then 4 s"
        );

        token.cancel();
        let once = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let never: Option<()> =
            retry(&token, once, || async { Err::<(), _>("down") }, |_| {}).await;
        assert_eq!(never, None);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_an_attempt_in_flight() {
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            t.cancel();
        });
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let start = tokio::time::Instant::now();
        let got: Option<()> = retry(
            &token,
            backoff,
            || async { std::future::pending::<Result<(), &str>>().await },
            |_| {},
        )
        .await;
        assert_eq!((got, start.elapsed()), (None, Duration::from_secs(3)));
    }
}
