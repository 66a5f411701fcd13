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

/// Runs `attempt` until it succeeds, waiting between tries with a back-off that doubles
/// from `first` up to `cap`; each failure goes to `failed` (to log and count it). `None`
/// when `shutdown` comes first, also in the middle of an attempt (which is dropped: an
/// attempt must be safe to abandon, as a transaction that rolls back is).
pub async fn retry<T, E, F, Fut>(
    shutdown: &CancellationToken,
    first: Duration,
    cap: Duration,
    mut attempt: F,
    mut failed: impl FnMut(E),
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = first;
    loop {
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return None,
            outcome = attempt() => outcome,
        };
        match outcome {
            Ok(value) => return Some(value),
            Err(err) => failed(err),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(cap);
    }
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
    async fn retry_backs_off_until_success_or_shutdown() {
        let token = CancellationToken::new();
        let mut tries = 0;
        let mut failures = 0;
        let start = tokio::time::Instant::now();
        let got = retry(
            &token,
            Duration::from_secs(1),
            Duration::from_secs(4),
            || {
                tries += 1;
                let n = tries;
                async move {
                    if n < 4 {
                        Err("no")
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| failures += 1,
        )
        .await;
        assert_eq!((got, failures), (Some(4), 3));
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1 + 2 + 4),
            "1 s, 2 s, then capped at 4 s"
        );
        token.cancel();
        let never: Option<()> = retry(
            &token,
            Duration::from_secs(1),
            Duration::from_secs(1),
            || async { Err::<(), _>("down") },
            |_| {},
        )
        .await;
        assert_eq!(never, None);
    }

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
