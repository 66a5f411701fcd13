//! The market's clock: Unix milliseconds that may run faster than real time (`speed`), so
//! tests see 1-minute klines close in seconds. Rate-limit windows always use real time.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct SimClock {
    origin_real: Instant,
    origin_ms: i64,
    speed: f64,
}

impl SimClock {
    /// A clock that starts at the current wall time and runs `speed` times real time.
    pub fn new(speed: f64) -> Self {
        Self {
            origin_real: Instant::now(),
            origin_ms: kit::time::now_ms(),
            speed: speed.max(0.001),
        }
    }

    /// Market time now, Unix ms.
    pub fn now_ms(&self) -> i64 {
        let elapsed = self.origin_real.elapsed().as_secs_f64() * 1000.0 * self.speed;
        self.origin_ms.saturating_add(elapsed as i64) // `as` saturates a huge SIM_SPEED
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }
}
