//! Logs and the metrics every service exports.
//!
//! [`Telemetry`] owns the service's Prometheus registry (no global statics) with the
//! standard `process_*` metrics, `nghenhan_build_info` and `nghenhan_errors_total`.
//! [`Telemetry::error`] logs and counts in one call, so no failure is logged but uncounted.

use crate::contract::metrics as names;
use crate::contract::ErrorKind;
use crate::KitError;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};
use std::fmt::Display;

/// Installs the global tracing subscriber: JSON lines (or text), filtered by `RUST_LOG`
/// (default `info`). A second call is a no-op, so tests may call it freely.
pub fn init_logging(format: &str) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_target(true);
    let _ = if format == "text" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    };
}

/// A service's registry plus the metrics the kit itself maintains.
#[derive(Clone)]
pub struct Telemetry {
    service: &'static str,
    registry: Registry,
    errors: IntCounterVec,
}

impl Telemetry {
    /// Creates the registry for `service` at `version`, with process metrics and build info.
    pub fn new(service: &'static str, version: &str) -> Result<Self, KitError> {
        let registry = Registry::new();
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let build = IntGaugeVec::new(
            Opts::new(names::BUILD_INFO, "Build of the running service; always 1."),
            &["service", "version"],
        )?;
        registry.register(Box::new(build.clone()))?;
        build.with_label_values(&[service, version]).set(1);
        let errors = IntCounterVec::new(
            Opts::new(names::ERRORS_TOTAL, "Errors by kind; each is also logged."),
            &["service", "kind"],
        )?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Self {
            service,
            registry,
            errors,
        })
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Logs `err` at warn level and counts it under `kind`, in one call.
    pub fn error(&self, kind: ErrorKind, err: &dyn Display) {
        let kind = kind.as_str();
        tracing::warn!(service = self.service, kind, error = %err, "error");
        self.errors.with_label_values(&[self.service, kind]).inc();
    }

    /// How many errors of `kind` were counted (for tests and health summaries).
    pub fn error_count(&self, kind: ErrorKind) -> u64 {
        self.errors
            .with_label_values(&[self.service, kind.as_str()])
            .get()
    }

    /// The registry in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, KitError> {
        Ok(TextEncoder::new().encode_to_string(&self.registry.gather())?)
    }
}

/// Registers `metric` in `registry` and hands it back: a family is created and registered
/// in one expression.
pub fn registered<M>(registry: &Registry, metric: M) -> Result<M, prometheus::Error>
where
    M: prometheus::core::Collector + Clone + 'static,
{
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_build_info_errors_and_process_metrics() {
        let t = Telemetry::new("collector", "1.2.3").expect("registry");
        t.error(crate::contract::ErrorKind::Kafka, &"broker down");
        let text = t.encode().expect("encodes");
        assert!(text.contains(r#"nghenhan_build_info{service="collector",version="1.2.3"} 1"#));
        assert!(text.contains(r#"nghenhan_errors_total{kind="kafka",service="collector"} 1"#));
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        assert_eq!(t.error_count(crate::contract::ErrorKind::Kafka), 1);
    }
}
