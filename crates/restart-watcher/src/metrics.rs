//! restart-watcher's metrics (names from `kit::contract::metrics`).
//!
//! Every label value an alert depends on exists at zero before its first event: each
//! service seen (the platform's three from the start, then every one a heartbeat or the
//! Docker source names) gets `service_restarts_total` for every [`reasons::ALL`] and
//! `service_backoff_restarting` 0, so `increase()` over the first real restart reads more
//! than 0 instead of nothing (a series that starts at 1 has no increase).

use crate::tracker::Status;
use kit::contract::metrics as names;
use kit::telemetry::registered;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The `reason` label of `service_restarts_total` and of restart events: a closed set.
pub mod reasons {
    /// Exited with a non-zero code that is not a kill signal's.
    pub const CRASH: &str = "crash";
    /// Killed by the kernel's OOM killer (Docker's `oom` event or `State.OOMKilled`).
    pub const OOM: &str = "oom";
    /// Ended by SIGKILL or SIGTERM (exit code 137 or 143).
    pub const KILLED: &str = "killed";
    /// Restarted after Docker's health check reported it unhealthy.
    pub const UNHEALTHY: &str = "unhealthy";
    /// No cause known: a heartbeat's new instance id, or exit code 0 or none.
    pub const UNKNOWN: &str = "unknown";
    pub const ALL: [&str; 5] = [CRASH, OOM, KILLED, UNHEALTHY, UNKNOWN];
}

/// The `service_*` metrics.
#[derive(Clone)]
pub struct WatchMetrics {
    backoff_restarting: IntGaugeVec,
    last_exit_code: IntGaugeVec,
    up: IntGaugeVec,
    restarts: IntCounterVec,
    heartbeat_age: GaugeVec,
    start_time: GaugeVec,
}

impl WatchMetrics {
    /// Registers the metrics; the platform's services (`kit::contract::services::ALL`) and
    /// the `expected` ones start at zero (see [`WatchMetrics::seen`]).
    pub fn register(registry: &Registry, expected: &[String]) -> Result<Self, kit::KitError> {
        let up = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    names::SERVICE_UP,
                    "1 while the service sends heartbeats, 0 after 3 missed intervals.",
                ),
                &["service"],
            )?,
        )?;
        let restarts = registered(
            registry,
            IntCounterVec::new(
                Opts::new(names::SERVICE_RESTARTS_TOTAL, "Restarts seen, by cause."),
                &["service", "reason"],
            )?,
        )?;
        let heartbeat_age = registered(
            registry,
            GaugeVec::new(
                Opts::new(
                    names::SERVICE_HEARTBEAT_AGE_SECONDS,
                    "Seconds since the service's last heartbeat.",
                ),
                &["service"],
            )?,
        )?;
        let start_time = registered(
            registry,
            GaugeVec::new(
                Opts::new(
                    names::SERVICE_START_TIME_SECONDS,
                    "Unix time the running instance started.",
                ),
                &["service"],
            )?,
        )?;
        let backoff_restarting = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    names::SERVICE_BACKOFF_RESTARTING,
                    "1 while the service is in a back-off restart loop.",
                ),
                &["service"],
            )?,
        )?;
        let last_exit_code = registered(
            registry,
            IntGaugeVec::new(
                Opts::new(
                    names::SERVICE_LAST_EXIT_CODE,
                    "Exit code of the service's last death (Docker source).",
                ),
                &["service"],
            )?,
        )?;
        let metrics = Self {
            backoff_restarting,
            last_exit_code,
            up,
            restarts,
            heartbeat_age,
            start_time,
        };
        let platform = kit::contract::services::ALL.iter().copied();
        for service in platform.chain(expected.iter().map(String::as_str)) {
            metrics.seen(service);
        }
        Ok(metrics)
    }

    /// A service is known: its restart counter exists for every reason and its back-off
    /// gauge exists, at zero unless they already have a value (the call is idempotent).
    pub fn seen(&self, service: &str) {
        for reason in reasons::ALL {
            self.restarts.with_label_values(&[service, reason]);
        }
        self.backoff_restarting.with_label_values(&[service]);
    }

    pub fn backoff(&self, service: &str, looping: bool) {
        self.backoff_restarting
            .with_label_values(&[service])
            .set(i64::from(looping));
    }

    pub fn exit_code(&self, service: &str, code: i64) {
        self.last_exit_code.with_label_values(&[service]).set(code);
    }

    pub fn backoff_value(&self, service: &str) -> i64 {
        self.backoff_restarting.with_label_values(&[service]).get()
    }

    pub fn restarts_value(&self, service: &str, reason: &str) -> u64 {
        self.restarts.with_label_values(&[service, reason]).get()
    }

    /// The exposition of the restart and back-off series that exist (reading a value with
    /// `with_label_values` would create the series it asks about).
    #[cfg(test)]
    pub(crate) fn exposition(&self) -> String {
        use prometheus::core::Collector;
        let families: Vec<_> =
            [self.restarts.collect(), self.backoff_restarting.collect()].concat();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .expect("encodes")
    }

    /// Whether `service` has every reason's counter and the back-off gauge, at any value.
    #[cfg(test)]
    pub(crate) fn zeroed(&self, service: &str) -> bool {
        let text = self.exposition();
        reasons::ALL.iter().all(|r| {
            text.contains(&format!(
                r#"service_restarts_total{{reason="{r}",service="{service}"}}"#
            ))
        }) && text.contains(&format!(
            r#"service_backoff_restarting{{service="{service}"}}"#
        ))
    }

    pub fn restarted(&self, service: &str, reason: &str) {
        self.restarts.with_label_values(&[service, reason]).inc();
    }

    /// Sets the gauges from a tracker snapshot.
    pub fn show(&self, statuses: &[Status]) {
        for s in statuses {
            self.up
                .with_label_values(&[&s.service])
                .set(i64::from(s.up));
            if let Some(age) = s.heartbeat_age_seconds {
                self.heartbeat_age.with_label_values(&[&s.service]).set(age);
            }
            if let Some(start) = s.start_time_seconds {
                self.start_time.with_label_values(&[&s.service]).set(start);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(registry: &Registry) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .expect("encodes")
    }

    #[test]
    fn every_reason_and_the_back_off_gauge_exist_at_zero_for_platform_and_expected_services() {
        let registry = Registry::new();
        WatchMetrics::register(&registry, &["grafana".into()]).expect("metrics");
        let text = exposition(&registry);
        for service in kit::contract::services::ALL.iter().chain(&["grafana"]) {
            for reason in reasons::ALL {
                let line =
                    format!(r#"service_restarts_total{{reason="{reason}",service="{service}"}} 0"#);
                assert!(text.contains(&line), "missing {line} in\n{text}");
            }
            let line = format!(r#"service_backoff_restarting{{service="{service}"}} 0"#);
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn seeing_a_service_again_keeps_its_counts() {
        let m = WatchMetrics::register(&Registry::new(), &[]).expect("metrics");
        assert!(!m.zeroed("kafka"));
        m.seen("kafka");
        assert!(m.zeroed("kafka"));
        m.restarted("kafka", reasons::CRASH);
        m.backoff("kafka", true);
        m.seen("kafka");
        assert_eq!(m.restarts_value("kafka", reasons::CRASH), 1);
        assert_eq!(m.restarts_value("kafka", reasons::OOM), 0);
        assert_eq!(m.backoff_value("kafka"), 1);
    }
}
