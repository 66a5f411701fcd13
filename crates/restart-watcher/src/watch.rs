//! The watcher's state: heartbeats (tracker), Docker facts and back-off loops per service,
//! turned into restart events and metrics. Clock-free: callers pass Unix ms.
//!
//! A restart is counted once: Docker's die/start (with its cause) when the Docker source
//! saw it, else the heartbeat's new instance id (cause `unknown`).
//!
//! Every service seen gets its metrics at zero at once ([`WatchMetrics::seen`]), and the
//! back-off gauge covers containers that send no heartbeat (kafka, postgres, grafana, ...):
//! for them "up" is Docker's word, i.e. not waiting in the restart policy's delay.

use crate::docker::Seen;
use crate::loops::{LoopRules, LoopState};
use crate::metrics::{reasons, WatchMetrics};
use crate::tracker::{Observation, Tracker};
use kit::heartbeat::Heartbeat;
use kit::restarts::{RestartEvent, RESTART_VERSION};
use std::collections::HashMap;

/// How long a Docker-reported restart covers the heartbeat's view of the same restart.
const SAME_RESTART_MS: i64 = 30_000;

pub struct Watch {
    pub tracker: Tracker,
    rules: LoopRules,
    loops: HashMap<String, LoopState>,
    docker_restart_ms: HashMap<String, i64>,
    restart_counts: HashMap<String, u64>,
    metrics: WatchMetrics,
}

impl Watch {
    pub fn new(tracker: Tracker, rules: LoopRules, metrics: WatchMetrics) -> Self {
        Self {
            tracker,
            rules,
            loops: HashMap::new(),
            docker_restart_ms: HashMap::new(),
            restart_counts: HashMap::new(),
            metrics,
        }
    }

    /// A heartbeat received at `now_ms`; returns the restart event to publish, if any.
    pub fn heartbeat(&mut self, hb: &Heartbeat, now_ms: i64) -> Option<RestartEvent> {
        let observation = self.tracker.observe(hb, now_ms);
        if observation == Observation::FirstSeen {
            self.metrics.seen(&hb.service);
        }
        let Observation::Restarted {
            previous_instance,
            previous_started_ms,
            previous_seen_ms,
        } = observation
        else {
            return None;
        };
        tracing::info!(service = %hb.service, %previous_instance, instance = %hb.instance_id, "new instance: restart");
        let covered = self
            .docker_restart_ms
            .get(&hb.service)
            .is_some_and(|t| now_ms.saturating_sub(*t).saturating_abs() <= SAME_RESTART_MS);
        if covered {
            return None;
        }
        let run_ms = Some(previous_seen_ms.saturating_sub(previous_started_ms).max(0)); // started_at_ms is the sender's
        Some(self.restarted(
            &hb.service,
            hb.started_at_ms,
            None,
            reasons::UNKNOWN,
            run_ms,
        ))
    }

    /// A fact from the Docker source; returns the restart event to publish, if any.
    pub fn docker(&mut self, seen: Seen) -> Option<RestartEvent> {
        match seen {
            Seen::Restart {
                service,
                at_ms,
                exit_code,
                reason,
                restart_count,
                run_ms,
            } => {
                self.metrics.seen(&service);
                self.docker_restart_ms.insert(service.clone(), at_ms);
                let mut event = self.restarted(&service, at_ms, exit_code, &reason, run_ms);
                event.restart_count = event.restart_count.max(restart_count);
                Some(event)
            }
            Seen::Started { service, at_ms } => {
                self.metrics.seen(&service);
                self.loops.entry(service).or_default().started(at_ms);
                None
            }
            Seen::Restarting {
                service,
                restarting,
            } => {
                self.metrics.seen(&service);
                self.loops
                    .entry(service)
                    .or_default()
                    .docker_restarting(restarting);
                None
            }
            Seen::Connected(_) => None,
        }
    }

    fn restarted(
        &mut self,
        service: &str,
        at_ms: i64,
        exit_code: Option<i64>,
        reason: &str,
        run_ms: Option<i64>,
    ) -> RestartEvent {
        self.metrics.restarted(service, reason);
        if let Some(code) = exit_code {
            self.metrics.exit_code(service, code);
        }
        self.loops
            .entry(service.to_string())
            .or_default()
            .restarted(&self.rules, at_ms, run_ms);
        let count = self.restart_counts.entry(service.to_string()).or_default();
        *count += 1;
        RestartEvent {
            v: RESTART_VERSION,
            service: service.to_string(),
            at_ms,
            exit_code,
            reason: reason.to_string(),
            restart_count: *count,
            run_time_ms: run_ms,
        }
    }

    /// Sets every gauge for `now_ms`: back-off from heartbeats (up = heartbeats arrive) for
    /// the services that send them, from Docker alone (up = not in the restart policy's
    /// delay) for the containers that do not.
    pub fn refresh(&mut self, now_ms: i64) {
        let statuses = self.tracker.snapshot(now_ms);
        self.metrics.show(&statuses);
        for s in &statuses {
            let state = self.loops.entry(s.service.clone()).or_default();
            let looping = state.looping(&self.rules, now_ms, s.up);
            self.metrics.backoff(&s.service, looping);
        }
        for (service, state) in &mut self.loops {
            if statuses.iter().any(|s| &s.service == service) {
                continue;
            }
            let up = !state.is_docker_restarting();
            let looping = state.looping(&self.rules, now_ms, up);
            self.metrics.backoff(service, looping);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> Watch {
        let metrics = WatchMetrics::register(&prometheus::Registry::new(), &[]).expect("metrics");
        Watch::new(
            Tracker::new(vec![], 5_000, 0),
            LoopRules::default(),
            metrics,
        )
    }

    fn beat(instance: &str, started: i64) -> Heartbeat {
        Heartbeat {
            v: 1,
            service: "collector".into(),
            replica: "host:9101".into(),
            instance_id: instance.into(),
            started_at_ms: started,
            seq: 0,
            sent_at_ms: started,
            interval_ms: 5_000,
        }
    }

    #[test]
    fn a_crash_loop_from_heartbeats_enters_and_leaves_back_off() {
        let mut w = watch();
        w.heartbeat(&beat("a", 0), 0);
        let mut t = 0;
        for i in 1..=3 {
            t += 2_000; // each instance lives 2 s
            let e = w.heartbeat(&beat(&format!("i{i}"), t), t).expect("restart");
            assert_eq!((e.reason.as_str(), e.restart_count), ("unknown", i));
        }
        w.refresh(t + 100);
        assert_eq!(w.metrics.backoff_value("collector"), 1);
        for k in 1..=3 {
            w.heartbeat(
                &Heartbeat {
                    seq: k,
                    ..beat("i3", t)
                },
                t + k as i64 * 5_000,
            );
        }
        w.refresh(t + 15_000);
        assert_eq!(
            w.metrics.backoff_value("collector"),
            0,
            "up past the reset time"
        );
    }

    #[test]
    fn docker_restarts_carry_their_cause_and_cover_the_heartbeat() {
        let mut w = watch();
        w.heartbeat(&beat("a", 0), 0);
        let seen = Seen::Restart {
            service: "collector".into(),
            at_ms: 10_000,
            exit_code: Some(137),
            reason: "oom".into(),
            restart_count: 1,
            run_ms: Some(9_000),
        };
        let e = w.docker(seen).expect("event");
        assert_eq!((e.reason.as_str(), e.exit_code), ("oom", Some(137)));
        assert!(
            w.heartbeat(&beat("b", 10_050), 10_100).is_none(),
            "the same restart, seen by heartbeat"
        );
        assert_eq!(w.metrics.restarts_value("collector", "oom"), 1);
        assert_eq!(w.metrics.restarts_value("collector", "unknown"), 0);
    }

    fn docker_restart(service: &str, at_ms: i64, run_ms: i64) -> Seen {
        Seen::Restart {
            service: service.into(),
            at_ms,
            exit_code: Some(1),
            reason: reasons::CRASH.into(),
            restart_count: 0,
            run_ms: Some(run_ms),
        }
    }

    #[test]
    fn a_container_without_heartbeats_gets_zeroed_metrics_and_its_back_off_loop_exported() {
        let mut w = watch();
        assert!(!w.metrics.zeroed("kafka"));
        w.docker(Seen::Restarting {
            service: "kafka".into(),
            restarting: false,
        });
        w.refresh(0);
        assert!(w.metrics.zeroed("kafka"), "{}", w.metrics.exposition());
        assert!(w
            .metrics
            .exposition()
            .contains(r#"service_restarts_total{reason="oom",service="kafka"} 0"#));
        assert_eq!(w.metrics.backoff_value("kafka"), 0);
        for (i, t) in [10_000, 13_000, 17_000].into_iter().enumerate() {
            w.docker(docker_restart("kafka", t, 2_000));
            assert_eq!(
                w.metrics.restarts_value("kafka", reasons::CRASH),
                i as u64 + 1
            );
        }
        w.refresh(17_100);
        assert_eq!(w.metrics.backoff_value("kafka"), 1, "three short runs");
        w.docker(Seen::Restarting {
            service: "kafka".into(),
            restarting: true,
        });
        w.refresh(40_000);
        assert_eq!(
            w.metrics.backoff_value("kafka"),
            1,
            "waiting in Docker's delay is not up"
        );
        w.docker(Seen::Started {
            service: "kafka".into(),
            at_ms: 60_000,
        });
        w.docker(Seen::Restarting {
            service: "kafka".into(),
            restarting: false,
        });
        w.refresh(69_999);
        assert_eq!(w.metrics.backoff_value("kafka"), 1, "not yet up for 10 s");
        w.refresh(70_000);
        assert_eq!(
            w.metrics.backoff_value("kafka"),
            0,
            "up past the reset time"
        );
        assert!(
            w.tracker.snapshot(70_000).is_empty(),
            "kafka sends no heartbeat and must not be reported down by the tracker"
        );
    }

    #[test]
    fn a_service_first_seen_by_heartbeat_gets_every_reason_at_zero() {
        let mut w = watch();
        let hb = Heartbeat {
            service: "exchange-sim".into(),
            ..beat("a", 0)
        };
        assert!(!w.metrics.zeroed("exchange-sim"));
        w.heartbeat(&hb, 0);
        assert!(
            w.metrics.zeroed("exchange-sim"),
            "{}",
            w.metrics.exposition()
        );
    }

    #[test]
    fn a_heartbeat_started_at_i64_min_does_not_overflow_the_run_time() {
        let mut w = watch();
        w.heartbeat(&beat("a", i64::MIN), i64::MAX);
        let e = w
            .heartbeat(&beat("b", i64::MIN + 1), i64::MAX)
            .expect("a restart");
        assert_eq!(
            e.run_time_ms,
            Some(i64::MAX),
            "previous_seen − previous_started saturates"
        );
        let seen = Seen::Restart {
            service: "collector".into(),
            at_ms: i64::MIN,
            exit_code: None,
            reason: "crash".into(),
            restart_count: u64::MAX,
            run_ms: None,
        };
        assert_eq!(w.docker(seen).expect("event").restart_count, u64::MAX);
        assert!(
            w.heartbeat(&beat("c", i64::MIN + 2), i64::MAX).is_some(),
            "i64::MAX − i64::MIN is not within the same-restart window"
        );
    }
}
