//! `make drill`: on the running native stack (`make up BINANCE=sim`), cause the fault behind
//! every contract alert a fault can cause, and time what reaches the Discord sink through
//! the real Prometheus and Alertmanager: seconds from the fault to the FIRING message, from
//! the fault's end to the RESOLVED one, whether the message names what it should, and
//! whether Discord would accept the payload. Prints a table; exits 1 when a row failed.
//!
//! It changes the running stack (kills and holds services, faults in exchange-sim) and puts
//! everything back after each row. Alerts it cannot cause are listed with the reason.

use anyhow::{bail, Context, Result};
use discord_sink::server::Recorded;
use e2e::{
    eventually, hold, kill, prom_query, sample_value, sink_messages, stack, watcher_metric,
    ALERTMANAGER,
};
use serde_json::{json, Value};
use std::future::Future;
use std::time::{Duration, Instant};

const SIM: &str = "http://127.0.0.1:9180";
const SINK: &str = "http://127.0.0.1:9199";
/// Longest wait for a FIRING message after the fault starts.
const FIRE_LIMIT: Duration = Duration::from_secs(240);
/// Longest wait for the RESOLVED message after the fault ends (warning groups flush every
/// 5 minutes).
const RESOLVE_LIMIT: Duration = Duration::from_secs(420);

/// One alert of one fault, as measured.
struct Row {
    alert: &'static str,
    fault: &'static str,
    severity: String,
    fired: Option<f64>,
    resolved: Option<f64>,
    labels_ok: bool,
    accepted: bool,
    note: String,
}

/// What a row expects of its alert's message.
struct Expect {
    alert: &'static str,
    /// Text the title or the description must hold (the service, the symbol, ...).
    names: &'static [&'static str],
}

fn now_ms() -> i64 {
    kit::time::now_ms()
}

struct Drill {
    client: reqwest::Client,
    rows: Vec<Row>,
    pending: Vec<Pending>,
}

/// Sends a control command to the stack's exchange-sim.
async fn sim(client: &reqwest::Client, op: &str, body: Value) -> Result<()> {
    client
        .post(format!("{SIM}/sim/{op}"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

impl Drill {
    /// Waits until Alertmanager holds no active `alert`, so a new one is a new notification.
    async fn settle(&self, alert: &str) -> Result<()> {
        let url = format!("{ALERTMANAGER}/api/v2/alerts?filter=alertname=%22{alert}%22");
        let start = Instant::now();
        loop {
            let active: Vec<Value> = self.client.get(&url).send().await?.json().await?;
            if active.is_empty() {
                return Ok(());
            }
            if start.elapsed() > RESOLVE_LIMIT {
                bail!("{alert} is still active in Alertmanager after {RESOLVE_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// The first message about `alert` in `state` ("FIRING"/"RESOLVED") received after
    /// `since_ms` and delivered (a post the sink refused with 429 on the drill's order is a
    /// retry, not the message), polled at least once and until `limit`.
    async fn message(
        &self,
        alert: &str,
        state: &str,
        since_ms: i64,
        limit: Duration,
    ) -> Result<Option<Recorded>> {
        let start = Instant::now();
        loop {
            let found = sink_messages(&self.client).await?.into_iter().find(|m| {
                let title = m.body["embeds"][0]["title"].as_str().unwrap_or_default();
                m.received_at_ms >= since_ms
                    && m.status != 429
                    && title.contains(state)
                    && title.contains(&format!("] {alert}"))
            });
            if found.is_some() || start.elapsed() >= limit {
                return Ok(found);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Causes a fault, times each expected alert's FIRING message and ends the fault; the
    /// RESOLVED messages are awaited together at the end ([`Drill::finish`]), so a warning's
    /// 5-minute group interval does not hold up the next fault.
    async fn row<C, E>(
        &mut self,
        fault: &'static str,
        expects: &[Expect],
        cause: C,
        end: E,
    ) -> Result<()>
    where
        C: Future<Output = Result<()>>,
        E: Future<Output = Result<()>>,
    {
        for e in expects {
            self.settle(e.alert).await?;
        }
        println!("drill: {fault} …");
        let started = now_ms();
        let caused = cause
            .await
            .err()
            .map(|e| format!("fault not caused: {e:#}"));
        let mut fired = Vec::new();
        for e in expects {
            let msg = match &caused {
                None => self.message(e.alert, "FIRING", started, FIRE_LIMIT).await?,
                Some(_) => None,
            };
            fired.push(msg);
        }
        let ended_at = now_ms();
        let ended = end.await.err().map(|e| format!("fault not ended: {e:#}"));
        for (e, fired) in expects.iter().zip(fired) {
            self.pending.push(Pending {
                alert: e.alert,
                names: e.names,
                fault,
                problem: caused.clone().or_else(|| ended.clone()),
                started,
                ended_at,
                fired,
            });
        }
        Ok(())
    }

    /// Waits for the RESOLVED message of every row that fired, then measures the rows.
    async fn finish(&mut self) -> Result<()> {
        println!("drill: waiting for the RESOLVED messages …");
        for p in std::mem::take(&mut self.pending) {
            let left = Duration::from_millis(
                u64::try_from((p.ended_at + RESOLVE_LIMIT.as_millis() as i64) - now_ms())
                    .unwrap_or(0),
            );
            let resolved = match &p.fired {
                Some(_) => self.message(p.alert, "RESOLVED", p.ended_at, left).await?,
                None => None,
            };
            self.rows.push(measure(p, resolved));
        }
        Ok(())
    }
}

/// A row whose fault has ended, waiting for its RESOLVED message.
struct Pending {
    alert: &'static str,
    names: &'static [&'static str],
    fault: &'static str,
    problem: Option<String>,
    started: i64,
    ended_at: i64,
    fired: Option<Recorded>,
}

fn measure(p: Pending, resolved: Option<Recorded>) -> Row {
    let secs = |m: &Recorded, from: i64| (m.received_at_ms - from) as f64 / 1000.0;
    let text = |m: &Recorded| {
        let embed = &m.body["embeds"][0];
        format!(
            "{} {}",
            embed["title"].as_str().unwrap_or_default(),
            embed["description"].as_str().unwrap_or_default()
        )
    };
    let severity = p
        .fired
        .as_ref()
        .map(|m| {
            let t = text(m);
            ["critical", "warning"]
                .into_iter()
                .find(|s| t.contains(&format!("severity: {s}")))
                .unwrap_or("?")
                .to_string()
        })
        .unwrap_or_default();
    let mut note = p.problem.unwrap_or_default();
    let labels_ok = p
        .fired
        .as_ref()
        .is_some_and(|m| p.names.iter().all(|n| text(m).contains(n)));
    let accepted = [&p.fired, &resolved]
        .into_iter()
        .flatten()
        .all(|m| m.status == 204 && m.errors.is_empty());
    if let Some(m) = p.fired.as_ref().filter(|m| !m.errors.is_empty()) {
        note = format!("Discord would refuse: {:?}", m.errors);
    }
    Row {
        alert: p.alert,
        fault: p.fault,
        severity,
        fired: p.fired.as_ref().map(|m| secs(m, p.started)),
        resolved: resolved.as_ref().map(|m| secs(m, p.ended_at)),
        labels_ok,
        accepted: accepted && p.fired.is_some(),
        note,
    }
}

/// Waits until `query` has a sample with a value satisfying `ok`.
async fn until_prom(client: &reqwest::Client, query: &str, ok: fn(f64) -> bool) -> Result<()> {
    let start = Instant::now();
    loop {
        let samples = prom_query(client, query).await?;
        if samples.iter().filter_map(sample_value).any(ok) {
            return Ok(());
        }
        if start.elapsed() > FIRE_LIMIT {
            bail!("{query}: no sample as wanted within {FIRE_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Kills the collector four times, each as soon as restart-watcher has seen the new
/// instance: a crash loop under the supervisor's Docker-like back-off.
async fn crash_loop(client: &reqwest::Client) -> Result<()> {
    for _ in 0..4 {
        // The supervisor may still be in its restart delay: kill the next instance.
        let start = Instant::now();
        while client
            .get("http://127.0.0.1:9101/healthz")
            .send()
            .await
            .is_err()
        {
            if start.elapsed() > Duration::from_secs(90) {
                bail!("the collector did not come back within 90 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = r#"service_start_time_seconds{service="collector"}"#;
        let before = watcher_metric(client, started).await?;
        kill("collector", "KILL")?;
        eventually(
            "restart-watcher sees a new collector",
            Duration::from_secs(90),
            || async { Ok((watcher_metric(client, started).await? > before).then_some(())) },
        )
        .await?;
    }
    Ok(())
}

/// Spends request weight at the simulator as another client on our IP would, until the
/// exchange-reported used weight reaches `share` of the limit (exchangeInfo, weight 20),
/// then reads it with /api/v3/ping (weight 1) until it has stayed there for `hold`.
async fn burn_weight(client: &reqwest::Client, share: f64, hold: Duration) -> Result<()> {
    const LIMIT: f64 = 6000.0; // the simulator's default REQUEST_WEIGHT per minute
    let start = Instant::now();
    let mut above_since: Option<Instant> = None;
    let mut used = 0.0;
    while start.elapsed() < hold + Duration::from_secs(120) {
        let path = if used / LIMIT < share {
            "exchangeInfo"
        } else {
            "ping"
        };
        let r = client.get(format!("{SIM}/api/v3/{path}")).send().await?;
        used = r
            .headers()
            .get("x-mbx-used-weight-1m")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0.0);
        if used / LIMIT >= share {
            let since = *above_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= hold {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        } else {
            above_since = None;
        }
    }
    bail!("the used weight did not stay at {share} of the limit")
}

fn print(rows: &[Row], cannot: &[(&str, &str)]) {
    println!(
        "\n{:<26} {:<46} {:>8} {:>6} {:>9} {:>7} {:>8}  note",
        "alert", "fault", "severity", "fire s", "resolve s", "labels", "accepted"
    );
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |s| format!("{s:.1}"));
    for r in rows {
        println!(
            "{:<26} {:<46} {:>8} {:>6} {:>9} {:>7} {:>8}  {}",
            r.alert,
            r.fault,
            r.severity,
            opt(r.fired),
            opt(r.resolved),
            if r.labels_ok { "ok" } else { "WRONG" },
            if r.accepted { "yes" } else { "NO" },
            r.note
        );
    }
    for (alert, why) in cannot {
        println!("{alert:<26} cannot be caused here: {why}");
    }
    let mut critical: Vec<f64> = rows
        .iter()
        .filter(|r| r.severity == "critical")
        .filter_map(|r| r.fired)
        .collect();
    critical.sort_by(f64::total_cmp);
    if let (Some(worst), false) = (critical.last(), critical.is_empty()) {
        let median = critical[critical.len() / 2];
        println!(
            "\ncritical alerts: {} rows, fault to Discord median {median:.1} s, worst {worst:.1} s",
            critical.len()
        );
    }
}

const CANNOT: &[(&str, &str)] = &[
    (
        "HighCpuUsage",
        "needs the host's CPU above its threshold for minutes; a drill would starve the stack it measures",
    ),
    (
        "HighMemoryUsage",
        "needs the host's memory near full; on a shared machine that endangers more than the stack",
    ),
    (
        "DiskSpaceLow / DiskFillingUp",
        "filling a real disk is destructive; promtool rule tests cover them",
    ),
    (
        "Watchdog",
        "always firing by design; the drill checks that its pings reach the dead man's switch",
    ),
];

/// AlertDeliveryFailing cannot be timed at Discord (Discord is what fails): Discord answers
/// 429 to every post while something is to be sent, and the row times the alert's arrival
/// at the dead man's switch's failure endpoint, then its RESOLVED at Discord once Discord
/// answers again.
async fn delivery_failing(d: &mut Drill, c: &reqwest::Client) -> Result<()> {
    const ALERT: &str = "AlertDeliveryFailing";
    d.settle(ALERT).await?;
    println!("drill: Discord answers 429 to every post …");
    let fails = |body: Value| body["fails"].as_u64().unwrap_or(0);
    let sink_state = || watchdog(c);
    let before = fails(sink_state().await?);
    let mode = |body: Value| async move {
        c.post(format!("{SINK}/sink/mode"))
            .json(&body)
            .send()
            .await?
            .error_for_status()?;
        anyhow::Ok(())
    };
    let started = now_ms();
    mode(json!({"status": 429, "count": 100_000, "retry_after": 0.1})).await?;
    kill("restart-watcher", "KILL")?; // something to notify: ServiceRestarted
    let deadline = Instant::now() + FIRE_LIMIT;
    let mut fired = None;
    while Instant::now() < deadline {
        let state = sink_state().await?;
        if fails(state.clone()) > before {
            let text = state["last_fail"].to_string();
            fired = Some(((now_ms() - started) as f64 / 1000.0, text.contains(ALERT)));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ended_at = now_ms();
    mode(json!({"count": 0})).await?;
    let resolved = match fired {
        Some(_) => {
            d.message(ALERT, "RESOLVED", ended_at, RESOLVE_LIMIT)
                .await?
        }
        None => None,
    };
    d.rows.push(Row {
        alert: ALERT,
        fault: "Discord answers 429 to every post",
        severity: "warning".into(),
        fired: fired.map(|(s, _)| s),
        resolved: resolved
            .as_ref()
            .map(|m| (m.received_at_ms - ended_at) as f64 / 1000.0),
        labels_ok: fired.is_some_and(|(_, named)| named),
        accepted: resolved
            .as_ref()
            .is_some_and(|m| m.status == 204 && m.errors.is_empty()),
        note: "fired: at the dead man's switch's /fail endpoint; resolved: at Discord".into(),
    });
    Ok(())
}

/// What the dead man's switch at the sink has received (pings, failure posts).
async fn watchdog(client: &reqwest::Client) -> Result<Value> {
    Ok(client
        .get(format!("{SINK}/sink/watchdog"))
        .send()
        .await?
        .json()
        .await?)
}

/// `soak MINUTES`: the running stack, left alone, must send Discord nothing and keep
/// pinging the dead man's switch; any alert that fires meanwhile fails it (pending ones,
/// which their `for` keeps from firing, are listed).
async fn soak(client: &reqwest::Client, minutes: u64) -> Result<()> {
    let start_ms = now_ms();
    let pings_before = watchdog_pings(client).await?;
    let mut seen: Vec<String> = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    while Instant::now() < end {
        for alert in prom_query(client, "ALERTS").await? {
            let name = alert["metric"]["alertname"].as_str().unwrap_or_default();
            let firing = alert["metric"]["alertstate"] == "firing";
            let labels = alert["metric"].to_string();
            if name != "Watchdog" && !seen.contains(&labels) && !pending.contains(&labels) {
                println!("soak: {labels}");
                if firing {
                    seen.push(labels);
                } else {
                    pending.push(labels);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let sent: Vec<String> = sink_messages(client)
        .await?
        .into_iter()
        .filter(|m| m.received_at_ms >= start_ms)
        .map(|m| {
            m.body["embeds"][0]["title"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let pings = watchdog_pings(client).await? - pings_before;
    println!(
        "soak: {minutes} min, {} alerts fired besides Watchdog ({} were pending only), {} Discord messages, {pings} Watchdog pings",
        seen.len(),
        pending.len(),
        sent.len()
    );
    if !seen.is_empty() || !sent.is_empty() {
        bail!("the quiet stack alerted: {seen:?} {sent:?}");
    }
    if pings < minutes / 3 {
        bail!("the dead man's switch got {pings} pings in {minutes} min");
    }
    Ok(())
}

async fn watchdog_pings(client: &reqwest::Client) -> Result<u64> {
    watchdog(client).await?["pings"].as_u64().context("pings")
}

#[tokio::main]
async fn main() -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    prom_query(&client, "up")
        .await
        .context("Prometheus does not answer: start the stack with `make up BINANCE=sim`")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("soak") {
        let minutes = args
            .get(1)
            .map_or(Ok(30), |m| m.parse())
            .context("soak MINUTES")?;
        return soak(&client, minutes).await;
    }
    println!(
        "drill: the dead man's switch at the sink: {}",
        watchdog(&client).await?
    );
    let mut d = Drill {
        client: client.clone(),
        rows: Vec::new(),
        pending: Vec::new(),
    };
    let c = &client;

    d.row(
        "collector killed and held down",
        &[Expect {
            alert: "ServiceDown",
            names: &["collector"],
        }],
        async {
            hold("collector")?;
            kill("collector", "KILL")
        },
        async { stack(&["start", "collector"]) },
    )
    .await?;
    d.row(
        "collector killed once (-9), restarted",
        &[Expect {
            alert: "ServiceRestarted",
            names: &["collector"],
        }],
        async { kill("collector", "KILL") },
        async { Ok(()) },
    )
    .await?;
    d.row(
        "collector crash loop (4 kills)",
        &[Expect {
            alert: "ServiceBackoffRestarting",
            names: &["collector"],
        }],
        crash_loop(c),
        async { Ok(()) },
    )
    .await?;
    d.row(
        "429 storm from the exchange for 30 s",
        &[Expect {
            alert: "BinanceRateLimited",
            names: &["429"],
        }],
        sim(
            c,
            "ratelimit",
            json!({"status": 429, "duration_ms": 30_000}),
        ),
        async { Ok(()) },
    )
    .await?;
    d.row(
        "another client on our IP uses > 90 % weight",
        &[Expect {
            alert: "BinanceRateLimitNearLimit",
            names: &["request_weight"],
        }],
        burn_weight(c, 0.92, Duration::from_secs(20)),
        async { Ok(()) },
    )
    .await?;
    d.row(
        "exchange streams unreachable (503)",
        &[Expect {
            alert: "BinanceWebSocketDown",
            names: &["aggTrade"],
        }],
        async {
            sim(c, "ws-outage", json!({"duration_ms": 240_000})).await?;
            until_prom(c, "min(binance_ws_connected)", |v| v == 0.0).await
        },
        sim(c, "ws-outage", json!({"duration_ms": 0})),
    )
    .await?;
    // A few trades dropped: the gap opens with the next trade after them.
    d.row(
        "5 trades dropped, back-fill banned (418)",
        &[Expect {
            alert: "DataGapOpen",
            names: &["BTCUSDT"],
        }],
        async {
            sim(
                c,
                "ratelimit",
                json!({"status": 418, "duration_ms": 240_000}),
            )
            .await?;
            sim(
                c,
                "drop",
                json!({"symbol": "BTCUSDT", "stream": "aggTrade", "count": 5}),
            )
            .await
        },
        sim(c, "reset", json!({})),
    )
    .await?;
    d.row(
        "ETHUSDT trades withheld 60 s, back-fill banned",
        &[Expect {
            alert: "DataMissingRecords",
            names: &["ETHUSDT"],
        }],
        async {
            sim(
                c,
                "ratelimit",
                json!({"status": 418, "duration_ms": 300_000}),
            )
            .await?;
            let body = json!({"symbol": "ETHUSDT", "stream": "aggTrade", "duration_ms": 60_000});
            sim(c, "drop", body).await
        },
        sim(c, "reset", json!({})),
    )
    .await?;
    let garbage = async {
        // Only this fault's message counts: an earlier drill's HighErrorRate may still be
        // in the sink (it stopped the garbage after one burst, and the row never fired).
        let since = now_ms();
        for _ in 0..120 {
            sim(c, "garbage", json!({})).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let fired = sink_messages(c).await?.iter().any(|m| {
                m.received_at_ms >= since
                    && m.body["embeds"][0]["title"]
                        .as_str()
                        .is_some_and(|t| t.contains("FIRING") && t.contains("] HighErrorRate"))
            });
            if fired {
                return Ok(());
            }
        }
        Ok(())
    };
    d.row(
        "malformed frames, 2 a second",
        &[Expect {
            alert: "HighErrorRate",
            names: &["collector"],
        }],
        garbage,
        async { Ok(()) },
    )
    .await?;
    d.row(
        "sync-verifier frozen (SIGSTOP) while trades flow",
        &[Expect {
            alert: "KafkaConsumerLagHigh",
            names: &["sync-verifier"],
        }],
        async {
            sim(c, "rate", json!({"trades_per_sec": 400})).await?;
            kill("sync-verifier", "STOP")
        },
        async {
            kill("sync-verifier", "CONT")?;
            sim(c, "rate", json!({"trades_per_sec": 5})).await
        },
    )
    .await?;
    d.row(
        "ETHUSDT trades stop",
        &[Expect {
            alert: "DataSyncLagging",
            names: &["ETHUSDT"],
        }],
        sim(c, "rate", json!({"symbol": "ETHUSDT", "trades_per_sec": 0})),
        sim(c, "rate", json!({"symbol": "ETHUSDT", "trades_per_sec": 5})),
    )
    .await?;
    d.row(
        "node-exporter stopped",
        &[Expect {
            alert: "TargetDown",
            names: &["node-exporter"],
        }],
        async { stack(&["stop", "node-exporter"]) },
        async { stack(&["start", "node-exporter"]) },
    )
    .await?;
    d.row(
        "PostgreSQL stopped",
        &[Expect {
            alert: "PostgresDown",
            names: &["postgres"],
        }],
        async { stack(&["stop", "postgres"]) },
        async { stack(&["start", "postgres"]) },
    )
    .await?;
    delivery_failing(&mut d, c).await?;
    d.finish().await?;
    println!(
        "drill: the dead man's switch at the sink: {}",
        watchdog(&client).await?
    );
    print(&d.rows, CANNOT);
    let failed = d
        .rows
        .iter()
        .filter(|r| r.fired.is_none() || r.resolved.is_none() || !r.labels_ok || !r.accepted)
        .count();
    if failed > 0 {
        bail!("{failed} rows did not fire, resolve, name their labels or pass Discord's checks");
    }
    Ok(())
}
