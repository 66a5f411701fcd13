//! Back-off restart loop detection, per service and clock-free (times are Unix ms).
//!
//! Docker's restart policies wait 100 ms, doubling up to 1 min, and reset the delay once a
//! container ran 10 s; Kubernetes' CrashLoopBackOff is the same idea. So a service is in a
//! back-off loop when `threshold` restarts, each after a run shorter than `reset`, fall
//! within `window`, or when Docker says it is waiting to restart (`State.Restarting`). It
//! leaves the loop once it has stayed up longer than `reset`.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct LoopRules {
    pub threshold: usize,
    pub window_ms: i64,
    pub reset_ms: i64,
}

impl Default for LoopRules {
    fn default() -> Self {
        Self {
            threshold: 3,
            window_ms: 120_000,
            reset_ms: 10_000,
        }
    }
}

impl LoopRules {
    /// Rules from the configuration's counts and seconds; values too large for the
    /// millisecond fields saturate (a window of "forever"), they never wrap.
    pub fn from_secs(threshold: u64, window_secs: u64, reset_secs: u64) -> Self {
        let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self {
            threshold: usize::try_from(threshold).unwrap_or(usize::MAX),
            window_ms: ms(window_secs),
            reset_ms: ms(reset_secs),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoopState {
    /// Times of restarts that followed a short run.
    short_restarts: VecDeque<i64>,
    last_start_ms: Option<i64>,
    docker_restarting: bool,
    looping: bool,
}

impl LoopState {
    /// A restart at `at_ms` after a run of `run_ms` (when known).
    pub fn restarted(&mut self, rules: &LoopRules, at_ms: i64, run_ms: Option<i64>) {
        self.last_start_ms = Some(at_ms);
        if run_ms.is_some_and(|r| r < rules.reset_ms) {
            self.short_restarts.push_back(at_ms);
        }
        while self
            .short_restarts
            .front()
            .is_some_and(|t| at_ms.saturating_sub(*t) > rules.window_ms)
        {
            self.short_restarts.pop_front();
        }
        if self.short_restarts.len() >= rules.threshold {
            self.looping = true;
        }
    }

    /// A start at `at_ms` that is not a restart (Docker's first start of a container, or
    /// one whose die the watcher did not see): only the time stability is measured from.
    pub fn started(&mut self, at_ms: i64) {
        self.last_start_ms = Some(at_ms);
    }

    /// Whether Docker last said the container is waiting for its next restart.
    pub fn is_docker_restarting(&self) -> bool {
        self.docker_restarting
    }

    /// Docker's `State.Restarting` (waiting for the next restart of its policy).
    pub fn docker_restarting(&mut self, restarting: bool) {
        self.docker_restarting = restarting;
        if restarting {
            self.looping = true;
        }
    }

    /// Whether the service is in a back-off loop at `now_ms`, given whether it is up;
    /// staying up past the reset time ends the loop.
    pub fn looping(&mut self, rules: &LoopRules, now_ms: i64, up: bool) -> bool {
        let stable = up
            && !self.docker_restarting
            && self
                .last_start_ms
                .is_some_and(|s| now_ms.saturating_sub(s) >= rules.reset_ms);
        if self.looping && stable {
            self.looping = false;
            self.short_restarts.clear();
        }
        self.looping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_short_runs_in_the_window_enter_the_loop_and_a_long_run_leaves_it() {
        let rules = LoopRules::default();
        let mut s = LoopState::default();
        s.restarted(&rules, 1_000, Some(500));
        s.restarted(&rules, 2_000, Some(800));
        assert!(!s.looping(&rules, 2_100, false));
        s.restarted(&rules, 4_000, Some(1_600));
        assert!(s.looping(&rules, 4_100, true), "third short run");
        assert!(s.looping(&rules, 13_999, true), "not yet up for 10 s");
        assert!(
            !s.looping(&rules, 14_000, true),
            "stayed up past the reset time"
        );
    }

    #[test]
    fn long_runs_or_spread_out_restarts_are_not_a_loop() {
        let rules = LoopRules::default();
        let mut s = LoopState::default();
        for i in 0..5 {
            s.restarted(&rules, i * 60_000, Some(59_000));
        }
        assert!(!s.looping(&rules, 300_000, true));
        let mut spread = LoopState::default();
        for i in 0..4 {
            spread.restarted(&rules, i * 130_000, Some(1_000));
        }
        assert!(
            !spread.looping(&rules, 400_000, false),
            "outside the window"
        );
    }

    #[test]
    fn docker_restarting_marks_the_loop_until_the_container_is_stable() {
        let rules = LoopRules::default();
        let mut s = LoopState::default();
        s.docker_restarting(true);
        assert!(s.looping(&rules, 0, false));
        s.restarted(&rules, 1_000, Some(200));
        s.docker_restarting(false);
        assert!(s.looping(&rules, 5_000, true));
        assert!(!s.looping(&rules, 11_000, true));
    }

    #[test]
    fn a_loop_seen_at_connect_ends_after_a_start_without_a_known_die() {
        let rules = LoopRules::default();
        let mut s = LoopState::default();
        s.docker_restarting(true); // inspected at connect, in Docker's back-off delay
        assert!(s.looping(&rules, 0, false));
        s.started(1_000); // its die came before the event stream connected
        s.docker_restarting(false);
        assert!(s.looping(&rules, 10_999, true), "not yet up for 10 s");
        assert!(!s.looping(&rules, 11_000, true), "up past the reset time");
    }

    #[test]
    fn rules_from_huge_settings_saturate() {
        let r = LoopRules::from_secs(u64::MAX, u64::MAX, u64::MAX / 999);
        assert_eq!((r.window_ms, r.reset_ms), (i64::MAX, i64::MAX));
        assert_eq!(r.threshold, usize::MAX);
        let r = LoopRules::from_secs(3, 120, 10);
        assert_eq!((r.threshold, r.window_ms, r.reset_ms), (3, 120_000, 10_000));
        let r = LoopRules::from_secs(1, 9_223_372_036_854_775, 0);
        assert_eq!(
            r.window_ms, 9_223_372_036_854_775_000,
            "the largest that fits is exact"
        );
    }

    #[test]
    fn restarts_at_extreme_times_do_not_overflow() {
        let rules = LoopRules {
            threshold: 2,
            window_ms: 1_000,
            reset_ms: 10_000,
        };
        let mut s = LoopState::default();
        s.restarted(&rules, i64::MIN, Some(1));
        s.restarted(&rules, i64::MAX, Some(1));
        assert!(
            !s.looping(&rules, i64::MIN, false),
            "i64::MAX − i64::MIN is far outside the window"
        );
        s.restarted(&rules, i64::MAX, Some(i64::MIN));
        assert!(
            s.looping(&rules, i64::MIN, true),
            "two short runs at the same instant; not stable at an earlier now"
        );
    }

    #[test]
    fn a_service_that_is_down_stays_in_the_loop() {
        let rules = LoopRules::default();
        let mut s = LoopState::default();
        for t in [1_000, 2_000, 3_000] {
            s.restarted(&rules, t, Some(100));
        }
        assert!(s.looping(&rules, 60_000, false));
    }
}
