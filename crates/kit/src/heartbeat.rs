//! Heartbeats: every service publishes one to `platform.heartbeats.v1` every interval, so
//! restart-watcher can tell a live service from a silent one and a restart from a blip.

use crate::contract::{metrics as names, topics};
use crate::{time::now_ms, KitError, Telemetry};
use prometheus::IntCounter;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientContext;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Schema version of [`Heartbeat`].
pub const HEARTBEAT_VERSION: u32 = 1;

/// One heartbeat. `instance_id` is new for every process; `replica` names the slot the
/// process fills (host and port), so a new instance id in the same replica is a restart,
/// while a new replica is another instance running beside the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub v: u32,
    pub service: String,
    #[serde(default)]
    pub replica: String,
    pub instance_id: String,
    pub started_at_ms: i64,
    pub seq: u64,
    pub sent_at_ms: i64,
    pub interval_ms: u64,
}

/// Who this process is: fixed at start.
#[derive(Debug, Clone)]
pub struct Identity {
    pub service: &'static str,
    pub replica: String,
    pub instance_id: String,
    pub started_at_ms: i64,
}

impl Identity {
    /// A Kafka client id for one of this process's clients: `<role>-<first 8 of the
    /// instance id>`, so the brokers' logs and metrics tell instances and roles apart.
    pub fn client_id(&self, role: &str) -> String {
        let short = self.instance_id.get(..8).unwrap_or(&self.instance_id);
        format!("{role}-{short}")
    }

    /// A fresh identity for this process, in `replica` (see [`replica_name`]).
    pub fn new(service: &'static str, replica: String) -> Self {
        Self {
            service,
            replica,
            instance_id: uuid::Uuid::new_v4().to_string(),
            started_at_ms: now_ms(),
        }
    }

    /// The `seq`-th heartbeat of this process.
    pub fn beat(&self, seq: u64, interval: Duration) -> Heartbeat {
        Heartbeat {
            v: HEARTBEAT_VERSION,
            service: self.service.to_string(),
            replica: self.replica.clone(),
            instance_id: self.instance_id.clone(),
            started_at_ms: self.started_at_ms,
            seq,
            sent_at_ms: now_ms(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The replica of a process serving on `port`: `HOSTNAME` (a container's name under Docker),
/// else /etc/hostname, and the port — stable across restarts of the same slot.
pub fn replica_name(port: u16) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{port}")
}

/// Publishes heartbeats until `shutdown`; a failed send is counted, never fatal.
pub async fn run<C: ClientContext + 'static>(
    producer: FutureProducer<C>,
    identity: Identity,
    interval: Duration,
    telemetry: Telemetry,
    shutdown: CancellationToken,
) -> Result<(), KitError> {
    let sent = IntCounter::new(
        names::HEARTBEATS_SENT_TOTAL,
        "Heartbeats this process published.",
    )?;
    telemetry.registry().register(Box::new(sent.clone()))?;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let payload = serde_json::to_vec(&identity.beat(seq, interval))?;
        let record = FutureRecord::to(topics::HEARTBEATS)
            .key(identity.service)
            .payload(&payload);
        let delivered = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            delivered = producer.send(record, interval) => delivered,
        };
        match delivered {
            Ok(_) => sent.inc(),
            Err((err, _)) => telemetry.error(crate::contract::ErrorKind::HeartbeatPublish, &err),
        }
        seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_name_the_role_and_the_instance_without_panicking_on_a_short_id() {
        let mut id = Identity::new("collector", "collector".into());
        id.instance_id = "0123456789abcdef".into();
        assert_eq!(
            id.client_id("collector-backfill"),
            "collector-backfill-01234567"
        );
        id.instance_id = "abc".into();
        assert_eq!(id.client_id("x"), "x-abc");
    }

    #[test]
    fn beats_share_the_instance_and_count_up() {
        let id = Identity::new("collector", replica_name(9101));
        let (a, b) = (
            id.beat(0, Duration::from_secs(5)),
            id.beat(1, Duration::from_secs(5)),
        );
        assert_eq!(a.instance_id, b.instance_id);
        assert_eq!((a.seq, b.seq, a.interval_ms, a.v), (0, 1, 5000, 1));
        assert_ne!(
            Identity::new("collector", "h:1".into()).instance_id,
            id.instance_id
        );
        assert!(a.replica.ends_with(":9101"));
        let old = r#"{"v":1,"service":"c","instance_id":"i","started_at_ms":1,"seq":0,"sent_at_ms":1,"interval_ms":5000}"#;
        assert_eq!(
            serde_json::from_str::<Heartbeat>(old)
                .expect("v1 without replica")
                .replica,
            ""
        );
        let json = serde_json::to_string(&a).expect("json");
        assert_eq!(serde_json::from_str::<Heartbeat>(&json).expect("parse"), a);
    }
}
