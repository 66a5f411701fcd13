//! Heartbeat tracking, pure and clock-free: the caller passes "now" (Unix ms), so tests
//! drive time directly. A new instance id in a replica (host and port) is a restart; a new
//! replica is another instance beside the others (scale-out), not a restart. A service is
//! up while any replica sent a heartbeat within [`DOWN_AFTER_INTERVALS`] intervals.

use kit::heartbeat::Heartbeat;
use std::collections::{HashMap, HashSet};

/// A service is down after this many heartbeat intervals without one.
pub const DOWN_AFTER_INTERVALS: i64 = 3;

/// What one heartbeat told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The first heartbeat of a service since the watcher started.
    FirstSeen,
    /// Another heartbeat from the current instance.
    Alive,
    /// A new instance replaced the previous one: the service restarted.
    Restarted {
        previous_instance: String,
        previous_started_ms: i64,
        previous_seen_ms: i64,
    },
    /// A late heartbeat from an instance that was already replaced; ignored.
    Stale,
}

/// One service's state as the metrics show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub service: String,
    pub up: bool,
    /// Seconds since the last heartbeat; `None` if none was ever seen.
    pub heartbeat_age_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

#[derive(Debug, Clone)]
struct ServiceState {
    instance_id: String,
    started_at_ms: i64,
    last_seen_ms: i64,
    interval_ms: i64,
    retired: HashSet<String>,
}

/// Replicas not heard from for this long are forgotten (when another replica is alive).
const FORGET_MS: i64 = 600_000;

/// Heartbeat state of every replica of every service seen, plus the services expected.
#[derive(Debug)]
pub struct Tracker {
    services: HashMap<String, HashMap<String, ServiceState>>,
    expected: Vec<String>,
    default_interval_ms: i64,
    started_ms: i64,
}

impl Tracker {
    /// `expected` services are reported down if no heartbeat arrives within the down
    /// window after the watcher starts at `now_ms`.
    pub fn new(expected: Vec<String>, default_interval_ms: i64, now_ms: i64) -> Self {
        Self {
            services: HashMap::new(),
            expected,
            default_interval_ms,
            started_ms: now_ms,
        }
    }

    /// Takes one heartbeat received at `now_ms`.
    pub fn observe(&mut self, hb: &Heartbeat, now_ms: i64) -> Observation {
        let interval_ms = i64::try_from(hb.interval_ms).unwrap_or(i64::MAX).max(1);
        let replicas = self.services.entry(hb.service.clone()).or_default();
        replicas
            .retain(|r, st| *r == hb.replica || now_ms.saturating_sub(st.last_seen_ms) < FORGET_MS);
        let Some(state) = replicas.get_mut(&hb.replica) else {
            let state = ServiceState {
                instance_id: hb.instance_id.clone(),
                started_at_ms: hb.started_at_ms,
                last_seen_ms: now_ms,
                interval_ms,
                retired: HashSet::new(),
            };
            replicas.insert(hb.replica.clone(), state);
            return Observation::FirstSeen;
        };
        if state.instance_id == hb.instance_id {
            state.last_seen_ms = now_ms;
            state.interval_ms = interval_ms;
            return Observation::Alive;
        }
        if state.retired.contains(&hb.instance_id) || hb.started_at_ms < state.started_at_ms {
            return Observation::Stale;
        }
        let previous_instance = std::mem::replace(&mut state.instance_id, hb.instance_id.clone());
        let (previous_seen_ms, previous_started_ms) = (state.last_seen_ms, state.started_at_ms);
        state.retired.insert(previous_instance.clone());
        state.started_at_ms = hb.started_at_ms;
        state.last_seen_ms = now_ms;
        state.interval_ms = interval_ms;
        Observation::Restarted {
            previous_instance,
            previous_started_ms,
            previous_seen_ms,
        }
    }

    /// The status of every seen or expected service at `now_ms`, sorted by name.
    pub fn snapshot(&self, now_ms: i64) -> Vec<Status> {
        let mut names: Vec<&String> = self.services.keys().chain(self.expected.iter()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| self.status(name, now_ms))
            .collect()
    }

    fn status(&self, service: &str, now_ms: i64) -> Status {
        // The service is as alive as its freshest replica.
        let freshest = self
            .services
            .get(service)
            .and_then(|r| r.values().max_by_key(|st| st.last_seen_ms));
        let Some(state) = freshest else {
            let grace = DOWN_AFTER_INTERVALS.saturating_mul(self.default_interval_ms);
            return Status {
                service: service.to_string(),
                up: now_ms.saturating_sub(self.started_ms) < grace,
                heartbeat_age_seconds: None,
                start_time_seconds: None,
            };
        };
        let age_ms = now_ms.saturating_sub(state.last_seen_ms).max(0);
        Status {
            service: service.to_string(),
            // interval_ms comes from the heartbeat: a huge one must not overflow.
            up: age_ms < DOWN_AFTER_INTERVALS.saturating_mul(state.interval_ms),
            heartbeat_age_seconds: Some(age_ms as f64 / 1000.0),
            start_time_seconds: Some(state.started_at_ms as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(service: &str, instance: &str, started: i64, seq: u64) -> Heartbeat {
        Heartbeat {
            v: 1,
            service: service.into(),
            replica: "host:9101".into(),
            instance_id: instance.into(),
            started_at_ms: started,
            seq,
            sent_at_ms: started + 5_000 * seq as i64,
            interval_ms: 5_000,
        }
    }

    #[test]
    fn a_new_instance_is_a_restart_and_a_late_old_beat_is_stale() {
        let mut t = Tracker::new(vec![], 5_000, 0);
        assert_eq!(
            t.observe(&beat("collector", "a", 0, 0), 0),
            Observation::FirstSeen
        );
        assert_eq!(
            t.observe(&beat("collector", "a", 0, 1), 5_000),
            Observation::Alive
        );
        let restarted = t.observe(&beat("collector", "b", 9_000, 0), 9_500);
        assert_eq!(
            restarted,
            Observation::Restarted {
                previous_instance: "a".into(),
                previous_started_ms: 0,
                previous_seen_ms: 5_000
            }
        );
        assert_eq!(
            t.observe(&beat("collector", "a", 0, 2), 9_600),
            Observation::Stale
        );
        let status = &t.snapshot(10_000)[0];
        assert_eq!(status.start_time_seconds, Some(9.0));
    }

    #[test]
    fn a_second_replica_is_scale_out_not_a_restart() {
        let mut t = Tracker::new(vec![], 5_000, 0);
        t.observe(&beat("sync-verifier", "a", 0, 0), 0);
        let other = Heartbeat {
            replica: "host:9202".into(),
            ..beat("sync-verifier", "b", 100, 0)
        };
        assert_eq!(t.observe(&other, 200), Observation::FirstSeen);
        assert_eq!(
            t.observe(&beat("sync-verifier", "a", 0, 1), 5_000),
            Observation::Alive
        );
        assert!(
            matches!(
                t.observe(&beat("sync-verifier", "c", 6_000, 0), 6_100),
                Observation::Restarted { .. }
            ),
            "a new instance in replica 1"
        );
        assert!(t.snapshot(12_000)[0].up);
    }

    #[test]
    fn silence_for_three_intervals_means_down() {
        let mut t = Tracker::new(vec![], 5_000, 0);
        t.observe(&beat("sync-verifier", "a", 0, 0), 1_000);
        assert!(t.snapshot(15_999)[0].up);
        let down = &t.snapshot(16_000)[0];
        assert!(!down.up);
        assert_eq!(down.heartbeat_age_seconds, Some(15.0));
        t.observe(&beat("sync-verifier", "a", 0, 4), 20_000);
        assert!(
            t.snapshot(20_000)[0].up,
            "a late heartbeat of the same instance brings it back"
        );
    }

    #[test]
    fn expected_services_never_seen_go_down_after_the_grace_window() {
        let t = Tracker::new(vec!["collector".into()], 5_000, 100_000);
        assert!(t.snapshot(110_000)[0].up);
        let status = &t.snapshot(115_000)[0];
        assert!(!status.up);
        assert_eq!(status.heartbeat_age_seconds, None);
    }

    #[test]
    fn hostile_heartbeat_numbers_do_not_overflow() {
        let mut t = Tracker::new(vec![], i64::MAX, i64::MIN);
        let huge = Heartbeat {
            interval_ms: u64::MAX,
            seq: u64::MAX,
            ..beat("collector", "a", i64::MIN, 0)
        };
        t.observe(&huge, 0);
        assert!(
            t.snapshot(1_000_000)[0].up,
            "an interval of i64::MAX ms keeps it up; 3 × it saturates"
        );
        let replaced = Heartbeat {
            interval_ms: 0,
            ..beat("collector", "b", i64::MAX, 0)
        };
        assert!(matches!(
            t.observe(&replaced, i64::MIN),
            Observation::Restarted {
                previous_started_ms: i64::MIN,
                ..
            }
        ));
        assert!(!t.snapshot(i64::MAX)[0].up, "interval 0 is taken as 1 ms");
        let never_seen = Tracker::new(vec!["x".into()], i64::MAX, i64::MIN);
        assert!(
            !never_seen.snapshot(i64::MAX)[0].up,
            "a grace window of i64::MAX ms saturates, and i64::MAX − i64::MIN too"
        );
    }
}
