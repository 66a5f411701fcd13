//! Graceful shutdown: one [`CancellationToken`] per process, cancelled on SIGTERM or
//! SIGINT and handed to every task; [`drain`] waits for them within a grace period.

use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "no SIGTERM handler; waiting for SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Waits for every task in `tasks` to end, at most `grace`; returns how many were still
/// running (and were aborted) when the grace period ran out.
pub async fn drain<T: 'static>(mut tasks: JoinSet<T>, grace: Duration) -> usize {
    let finished =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_ok() {
        return 0;
    }
    let left = tasks.len();
    tasks.abort_all();
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_aborts_tasks_that_outlive_the_grace_period() {
        let token = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let t = token.clone();
        tasks.spawn(async move { t.cancelled().await });
        tasks.spawn(std::future::pending::<()>());
        token.cancel();
        assert_eq!(drain(tasks, Duration::from_secs(1)).await, 1);
    }
}
