//! The contract of DESIGN.md in one place: ports, topic names and metric names.
//!
//! Dashboards, alert rules, tests and users lean on these names. Change one only together
//! with every rule, panel and test that uses it (the dashboard check in `crates/e2e` reads
//! this module to prove every metric a rule or panel uses is defined here).

/// Default ports (each overridable by environment).
pub mod ports {
    pub const COLLECTOR: u16 = 9101;
    pub const SYNC_VERIFIER: u16 = 9102;
    pub const RESTART_WATCHER: u16 = 9103;
    pub const EXCHANGE_SIM: u16 = 9180;
    pub const PROMETHEUS: u16 = 9090;
    pub const ALERTMANAGER: u16 = 9093;
    pub const GRAFANA: u16 = 3000;
    pub const KAFKA: u16 = 9092;
    pub const POSTGRES: u16 = 5432;
}

/// Service names: the `service` label, the heartbeat `service` field, the Prometheus job.
pub mod services {
    pub const COLLECTOR: &str = "collector";
    pub const SYNC_VERIFIER: &str = "sync-verifier";
    pub const RESTART_WATCHER: &str = "restart-watcher";
    pub const ALL: [&str; 3] = [COLLECTOR, SYNC_VERIFIER, RESTART_WATCHER];
}

/// Kafka topics. Values are JSON with a `v` schema-version field; key = symbol where there is one.
pub mod topics {
    pub const AGGTRADES: &str = "market.aggtrades.v1";
    pub const KLINES: &str = "market.klines.v1";
    pub const HEADS: &str = "market.heads.v1";
    pub const BACKFILL: &str = "sync.backfill.v1";
    pub const HEARTBEATS: &str = "platform.heartbeats.v1";
    pub const RESTARTS: &str = "platform.restarts.v1";
    pub const ALL: [&str; 6] = [AGGTRADES, KLINES, HEADS, BACKFILL, HEARTBEATS, RESTARTS];

    /// The dead-letter topic of `topic`: messages that could not be read, with the error.
    pub fn dlq(topic: &str) -> String {
        format!("{topic}.dlq")
    }
}

/// Metric names. Labels are listed beside each name as the contract gives them.
pub mod metrics {
    // every service
    pub const BUILD_INFO: &str = "nghenhan_build_info"; // {service,version}
    pub const ERRORS_TOTAL: &str = "nghenhan_errors_total"; // {service,kind}
    pub const KAFKA_CONSUMER_LAG: &str = "kafka_consumer_lag"; // {topic,partition}
    /// Lag measured from outside the consumers (committed group offsets against log-end
    /// offsets through the admin API, as Burrow and kafka_exporter do), by restart-watcher.
    pub const KAFKA_CONSUMER_GROUP_LAG: &str = "kafka_consumer_group_lag"; // {group,topic,partition}
    pub const HEARTBEATS_SENT_TOTAL: &str = "nghenhan_heartbeats_sent_total";

    // collector
    pub const BINANCE_RATE_LIMIT_USED: &str = "binance_rate_limit_used"; // {limit,interval}
    pub const BINANCE_RATE_LIMIT_MAX: &str = "binance_rate_limit_max"; // {limit,interval}
    pub const BINANCE_REQUESTS_TOTAL: &str = "binance_requests_total"; // {endpoint,status}
    pub const BINANCE_REQUEST_DURATION_SECONDS: &str = "binance_request_duration_seconds"; // {endpoint}
    pub const BINANCE_RATE_LIMITED_TOTAL: &str = "binance_rate_limited_total"; // {status}
    pub const BINANCE_WS_CONNECTED: &str = "binance_ws_connected"; // {stream}
    pub const BINANCE_WS_RECONNECTS_TOTAL: &str = "binance_ws_reconnects_total"; // {reason}
    pub const BINANCE_WS_MESSAGES_TOTAL: &str = "binance_ws_messages_total"; // {stream}
    pub const COLLECTOR_PUBLISHED_TOTAL: &str = "collector_published_total"; // {topic}
    pub const COLLECTOR_BACKFILL_RECORDS_TOTAL: &str = "collector_backfill_records_total"; // {symbol,stream}
    /// Stream records not published (e.g. the producer queue was full); back-fill heals them.
    pub const COLLECTOR_RECORDS_DROPPED_TOTAL: &str = "collector_records_dropped_total"; // {reason}

    // sync-verifier
    pub const SYNC_LAST_EVENT_TIMESTAMP_SECONDS: &str = "sync_last_event_timestamp_seconds";
    pub const SYNC_LAG_SECONDS: &str = "sync_lag_seconds";
    pub const SYNC_MISSING_RECORDS: &str = "sync_missing_records";
    pub const SYNC_GAPS_OPEN: &str = "sync_gaps_open";
    pub const SYNC_GAPS_DETECTED_TOTAL: &str = "sync_gaps_detected_total";
    pub const SYNC_GAPS_HEALED_TOTAL: &str = "sync_gaps_healed_total";
    pub const SYNC_GAP_HEAL_SECONDS: &str = "sync_gap_heal_seconds";
    /// Live (WebSocket) aggregate trades: exchange event time to the row committed.
    pub const SYNC_END_TO_END_LATENCY_SECONDS: &str = "sync_end_to_end_latency_seconds";
    pub const SYNC_RECORDS_PERSISTED_TOTAL: &str = "sync_records_persisted_total"; // {stream}
    pub const SYNC_DUPLICATES_TOTAL: &str = "sync_duplicates_total"; // {stream}
    pub const SYNC_MISMATCHES_TOTAL: &str = "sync_mismatches_total"; // {stream}
    pub const SYNC_IN_SYNC: &str = "sync_in_sync"; // {symbol,stream}
    /// The newest event time the exchange reports for the symbol (from the heads).
    pub const SYNC_EXCHANGE_HEAD_TIMESTAMP_SECONDS: &str = "sync_exchange_head_timestamp_seconds"; // {symbol,stream}
    /// Symbols dropped from the sync metrics after no record or head mentioned them for the
    /// retirement grace period (delisted, or no longer configured).
    pub const SYNC_SYMBOLS_RETIRED_TOTAL: &str = "sync_symbols_retired_total";
    // PostgreSQL health, exported by sync-verifier (which owns the database).
    pub const POSTGRES_UP: &str = "postgres_up";
    pub const POSTGRES_DATABASE_SIZE_BYTES: &str = "postgres_database_size_bytes";
    pub const POSTGRES_TABLE_SIZE_BYTES: &str = "postgres_table_size_bytes"; // {table}
    pub const POSTGRES_POOL_CONNECTIONS: &str = "postgres_pool_connections"; // {state}

    // restart-watcher
    pub const SERVICE_UP: &str = "service_up"; // {service}
    pub const SERVICE_RESTARTS_TOTAL: &str = "service_restarts_total"; // {service,reason}
    pub const SERVICE_BACKOFF_RESTARTING: &str = "service_backoff_restarting"; // {service}
    pub const SERVICE_LAST_EXIT_CODE: &str = "service_last_exit_code"; // {service}
    pub const SERVICE_HEARTBEAT_AGE_SECONDS: &str = "service_heartbeat_age_seconds"; // {service}
    pub const SERVICE_START_TIME_SECONDS: &str = "service_start_time_seconds"; // {service}

    /// exchange-sim's own metrics (a test double of Binance, not part of the platform).
    pub mod sim {
        pub const WS_CONNECTIONS: &str = "exchange_sim_ws_connections";
        pub const WS_SENT_TOTAL: &str = "exchange_sim_ws_messages_sent_total";
        pub const WS_DROPPED_TOTAL: &str = "exchange_sim_ws_messages_dropped_total";
        pub const WS_DISCONNECTS_TOTAL: &str = "exchange_sim_ws_disconnects_total"; // {reason}
        pub const REST_REQUESTS_TOTAL: &str = "exchange_sim_rest_requests_total"; // {endpoint,status}
        pub const TRADES_TOTAL: &str = "exchange_sim_trades_total";
    }

    /// Every name above, for checks that rules and dashboards use only contract metrics.
    pub const ALL: &[&str] = &[
        BUILD_INFO,
        ERRORS_TOTAL,
        KAFKA_CONSUMER_LAG,
        KAFKA_CONSUMER_GROUP_LAG,
        HEARTBEATS_SENT_TOTAL,
        BINANCE_RATE_LIMIT_USED,
        BINANCE_RATE_LIMIT_MAX,
        BINANCE_REQUESTS_TOTAL,
        BINANCE_REQUEST_DURATION_SECONDS,
        BINANCE_RATE_LIMITED_TOTAL,
        BINANCE_WS_CONNECTED,
        BINANCE_WS_RECONNECTS_TOTAL,
        BINANCE_WS_MESSAGES_TOTAL,
        COLLECTOR_PUBLISHED_TOTAL,
        COLLECTOR_BACKFILL_RECORDS_TOTAL,
        COLLECTOR_RECORDS_DROPPED_TOTAL,
        SYNC_LAST_EVENT_TIMESTAMP_SECONDS,
        SYNC_LAG_SECONDS,
        SYNC_MISSING_RECORDS,
        SYNC_GAPS_OPEN,
        SYNC_GAPS_DETECTED_TOTAL,
        SYNC_GAPS_HEALED_TOTAL,
        SYNC_GAP_HEAL_SECONDS,
        SYNC_END_TO_END_LATENCY_SECONDS,
        SYNC_RECORDS_PERSISTED_TOTAL,
        SYNC_DUPLICATES_TOTAL,
        SYNC_MISMATCHES_TOTAL,
        SYNC_IN_SYNC,
        SYNC_EXCHANGE_HEAD_TIMESTAMP_SECONDS,
        SYNC_SYMBOLS_RETIRED_TOTAL,
        POSTGRES_UP,
        POSTGRES_DATABASE_SIZE_BYTES,
        POSTGRES_TABLE_SIZE_BYTES,
        POSTGRES_POOL_CONNECTIONS,
        SERVICE_UP,
        SERVICE_RESTARTS_TOTAL,
        SERVICE_BACKOFF_RESTARTING,
        SERVICE_LAST_EXIT_CODE,
        SERVICE_HEARTBEAT_AGE_SECONDS,
        SERVICE_START_TIME_SECONDS,
    ];
}

/// Every error kind a service counts (`nghenhan_errors_total{kind}`) and logs, in one
/// place: [`crate::Telemetry::error`] takes nothing else, so a typo cannot start a new
/// series, and rules and dashboards can rely on the set (crates/e2e's config test checks
/// that every `kind` they name is one of these).
macro_rules! error_kinds {
    ($($(#[doc = $doc:literal])+ $variant:ident => $name:literal,)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorKind {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl ErrorKind {
            /// All kinds, in declaration order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)+];

            /// The `kind` label value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => $name,)+
                }
            }
        }
    };
}

error_kinds! {
    /// kit: the ops HTTP server could not accept a connection.
    HttpAccept => "http_accept",
    /// kit: the registry could not be encoded for /metrics.
    MetricsEncode => "metrics_encode",
    /// kit: a task failed while the service shut down.
    TaskFailed => "task_failed",
    /// kit: a librdkafka client error (broker down, metadata, ...).
    Kafka => "kafka",
    /// kit: a record could not be published (after librdkafka's own retries).
    KafkaPublish => "kafka_publish",
    /// kit: a consumer could not read.
    KafkaConsume => "kafka_consume",
    /// kit: the topics could not be created or read at start.
    KafkaTopics => "kafka_topics",
    /// kit: an offset could not be stored (a partition revoked meanwhile: never fatal).
    KafkaOffsetStore => "kafka_offset_store",
    /// kit: a heartbeat could not be published.
    HeartbeatPublish => "heartbeat_publish",
    /// A record could not be serialized.
    Serialize => "serialize",
    /// collector: a WebSocket connection could not be opened.
    WsConnect => "ws_connect",
    /// collector: a WebSocket connection broke while reading.
    WsRead => "ws_read",
    /// collector: a WebSocket frame that is not a valid Binance event (counted, skipped).
    WsMalformed => "ws_malformed",
    /// collector: the exchange heads (latest trade and kline) could not be read.
    Heads => "heads",
    /// collector: exchangeInfo (the rate limits) could not be read.
    ExchangeInfo => "exchange_info",
    /// collector: the used-weight probe failed.
    WeightProbe => "weight_probe",
    /// collector: Binance's WAF answered 403 (a request it took for an attack).
    BinanceWafForbidden => "binance_waf_forbidden",
    /// collector: the 418 ban memory could not be read or written.
    BanState => "ban_state",
    /// collector: a back-fill request that cannot be served (dead-lettered).
    BackfillBadRequest => "backfill_bad_request",
    /// collector: a back-fill request failed (retried by the verifier).
    BackfillFailed => "backfill_failed",
    /// sync-verifier: a market record that cannot be decoded or validated (dead-lettered).
    BadRecord => "bad_record",
    /// sync-verifier: a write to PostgreSQL failed (retried with back-off).
    DbWrite => "db_write",
    /// sync-verifier: PostgreSQL refused a record for good (dead-lettered).
    DbRefusedRecord => "db_refused_record",
    /// sync-verifier: the stored state could not be read at start (retried).
    DbResume => "db_resume",
    /// sync-verifier: the migrations could not be applied (retried).
    DbMigrate => "db_migrate",
    /// sync-verifier: the database's health, sizes or pool could not be read.
    DbStats => "db_stats",
    /// sync-verifier: a back-fill request could not be sent (the re-send loop tries again).
    BackfillRequest => "backfill_request",
    /// restart-watcher: a heartbeat that cannot be decoded.
    BadHeartbeat => "bad_heartbeat",
    /// restart-watcher: a restart could not be published.
    RestartPublish => "restart_publish",
    /// restart-watcher: the Docker Engine event stream failed or ended (reconnected).
    DockerEvents => "docker_events",
    /// restart-watcher: the topics' metadata could not be read (the lag round measured nothing).
    KafkaLagMetadata => "kafka_lag_metadata",
    /// restart-watcher: the brokers' group list could not be read.
    KafkaLagGroups => "kafka_lag_groups",
    /// restart-watcher: a group's committed offsets could not be read.
    KafkaLagOffsets => "kafka_lag_offsets",
    /// restart-watcher: partitions' log start or end offsets could not be read.
    KafkaLagWatermarks => "kafka_lag_watermarks",
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn metric_names_are_unique_and_valid() {
        let mut seen = HashSet::new();
        for name in metrics::ALL {
            assert!(seen.insert(*name), "duplicate metric name {name}");
            let ok = name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            assert!(ok, "metric name {name} is not snake_case");
        }
    }

    #[test]
    fn error_kinds_are_unique_snake_case_labels() {
        let mut seen = HashSet::new();
        for kind in ErrorKind::ALL {
            let name = kind.as_str();
            assert!(seen.insert(name), "duplicate error kind {name}");
            let ok = name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            assert!(ok, "error kind {name} is not snake_case");
        }
    }

    #[test]
    fn dead_letter_topic_appends_suffix() {
        assert_eq!(topics::dlq(topics::KLINES), "market.klines.v1.dlq");
    }
}
