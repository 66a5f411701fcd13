//! Capped exponential back-off with jitter ("equal jitter": half fixed, half random), so a
//! fleet of reconnecting clients does not hammer the exchange in step.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    state: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed = u64::try_from(kit::time::now_ms()).unwrap_or(1) | 1;
        Self {
            min,
            max,
            current: min,
            state: seed,
        }
    }

    /// The next delay: between half and all of the current step; the step then doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = step / 2;
        let spread = u64::try_from(half.as_millis()).unwrap_or(0) + 1;
        half + Duration::from_millis(self.random() % spread)
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }

    fn random(&mut self) -> u64 {
        // xorshift64
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_up_to_the_cap_and_reset() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut b = Backoff::new(min, max);
        let mut step = min;
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(max);
        }
        assert!(b.next_delay() <= max);
        b.reset();
        assert!(b.next_delay() <= min);
    }
}
