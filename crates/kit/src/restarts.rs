//! The restart event record of `platform.restarts.v1`: restart-watcher publishes one per
//! restart it sees; sync-verifier reads them to name the cause of a gap.

use serde::{Deserialize, Serialize};

/// Schema version of [`RestartEvent`].
pub const RESTART_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartEvent {
    pub v: u32,
    pub service: String,
    /// When the service came back (Unix ms).
    pub at_ms: i64,
    pub exit_code: Option<i64>,
    /// crash | oom | killed | unhealthy | unknown
    pub reason: String,
    pub restart_count: u64,
    /// How long the previous run lasted (ms), when known.
    pub run_time_ms: Option<i64>,
}
