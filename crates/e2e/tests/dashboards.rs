//! Every dashboard's PromQL against the live native stack's Prometheus: each expression
//! must parse and run, and each panel must return data (panels marked "Compose only", such
//! as cAdvisor's, are only checked to parse: cAdvisor runs under Docker Compose).

use anyhow::{ensure, Result};
use e2e::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs the native stack; `make test` runs it"]
async fn every_dashboard_panel_returns_data_on_the_running_stack() -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    // rates need two scrapes of every target: wait until the services have been up a while
    eventually(
        "Prometheus has a minute of data",
        Duration::from_secs(90),
        || async {
            let r = prom_query(&client, r#"count_over_time(up{job="collector"}[1m])"#).await?;
            Ok(r.first()
                .and_then(sample_value)
                .filter(|n| *n >= 4.0)
                .map(|_| ()))
        },
    )
    .await?;
    let mut panels: BTreeMap<(String, String), (bool, bool)> = BTreeMap::new();
    for (dash, panel, expr, compose_only) in dashboard_queries()? {
        let result = prom_query(&client, &concrete(&expr))
            .await
            .map_err(|e| anyhow::anyhow!("{dash} / {panel}: {expr}: {e}"))?;
        let entry = panels.entry((dash, panel)).or_insert((false, compose_only));
        entry.0 |= !result.is_empty();
    }
    let empty: Vec<String> = panels
        .iter()
        .filter(|((_, p), (has_data, compose_only))| {
            !has_data && !compose_only && !p.starts_with("annotation")
        })
        .map(|((d, p), _)| format!("{d} / {p}"))
        .collect();
    ensure!(
        empty.is_empty(),
        "panels without data on the running stack: {empty:#?}"
    );
    Ok(())
}
