//! End-to-end: the real Kafka, PostgreSQL, Prometheus and Alertmanager of the native stack.
//! `make test` starts the stack, runs these with `--ignored`, and stops it.

use anyhow::{ensure, Context, Result};
use e2e::*;
use kit::contract::{services, topics};
use kit::heartbeat::Heartbeat;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use std::collections::HashSet;
use std::time::Duration;

#[tokio::test]
#[ignore = "needs the native stack; `make test` runs it"]
async fn native_stack_end_to_end() -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    for service in services::ALL {
        stack(&["start", service])?; // a no-op when it runs; revives one an earlier run killed
    }
    heartbeats_flow_through_kafka().await?;
    prometheus_scrapes_every_service(&client).await?;
    exchange_faults_reach_discord(&client).await?;
    killed_service_reaches_discord_as_service_down(&client).await?;
    restart_is_counted_from_the_new_instance_id(&client).await?;
    a_crash_loop_reaches_discord_as_backoff_restarting(&client).await?;
    Ok(())
}

async fn heartbeats_flow_through_kafka() -> Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", KAFKA)
        .set("group.id", format!("e2e-{}", std::process::id()))
        .set("auto.offset.reset", "latest")
        .create()?;
    consumer.subscribe(&[topics::HEARTBEATS])?;
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < services::ALL.len() {
        let msg = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .with_context(|| format!("heartbeats within 30 s; saw only {seen:?}"))??;
        let hb: Heartbeat = serde_json::from_slice(msg.payload().unwrap_or_default())?;
        ensure!(
            msg.key() == Some(hb.service.as_bytes()),
            "heartbeat key must be the service name"
        );
        ensure!(
            hb.v == 1 && hb.interval_ms == 5000,
            "unexpected heartbeat {hb:?}"
        );
        seen.insert(hb.service);
    }
    Ok(())
}

async fn prometheus_scrapes_every_service(client: &reqwest::Client) -> Result<()> {
    eventually(
        "up == 1 for the three services",
        Duration::from_secs(60),
        || async {
            let up = prom_query(client, r#"up{tier="app"} == 1"#).await?;
            let names: HashSet<String> = up
                .iter()
                .filter_map(|s| s["metric"]["service"].as_str().map(String::from))
                .collect();
            Ok((names.len() == services::ALL.len()).then_some(()))
        },
    )
    .await
}

async fn killed_service_reaches_discord_as_service_down(client: &reqwest::Client) -> Result<()> {
    settle_previous(client, "ServiceDown").await?;
    clear_sink(client).await?;
    hold(services::COLLECTOR)?; // its supervisor would restart it at once
    kill(services::COLLECTOR, "KILL")?;
    let message = eventually(
        "ServiceDown for collector at the Discord sink",
        Duration::from_secs(120),
        || firing(client, "ServiceDown", "collector"),
    )
    .await?;
    ensure!(
        message.status == 204 && message.errors.is_empty(),
        "Discord would refuse it: {:?}",
        message.errors
    );
    let embed = &message.body["embeds"][0];
    let description = embed["description"].as_str().context("embed description")?;
    ensure!(
        embed["title"].as_str().map_or(0, |t| t.chars().count()) <= 256,
        "title too long"
    );
    ensure!(description.chars().count() <= 4096, "description too long");
    ensure!(
        description.contains("collector is down"),
        "summary missing: {description}"
    );
    ensure!(
        description.contains("runbook: docs/runbooks/ServiceDown.md"),
        "runbook missing: {description}"
    );
    Ok(())
}

/// On a stack that already alerted on the collector (a second run), Alertmanager would
/// treat a new alert of the same group as the same notification until it has sent the
/// resolution: wait for that first.
async fn settle_previous(client: &reqwest::Client, alertname: &str) -> Result<()> {
    let url = format!("{ALERTMANAGER}/api/v2/alerts?filter=alertname=%22{alertname}%22&filter=service=%22collector%22");
    let alerts: Vec<serde_json::Value> = client
        .get(&url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if alerts.is_empty() {
        return Ok(());
    }
    eventually(
        &format!("the previous collector {alertname} to resolve in Discord"),
        Duration::from_secs(180),
        || async {
            let resolved = sink_messages(client).await?.iter().any(|m| {
                let title = m.body["embeds"][0]["title"].as_str().unwrap_or_default();
                title.contains("RESOLVED")
                    && title.contains(&format!("{alertname} "))
                    && title.contains("collector")
            });
            Ok(resolved.then_some(()))
        },
    )
    .await
}

async fn restart_is_counted_from_the_new_instance_id(client: &reqwest::Client) -> Result<()> {
    let query = r#"sum(service_restarts_total{service="collector"})"#;
    let before = prom_query(client, query)
        .await?
        .first()
        .and_then(sample_value)
        .context("restart counter")?;
    stack(&["start", services::COLLECTOR])?;
    eventually(
        "restart-watcher counts the collector restart",
        Duration::from_secs(60),
        || async {
            let now = prom_query(client, query)
                .await?
                .first()
                .and_then(sample_value)
                .unwrap_or(before);
            Ok((now >= before + 1.0).then_some(()))
        },
    )
    .await
}

/// Kills the collector as soon as restart-watcher has seen each new instance, as a crash
/// loop would; the native supervisor restarts it with Docker's back-off each time, and
/// restart-watcher's loop detection must reach the Discord sink through the real
/// Prometheus and Alertmanager.
async fn a_crash_loop_reaches_discord_as_backoff_restarting(
    client: &reqwest::Client,
) -> Result<()> {
    settle_previous(client, "ServiceBackoffRestarting").await?;
    clear_sink(client).await?;
    let started = r#"service_start_time_seconds{service="collector"}"#;
    for round in 0..4 {
        let before = watcher_metric(client, started).await?;
        kill(services::COLLECTOR, "KILL")?;
        eventually(
            &format!("restart {round}: restart-watcher sees a new collector"),
            Duration::from_secs(60),
            || async { Ok((watcher_metric(client, started).await? > before).then_some(())) },
        )
        .await?;
    }
    let message = eventually(
        "ServiceBackoffRestarting for collector at the Discord sink",
        Duration::from_secs(120),
        || firing(client, "ServiceBackoffRestarting", "collector"),
    )
    .await?;
    ensure!(
        message.status == 204 && message.errors.is_empty(),
        "Discord would refuse it: {:?}",
        message.errors
    );
    let description = message.body["embeds"][0]["description"]
        .as_str()
        .context("description")?;
    ensure!(
        description.contains("back-off restart loop"),
        "summary missing: {description}"
    );
    // The loop may be over by now (the collector stays up after the last kill): the
    // metric must have shown it while it lasted.
    let loop_flag = prom_query(
        client,
        r#"max_over_time(service_backoff_restarting{service="collector"}[5m])"#,
    )
    .await?;
    ensure!(
        loop_flag.iter().filter_map(sample_value).any(|v| v == 1.0),
        "the metric showed the loop: {loop_flag:?}"
    );
    let log = std::fs::read_to_string(run_dir().join("logs/collector.log"))?;
    ensure!(
        log.contains("collector exited with status 137"),
        "the supervisor saw the kills"
    );
    Ok(())
}

const SIM: &str = "http://127.0.0.1:9180";

async fn sim_control(client: &reqwest::Client, op: &str, body: serde_json::Value) -> Result<()> {
    client
        .post(format!("{SIM}/sim/{op}"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// The first FIRING message for `alertname` (and `context`, e.g. the service) at the sink.
async fn firing(
    client: &reqwest::Client,
    alertname: &str,
    context: &str,
) -> Result<Option<discord_sink::server::Recorded>> {
    Ok(sink_messages(client).await?.into_iter().find(|m| {
        let title = m.body["embeds"][0]["title"].as_str().unwrap_or_default();
        title.contains("FIRING")
            && title.contains(&format!("] {alertname}"))
            && title.contains(context)
    }))
}

async fn firing_title(client: &reqwest::Client, alertname: &str) -> Result<Option<String>> {
    let found = firing(client, alertname, "")
        .await?
        .filter(|m| m.status == 204 && m.errors.is_empty());
    Ok(found.and_then(|m| m.body["embeds"][0]["title"].as_str().map(String::from)))
}

/// Faults injected into the stack's exchange-sim (the collector talks to it) reach Discord
/// as DataGapOpen, BinanceRateLimited and HighErrorRate through the real Prometheus and
/// Alertmanager: dropped trades open a gap that a 418 ban keeps from healing, the ban is
/// a rate limit, and malformed frames every second are errors.
async fn exchange_faults_reach_discord(client: &reqwest::Client) -> Result<()> {
    clear_sink(client).await?;
    sim_control(
        client,
        "drop",
        serde_json::json!({"symbol": "BTCUSDT", "stream": "aggTrade", "count": 25}),
    )
    .await?;
    sim_control(
        client,
        "ratelimit",
        serde_json::json!({"status": 418, "duration_ms": 60_000}),
    )
    .await?;
    let garbage = {
        let client = client.clone();
        tokio::spawn(async move {
            for _ in 0..70 {
                let _ = sim_control(&client, "garbage", serde_json::json!({})).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let mut titles = Vec::new();
    for alert in ["BinanceRateLimited", "DataGapOpen", "HighErrorRate"] {
        let title = eventually(
            &format!("{alert} at the Discord sink"),
            Duration::from_secs(150),
            || firing_title(client, alert),
        )
        .await?;
        titles.push(title);
    }
    garbage.abort();
    sim_control(client, "reset", serde_json::json!({})).await?;
    ensure!(titles[1].contains("DataGapOpen"), "{titles:?}");
    Ok(())
}
