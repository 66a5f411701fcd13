//! alertmanager/alertmanager.yml on a real Alertmanager (the binary `stack.sh install`
//! builds): which alerts an inhibition mutes, which it must not, and where each receiver
//! delivers. It starts an Alertmanager of its own on a free port, with the committed file
//! rendered to a discord-sink in this process, so it needs no stack.

use anyhow::{bail, ensure, Context, Result};
use discord_sink::{serve, Sink};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpListener;

/// The alerts posted together: (labels, whether the inhibitions must mute it).
const ALERTS: [(&[(&str, &str)], bool); 11] = [
    (
        &[
            ("alertname", "ServiceDown"),
            ("service", "collector"),
            ("severity", "critical"),
        ],
        false,
    ),
    // ServiceDown must not hide the loop that explains it, nor the restarts.
    (
        &[
            ("alertname", "ServiceBackoffRestarting"),
            ("service", "collector"),
            ("severity", "critical"),
        ],
        false,
    ),
    (
        &[
            ("alertname", "ServiceRestarted"),
            ("service", "collector"),
            ("reason", "crash"),
            ("severity", "warning"),
        ],
        false,
    ),
    // It mutes the other alerts of its own service only.
    (
        &[
            ("alertname", "HighErrorRate"),
            ("service", "collector"),
            ("severity", "warning"),
        ],
        true,
    ),
    (
        &[
            ("alertname", "HighErrorRate"),
            ("service", "sync-verifier"),
            ("severity", "warning"),
        ],
        false,
    ),
    (
        &[
            ("alertname", "BinanceRateLimited"),
            ("status", "429"),
            ("severity", "critical"),
        ],
        false,
    ),
    (
        &[
            ("alertname", "BinanceRateLimitNearLimit"),
            ("limit", "request_weight"),
            ("interval", "1m"),
            ("severity", "warning"),
        ],
        true,
    ),
    (
        &[("alertname", "DataSyncStalled"), ("severity", "critical")],
        false,
    ),
    (
        &[
            ("alertname", "DataSyncLagging"),
            ("symbol", "BTCUSDT"),
            ("stream", "aggTrade"),
            ("severity", "warning"),
        ],
        true,
    ),
    (
        &[
            ("alertname", "AlertDeliveryFailing"),
            ("integration", "discord"),
            ("severity", "warning"),
        ],
        false,
    ),
    (&[("alertname", "Watchdog"), ("severity", "warning")], false),
];

/// Discord titles (`<alertname> · <service>`) that must arrive; the warnings wait 30 s.
const TO_DISCORD: [&str; 7] = [
    "ServiceDown · collector",
    "ServiceBackoffRestarting · collector",
    "ServiceRestarted · collector",
    "HighErrorRate · sync-verifier",
    "BinanceRateLimited",
    "DataSyncStalled",
    "AlertDeliveryFailing",
];
/// Titles that must never arrive: the muted alerts, and the Watchdog (its own receiver).
const NEVER_TO_DISCORD: [&str; 4] = [
    "HighErrorRate · collector",
    "BinanceRateLimitNearLimit",
    "DataSyncLagging",
    "Watchdog",
];

#[tokio::test]
#[ignore = "needs the Alertmanager binary that `stack.sh install` builds; `make test` runs it"]
async fn inhibitions_explain_without_hiding_on_a_real_alertmanager() -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}", listener.local_addr()?);
    // Never cancelled: the sink ends with the test's runtime.
    tokio::spawn(serve(listener, Sink::default(), Default::default()));

    let am = Alertmanager::start(&sink_url)?;
    let checks = async {
        wait_ready(&client, &am.url).await?;
        post_alerts(&client, &am.url).await?;
        inhibited_as_configured(&client, &am.url).await?;
        delivered_where_configured(&client, &sink_url).await
    };
    checks.await.with_context(|| am.log_tail())
}

/// The API marks exactly the alerts that must be muted as suppressed by an inhibition.
async fn inhibited_as_configured(client: &reqwest::Client, am: &str) -> Result<()> {
    let expected: BTreeMap<String, bool> = ALERTS
        .iter()
        .map(|(labels, muted)| (key(labels.iter().copied()), *muted))
        .collect();
    let seen = e2e::eventually(
        "Alertmanager's inhibitions settle as configured",
        Duration::from_secs(15),
        || async {
            let states = alert_states(client, am).await?;
            Ok((states == expected).then_some(states))
        },
    )
    .await;
    if seen.is_err() {
        let states = alert_states(client, am).await?;
        for (alert, muted) in &expected {
            let got = states.get(alert);
            ensure!(
                got == Some(muted),
                "{alert}: inhibited should be {muted}, Alertmanager says {got:?}"
            );
        }
    }
    seen.map(|_| ())
}

/// Every alert that is not muted reaches its receiver; the muted ones and the Watchdog
/// never reach Discord; AlertDeliveryFailing also reaches the dead man's switch's failure
/// endpoint and the Watchdog its ping endpoint.
async fn delivered_where_configured(client: &reqwest::Client, sink: &str) -> Result<()> {
    let arrived = e2e::eventually(
        "every alert that is not muted at the Discord sink",
        Duration::from_secs(60),
        || async {
            let titles = discord_titles(client, sink).await?;
            let all = TO_DISCORD
                .iter()
                .all(|t| titles.iter().any(|x| x.ends_with(t)));
            Ok(all.then_some(titles))
        },
    )
    .await;
    let titles = match arrived {
        Ok(titles) => titles,
        Err(e) => {
            let titles = discord_titles(client, sink).await?;
            bail!("{e:#}: expected {TO_DISCORD:?}, arrived {titles:?}");
        }
    };
    ensure!(
        titles.iter().all(|t| t.starts_with("[FIRING")),
        "{titles:?}"
    );
    // The muted warnings' groups flush together with the ones that arrived (30 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let titles = discord_titles(client, sink).await?;
    for muted in NEVER_TO_DISCORD {
        ensure!(
            !titles.iter().any(|t| t.contains(&format!("] {muted}"))),
            "{muted} reached Discord: {titles:?}"
        );
    }
    let watchdog: Value = client
        .get(format!("{sink}/sink/watchdog"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        watchdog["pings"].as_u64() >= Some(1),
        "no Watchdog ping: {watchdog}"
    );
    ensure!(
        watchdog["fails"].as_u64() >= Some(1),
        "no failure ping: {watchdog}"
    );
    let names: Vec<&str> = watchdog["last_fail"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["labels"]["alertname"].as_str())
        .collect();
    ensure!(
        names == ["AlertDeliveryFailing"],
        "the failure endpoint carried {names:?}, not AlertDeliveryFailing alone"
    );
    Ok(())
}

/// Titles of the Discord messages the sink accepted.
async fn discord_titles(client: &reqwest::Client, sink: &str) -> Result<Vec<String>> {
    let recorded: Vec<discord_sink::server::Recorded> = client
        .get(format!("{sink}/sink/messages"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut titles = Vec::new();
    for m in recorded {
        ensure!(
            m.status == 204,
            "Discord would refuse {}: {:?}",
            m.body,
            m.errors
        );
        titles.push(
            m.body["embeds"][0]["title"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    Ok(titles)
}

/// A stable name for a label set: `alertname{k=v,...}` in label order.
fn key<'a>(labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let labels: BTreeMap<&str, &str> = labels.collect();
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| **k != "alertname")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{}{{{}}}",
        labels.get("alertname").unwrap_or(&""),
        rest.join(",")
    )
}

/// Each alert the API lists, and whether an inhibition mutes it.
async fn alert_states(client: &reqwest::Client, am: &str) -> Result<BTreeMap<String, bool>> {
    let alerts: Vec<Value> = client
        .get(format!("{am}/api/v2/alerts"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut states = BTreeMap::new();
    for alert in alerts {
        let labels = alert["labels"].as_object().context("labels")?;
        let name = key(labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default())));
        let inhibited = alert["status"]["inhibitedBy"]
            .as_array()
            .is_some_and(|by| !by.is_empty());
        states.insert(name, inhibited);
    }
    Ok(states)
}

async fn post_alerts(client: &reqwest::Client, am: &str) -> Result<()> {
    let body: Vec<Value> = ALERTS
        .iter()
        .map(|(labels, _)| {
            let labels: serde_json::Map<String, Value> =
                labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            json!({
                "labels": labels,
                "annotations": {
                    "summary": format!("{} (alert_routing test)", labels["alertname"].as_str().unwrap_or_default()),
                    "description": "Posted by crates/e2e/tests/alert_routing.rs.",
                    "runbook": "docs/runbooks/Watchdog.md",
                },
            })
        })
        .collect();
    client
        .post(format!("{am}/api/v2/alerts"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn wait_ready(client: &reqwest::Client, am: &str) -> Result<()> {
    e2e::eventually("Alertmanager ready", Duration::from_secs(30), || async {
        Ok(client
            .get(format!("{am}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(()))
    })
    .await
}

/// An Alertmanager process on the committed configuration, killed when dropped.
struct Alertmanager {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Alertmanager {
    /// Renders alertmanager.yml as the native stack does (secrets and templates to local
    /// paths), with every secret URL pointing at the sink, and starts it.
    fn start(sink: &str) -> Result<Self> {
        let binary = e2e::cache().join("bin/alertmanager");
        if !binary.is_file() {
            bail!(
                "{} missing: run `deploy/native/stack.sh install`",
                binary.display()
            );
        }
        let dir = std::env::temp_dir().join(format!("alert-routing-{}", std::process::id()));
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets)?;
        for (name, path) in [
            ("discord_webhook_url", "/api/webhooks/0/alert-routing"),
            ("deadmans_switch_url", "/watchdog"),
            ("deadmans_switch_fail_url", "/watchdog/fail"),
        ] {
            std::fs::write(secrets.join(name), format!("{sink}{path}\n"))?;
        }
        let config = std::fs::read_to_string(e2e::root().join("alertmanager/alertmanager.yml"))?
            .replace("/run/secrets/", &format!("{}/", secrets.display()))
            .replace(
                "/etc/alertmanager/",
                &format!("{}/", e2e::root().join("alertmanager").display()),
            );
        let config_file = dir.join("alertmanager.yml");
        std::fs::write(&config_file, config)?;
        let port = free_port()?;
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("alertmanager.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

impl Alertmanager {
    /// The end of its log, to explain a failure.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("alertmanager.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("Alertmanager's log ends:\n{tail}")
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port nothing listens on now (the OS picks it; Alertmanager binds it right after).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
