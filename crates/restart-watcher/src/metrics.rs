//! restart-watcher's metrics (names from `kit::contract::metrics`).

use crate::tracker::Status;
use kit::contract::metrics as names;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

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
    /// Registers the metrics; `expected` services start with zeroed restart counters so
    /// `increase()` sees their first restart.
    pub fn register(registry: &Registry, expected: &[String]) -> Result<Self, prometheus::Error> {
        let up = IntGaugeVec::new(
            Opts::new(
                names::SERVICE_UP,
                "1 while the service sends heartbeats, 0 after 3 missed intervals.",
            ),
            &["service"],
        )?;
        let restarts = IntCounterVec::new(
            Opts::new(names::SERVICE_RESTARTS_TOTAL, "Restarts seen, by cause."),
            &["service", "reason"],
        )?;
        let heartbeat_age = GaugeVec::new(
            Opts::new(
                names::SERVICE_HEARTBEAT_AGE_SECONDS,
                "Seconds since the service's last heartbeat.",
            ),
            &["service"],
        )?;
        let start_time = GaugeVec::new(
            Opts::new(
                names::SERVICE_START_TIME_SECONDS,
                "Unix time the running instance started.",
            ),
            &["service"],
        )?;
        let backoff_restarting = IntGaugeVec::new(
            Opts::new(
                names::SERVICE_BACKOFF_RESTARTING,
                "1 while the service is in a back-off restart loop.",
            ),
            &["service"],
        )?;
        let last_exit_code = IntGaugeVec::new(
            Opts::new(
                names::SERVICE_LAST_EXIT_CODE,
                "Exit code of the service's last death (Docker source).",
            ),
            &["service"],
        )?;
        registry.register(Box::new(backoff_restarting.clone()))?;
        registry.register(Box::new(last_exit_code.clone()))?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(heartbeat_age.clone()))?;
        registry.register(Box::new(start_time.clone()))?;
        for service in expected {
            restarts.with_label_values(&[service, "unknown"]);
        }
        for service in expected {
            backoff_restarting.with_label_values(&[service]).set(0);
        }
        Ok(Self {
            backoff_restarting,
            last_exit_code,
            up,
            restarts,
            heartbeat_age,
            start_time,
        })
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
