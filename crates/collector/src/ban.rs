//! Ban memory: the end of the latest Binance ban (418), long pause (429) or WAF block
//! (403), kept in a small JSON file in the state directory so that a restarted collector
//! does not call Binance again before the ban ends (a crash loop that keeps calling makes
//! Binance lengthen the ban).
//!
//! The file is written atomically (a temporary file, then a rename). A missing file means
//! no ban; an unreadable one is logged, counted under `ban_state` and treated as no ban:
//! losing the memory must never stop the collector.

use kit::Telemetry;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const FILE: &str = "binance-ban.json";

/// A remembered ban: REST stays paused until `banned_until_ms` (Unix ms, wall clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ban {
    pub banned_until_ms: u64,
    /// The HTTP status that caused it (418, 429 or 403).
    pub status: u16,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BanStateError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a ban record: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The state file of one collector.
pub struct BanStore {
    path: PathBuf,
    telemetry: Option<Telemetry>,
    /// The latest ban written (or read), so that only a longer ban is written again.
    written: std::sync::Mutex<Option<Ban>>,
}

impl BanStore {
    /// The store in `dir` (created if missing; a failure is logged, and writes will fail
    /// the same way later, each logged).
    pub fn new(dir: &Path, telemetry: Option<Telemetry>) -> Self {
        let store = Self {
            path: dir.join(FILE),
            telemetry,
            written: std::sync::Mutex::new(None),
        };
        if let Err(source) = std::fs::create_dir_all(dir) {
            store.error(&BanStateError::Write {
                path: dir.to_path_buf(),
                source,
            });
        }
        store
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remembered ban, if the file holds one (expired or not: the caller decides).
    pub fn load(&self) -> Option<Ban> {
        match read(&self.path) {
            Ok(ban) => {
                *self.written.lock().unwrap_or_else(|p| p.into_inner()) = ban;
                ban
            }
            Err(err) => {
                self.error(&err);
                None
            }
        }
    }

    /// Remembers `ban` unless a ban that ends later is already written. Synchronous (a
    /// tiny file, on a rare event): no await point, so a task cancelled at shutdown right
    /// after a ban cannot leave it unwritten.
    pub fn save(&self, ban: Ban) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.is_some_and(|w| w.banned_until_ms >= ban.banned_until_ms) {
            return;
        }
        match write(&self.path, &ban) {
            Ok(()) => *written = Some(ban),
            Err(err) => self.error(&err),
        }
    }

    fn error(&self, err: &BanStateError) {
        match &self.telemetry {
            Some(t) => t.error(kit::contract::ErrorKind::BanState, err),
            None => tracing::warn!(error = %err, "ban memory"),
        }
    }
}

fn read(path: &Path) -> Result<Option<Ban>, BanStateError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BanStateError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| BanStateError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

fn write(path: &Path, ban: &Ban) -> Result<(), BanStateError> {
    let failed = |source| BanStateError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let json = serde_json::to_vec(ban).map_err(|e| failed(std::io::Error::other(e)))?;
    std::fs::write(&tmp, json).map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "collector-{name}-{}-{}",
            std::process::id(),
            kit::time::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_saved_ban_is_read_back_and_only_a_longer_one_replaces_it() {
        let dir = temp_dir("ban-roundtrip");
        let store = BanStore::new(&dir.join("nested"), None);
        assert_eq!(store.load(), None, "no file, no ban");
        store.save(Ban {
            banned_until_ms: 2_000,
            status: 418,
        });
        store.save(Ban {
            banned_until_ms: 1_000,
            status: 429,
        });
        assert_eq!(
            BanStore::new(&dir.join("nested"), None).load(),
            Some(Ban {
                banned_until_ms: 2_000,
                status: 418
            })
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("nested"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            1,
            "no temporary file is left behind: {leftovers:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unreadable_file_is_counted_and_means_no_ban() {
        let dir = temp_dir("ban-garbage");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(FILE), b"{\"banned_until_ms\": \"soon\"").expect("garbage");
        let telemetry = Telemetry::new("collector", "test").expect("telemetry");
        let store = BanStore::new(&dir, Some(telemetry.clone()));
        assert_eq!(store.load(), None);
        assert_eq!(telemetry.error_count(kit::contract::ErrorKind::BanState), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn an_unwritable_directory_is_counted_not_fatal() {
        let dir = temp_dir("ban-unwritable");
        std::fs::write(&dir, b"a file where the directory should be").expect("file");
        let telemetry = Telemetry::new("collector", "test").expect("telemetry");
        let store = BanStore::new(&dir, Some(telemetry.clone()));
        store.save(Ban {
            banned_until_ms: 1,
            status: 418,
        });
        assert_eq!(store.load(), None);
        assert!(
            telemetry.error_count(kit::contract::ErrorKind::BanState) >= 2,
            "creating the dir and writing both failed"
        );
        let _ = std::fs::remove_file(&dir);
    }
}
