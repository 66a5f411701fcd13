//! Helpers for the workspace's tests and e2e tools, written once (feature `testing`: the
//! services never call it): waiting on a condition with a deadline instead of sleeping,
//! and reading samples from a Prometheus exposition.

use std::time::Duration;

/// How often [`until`] and [`until_some`] look again.
pub const POLL: Duration = Duration::from_millis(50);

/// Waits until `check` holds; panics with `what` if `limit` passes first.
pub async fn until(what: &str, limit: Duration, check: impl AsyncFnMut() -> bool) {
    assert!(within(limit, check).await, "{what}: not within {limit:?}");
}

/// Whether `check` held within `limit` (for a test that says more than "timed out").
pub async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    poll(limit, async || check().await.then_some(()))
        .await
        .is_some()
}

/// Waits until `check` yields a value and returns it; panics with `what` if `limit`
/// passes first.
pub async fn until_some<T>(
    what: &str,
    limit: Duration,
    check: impl AsyncFnMut() -> Option<T>,
) -> T {
    match poll(limit, check).await {
        Some(value) => value,
        None => panic!("{what}: not within {limit:?}"),
    }
}

/// The one polling loop: `check` every [`POLL`] until it yields a value or `limit` passes.
async fn poll<T>(limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The body of `url` (a /metrics page), or `None` while it does not answer.
pub async fn scrape(url: &str) -> Option<String> {
    reqwest::get(url)
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .text()
        .await
        .ok()
}

/// One series of the /metrics page at `url`; `None` while it does not answer or lacks it.
pub async fn metric(url: &str, series: &str) -> Option<f64> {
    sample(&scrape(url).await?, series)
}

/// The sum of the series of the /metrics page at `url` whose lines start with `prefix`;
/// `None` while it does not answer.
pub async fn metric_sum(url: &str, prefix: &str) -> Option<f64> {
    Some(sum(&scrape(url).await?, prefix))
}

/// The value of one series, written as in the exposition (`name` or `name{labels}`).
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The sum of every series whose line starts with `prefix` (e.g. `name{label="x"`).
pub fn sum(exposition: &str, prefix: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPOSITION: &str = "# HELP x y\nup 1\nerrors_total{kind=\"a\"} 2\nerrors_total{kind=\"b\"} 3\nerrors_total_x 9\n";

    #[test]
    fn samples_are_read_exactly_and_summed_by_prefix() {
        assert_eq!(sample(EXPOSITION, "up"), Some(1.0));
        assert_eq!(sample(EXPOSITION, r#"errors_total{kind="b"}"#), Some(3.0));
        assert_eq!(
            sample(EXPOSITION, "errors_total"),
            None,
            "a name is not a prefix of another"
        );
        assert_eq!(sum(EXPOSITION, "errors_total{"), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn until_returns_when_the_condition_holds_and_panics_at_the_deadline() {
        let mut n = 0;
        let got = until_some("third try", Duration::from_secs(1), async || {
            n += 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(got, 3);
        use futures::FutureExt;
        let never = until("never", Duration::from_millis(200), async || false);
        assert!(std::panic::AssertUnwindSafe(never)
            .catch_unwind()
            .await
            .is_err());
    }
}
