//! Typed configuration from the environment (clap derive with `env=`).
//!
//! Each service flattens [`KitConfig`] into its own `Config`. Tests build configs from a map
//! with [`parse_from_map`], never by changing the process environment.

use clap::{Args, Parser};

/// A service's whole configuration, which holds the settings every service shares.
pub trait ServiceConfig: Parser {
    fn kit(&self) -> &KitConfig;
}
use std::collections::HashMap;

/// Settings every service shares.
#[derive(Debug, Clone, Args)]
pub struct KitConfig {
    /// Address of the ops server (/metrics, /healthz, /readyz); unset: every interface on
    /// the service's own port (`contract::ports`).
    #[arg(long, env = "LISTEN_ADDR")]
    pub listen: Option<std::net::SocketAddr>,

    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// Replicas of each topic the services create (1 for one broker; 3 for a cluster).
    /// Topics that exist already are left as they are.
    #[arg(
        long,
        env = "KAFKA_REPLICATION_FACTOR",
        default_value_t = 1,
        value_parser = clap::value_parser!(i32).range(1..=7)
    )]
    pub replication_factor: i32,

    /// `min.insync.replicas` of the topics the services create: a write is acknowledged
    /// (producers use acks=all) once this many replicas hold it (1 for one broker; 2 for a
    /// cluster of 3, so one broker may fail without loss or stop). At most the replication
    /// factor.
    #[arg(
        long,
        env = "KAFKA_MIN_INSYNC_REPLICAS",
        default_value_t = 1,
        value_parser = clap::value_parser!(i32).range(1..=7)
    )]
    pub min_insync_replicas: i32,

    /// Heartbeat period in milliseconds (restart-watcher calls a service down after 3 missed).
    #[arg(long, env = "HEARTBEAT_INTERVAL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub heartbeat_interval_ms: u64,

    /// Seconds to finish in-flight work after SIGTERM/SIGINT before exiting anyway.
    #[arg(
        long,
        env = "SHUTDOWN_GRACE_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(0..=3_600)
    )]
    pub shutdown_grace_secs: u64,

    /// Log format: `json` (default, for machines) or `text` (for a terminal).
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

impl KitConfig {
    /// The ops server's address: `LISTEN_ADDR`, or every interface on `port`.
    pub fn listen_addr(&self, port: u16) -> std::net::SocketAddr {
        self.listen
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], port)))
    }

    pub fn heartbeat_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.heartbeat_interval_ms)
    }

    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Parses `T` as if `vars` were the environment: each argument whose `env` name is a key of
/// `vars` gets that value; everything else takes its default. Unknown keys are ignored, as
/// the environment's other variables are.
pub fn parse_from_map<T: Parser>(vars: &HashMap<&str, &str>) -> Result<T, clap::Error> {
    let mut command = T::command();
    let mut argv = vec![command.get_name().to_string()];
    for arg in command.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        if let Some(value) = env.to_str().and_then(|key| vars.get(key)) {
            argv.push(format!("--{long}={value}"));
        }
    }
    // Clear env fallbacks so the real environment cannot leak into a test's config.
    command = command.mut_args(|a| a.env(None::<&str>));
    let matches = command.try_get_matches_from(argv)?;
    T::from_arg_matches(&matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Demo {
        #[command(flatten)]
        kit: KitConfig,
    }

    #[test]
    fn defaults_apply_without_variables() {
        let demo: Demo = parse_from_map(&HashMap::new()).expect("defaults parse");
        assert_eq!(demo.kit.kafka_brokers, "127.0.0.1:9092");
        assert_eq!(demo.kit.heartbeat_interval_ms, 5000);
        assert_eq!(demo.kit.listen_addr(9101).to_string(), "0.0.0.0:9101");
    }

    #[test]
    fn variables_override_defaults() {
        let vars = HashMap::from([
            ("KAFKA_BROKERS", "kafka:9092"),
            ("HEARTBEAT_INTERVAL_MS", "250"),
            ("LISTEN_ADDR", "127.0.0.1:7000"),
        ]);
        let demo: Demo = parse_from_map(&vars).expect("parses");
        assert_eq!(demo.kit.kafka_brokers, "kafka:9092");
        assert_eq!(demo.kit.heartbeat_interval().as_millis(), 250);
        assert_eq!(demo.kit.listen_addr(9101).to_string(), "127.0.0.1:7000");
    }

    #[test]
    fn bad_values_are_rejected_with_the_argument_named() {
        let vars = HashMap::from([("HEARTBEAT_INTERVAL_MS", "soon")]);
        let err = parse_from_map::<Demo>(&vars).expect_err("must reject");
        assert!(err.to_string().contains("heartbeat-interval-ms"), "{err}");
        let vars = HashMap::from([("LOG_FORMAT", "xml")]);
        assert!(parse_from_map::<Demo>(&vars).is_err());
    }
}
