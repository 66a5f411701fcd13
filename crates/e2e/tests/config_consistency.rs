//! The Compose file, the native stack and the Prometheus config must describe one stack:
//! pinned images at the versions the native stack builds, health checks everywhere, every
//! scrape target a Compose service, and the contract's ports.

use anyhow::{bail, Context, Result};
use kit::contract::ports;
use serde_yaml::Value;
use std::collections::HashSet;

fn read(path: &str) -> Result<String> {
    let full = e2e::root().join(path);
    std::fs::read_to_string(&full).with_context(|| format!("reading {}", full.display()))
}

fn compose() -> Result<Value> {
    compose_file("docker-compose.yml")
}

fn compose_file(path: &str) -> Result<Value> {
    let mut value: Value = serde_yaml::from_str(&read(path)?)?;
    value.apply_merge()?; // resolve the `<<: *service` merge keys as Compose does
    Ok(value)
}

/// The files that add services on top of the base file.
const OVERRIDES: [&str; 3] = [
    "deploy/offline/sink.yml",
    "deploy/offline/sim.yml",
    "deploy/vps/compose.yml",
];

/// `NAME="value"` from deploy/native/stack.sh.
fn stack_var(name: &str) -> Result<String> {
    let text = read("deploy/native/stack.sh")?;
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}=")))
        .with_context(|| format!("{name} in stack.sh"))?;
    Ok(line.split('"').nth(1).context("quoted value")?.to_string())
}

fn image(compose: &Value, service: &str) -> Result<String> {
    compose["services"][service]["image"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("image of {service}"))
}

#[test]
fn every_image_is_pinned_and_every_service_has_a_healthcheck() -> Result<()> {
    let compose = compose()?;
    let services = compose["services"].as_mapping().context("services")?;
    for (name, svc) in services {
        let name = name.as_str().unwrap_or_default();
        let image = svc["image"]
            .as_str()
            .with_context(|| format!("{name} has no image"))?;
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        if tag.is_empty() || tag == "latest" {
            bail!("{name}: image {image} is not pinned to a version");
        }
        // A one-shot job (restart "no") completes; services wait for it to, not for health.
        let one_shot = svc["restart"].as_str() == Some("no");
        if svc.get("healthcheck").is_none() && !one_shot {
            bail!("{name} has no healthcheck");
        }
    }
    Ok(())
}

#[test]
fn compose_versions_equal_the_native_stack_versions() -> Result<()> {
    let compose = compose()?;
    // Go module v0.3MM.P is Prometheus v3.MM.P.
    let module = stack_var("PROMETHEUS_MODULE_VERSION")?;
    let minor_patch = module
        .strip_prefix("v0.3")
        .context("module version form v0.3MM.P")?;
    let (minor, patch) = minor_patch.split_once('.').context("minor.patch")?;
    let minor: u32 = minor.parse()?;
    assert_eq!(
        image(&compose, "prometheus")?,
        format!("prom/prometheus:v3.{minor}.{patch}")
    );
    assert_eq!(
        image(&compose, "alertmanager")?,
        format!("prom/alertmanager:{}", stack_var("ALERTMANAGER_VERSION")?)
    );
    let jmx = stack_var("JMX_EXPORTER_VERSION")?;
    let agent = compose["services"]["kafka"]["environment"]["KAFKA_OPTS"]
        .as_str()
        .context("kafka's KAFKA_OPTS")?;
    assert!(
        agent.contains(&format!("jmx_prometheus_javaagent-{jmx}.jar")),
        "the JMX exporter agent in Compose is the native one, {jmx}: {agent}"
    );
    assert_eq!(
        image(&compose, "node-exporter")?,
        format!("prom/node-exporter:{}", stack_var("NODE_EXPORTER_VERSION")?)
    );
    let pom = read("deploy/kafka/pom.xml")?;
    let kafka = pom
        .split("<kafka.version>")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .context("kafka.version")?;
    assert_eq!(image(&compose, "kafka")?, format!("apache/kafka:{kafka}"));
    let caddy = format!(
        "caddy:{}-alpine",
        stack_var("CADDY_VERSION")?.trim_start_matches('v')
    );
    assert_eq!(
        image(&compose, "docker-proxy")?,
        caddy,
        "the Docker API proxy is the Caddy stack.sh builds"
    );
    let vps = compose_file("deploy/vps/compose.yml")?;
    assert_eq!(
        image(&vps, "caddy")?,
        caddy,
        "the VPS's Caddy is the one stack.sh builds"
    );
    Ok(())
}

#[test]
fn every_scrape_target_is_a_compose_service_on_its_contract_port() -> Result<()> {
    let mut files = vec![compose()?];
    for f in OVERRIDES {
        files.push(compose_file(f)?);
    }
    let prometheus: Value = serde_yaml::from_str(&read("prometheus/prometheus.yml")?)?;
    let services: HashSet<&str> = files
        .iter()
        .filter_map(|c| c["services"].as_mapping())
        .flat_map(|m| m.keys().filter_map(Value::as_str))
        .collect();
    let mut targets = Vec::new();
    for job in prometheus["scrape_configs"]
        .as_sequence()
        .context("scrape_configs")?
    {
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            targets.extend(
                sc["targets"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(String::from),
            );
        }
    }
    assert!(targets.len() >= 5, "too few targets: {targets:?}");
    for target in &targets {
        let (host, _) = target.split_once(':').context("host:port")?;
        assert!(
            services.contains(host),
            "scrape target {target} is not a Compose service"
        );
    }
    for (target, port) in [
        ("collector", ports::COLLECTOR),
        ("sync-verifier", ports::SYNC_VERIFIER),
        ("restart-watcher", ports::RESTART_WATCHER),
    ] {
        assert!(
            targets.contains(&format!("{target}:{port}")),
            "{target} must be scraped on {port}"
        );
        let listen = files[0]["services"][target]["environment"]["LISTEN_ADDR"]
            .as_str()
            .context("LISTEN_ADDR")?;
        assert_eq!(listen, format!("0.0.0.0:{port}"));
    }
    Ok(())
}

/// Every alert of DESIGN.md's contract.
const ALERTS: [&str; 16] = [
    "HighCpuUsage",
    "HighMemoryUsage",
    "HighErrorRate",
    "ServiceDown",
    "ServiceRestarted",
    "ServiceBackoffRestarting",
    "DataSyncLagging",
    "DataGapOpen",
    "DataMissingRecords",
    "DataSyncStalled",
    "BinanceRateLimitNearLimit",
    "BinanceRateLimited",
    "BinanceWebSocketDown",
    "KafkaConsumerLagHigh",
    "AlertDeliveryFailing",
    "Watchdog",
];

/// Metrics exported by the stack's own parts (Prometheus, node-exporter, cAdvisor, the
/// process collector), which the contract does not list.
const FOREIGN_PREFIXES: [&str; 10] = [
    "process_",
    "node_",
    "container_",
    "alertmanager_",
    "prometheus_",
    "go_",
    // Kafka's broker and JVM, through the JMX exporter agent (deploy/kafka/jmx-exporter.yml)
    "kafka_server_",
    "kafka_controller_",
    "kafka_log_",
    "jvm_",
];

/// Metric names in a PromQL expression: identifiers that are not functions, keywords,
/// label names or values, or durations.
pub fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 20] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "topk",
        "bottomk",
        "quantile",
        "stddev",
    ];
    let no_strings: String = expr
        .split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, s)| s)
        .collect::<Vec<_>>()
        .join("\"\"");
    let mut names = Vec::new();
    let mut depth_braces = 0;
    let chars: Vec<char> = no_strings.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            depth_braces += 1;
        }
        if c == '}' {
            depth_braces -= 1;
        }
        if (c.is_ascii_alphabetic() || c == '_')
            && (i == 0
                || !(chars[i - 1].is_ascii_alphanumeric()
                    || chars[i - 1] == '_'
                    || chars[i - 1] == '.'))
        {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace()).copied();
            let in_grouping = no_strings[..start].trim_end().ends_with(['(', ','])
                && no_strings[..start].rfind(['(']).is_some_and(|p| {
                    let before = no_strings[..p].trim_end();
                    [
                        "by",
                        "without",
                        "on",
                        "ignoring",
                        "group_left",
                        "group_right",
                    ]
                    .iter()
                    .any(|k| before.ends_with(k))
                });
            let is_duration = start > 0 && chars[start - 1].is_ascii_digit();
            if depth_braces == 0
                && next != Some('(')
                && !KEYWORDS.contains(&word.as_str())
                && !in_grouping
                && !is_duration
                && word != "x"
            {
                names.push(word);
            }
            continue;
        }
        i += 1;
    }
    names
}

fn is_known_metric(name: &str) -> bool {
    name == "up"
        || kit::contract::metrics::ALL.contains(&name)
        || FOREIGN_PREFIXES.iter().any(|p| name.starts_with(p))
        || [
            kit::contract::metrics::sim::WS_CONNECTIONS,
            kit::contract::metrics::sim::WS_SENT_TOTAL,
            kit::contract::metrics::sim::WS_DROPPED_TOTAL,
            kit::contract::metrics::sim::WS_DISCONNECTS_TOTAL,
            kit::contract::metrics::sim::REST_REQUESTS_TOTAL,
            kit::contract::metrics::sim::TRADES_TOTAL,
        ]
        .contains(&name)
        || ["_bucket", "_sum", "_count"].iter().any(|s| {
            name.strip_suffix(s)
                .is_some_and(|base| kit::contract::metrics::ALL.contains(&base))
        })
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"sum by (service) (rate(nghenhan_errors_total{kind="x"}[1m])) > 0.5 or label_replace(1 - avg(rate(node_cpu_seconds_total{mode="idle"}[1m])), "service", "host", "", "")"#,
    );
    assert_eq!(names, ["nghenhan_errors_total", "node_cpu_seconds_total"]);
    assert_eq!(
        metric_names(
            "max by (limit, interval) (binance_rate_limit_used / binance_rate_limit_max) > 0.8"
        ),
        ["binance_rate_limit_used", "binance_rate_limit_max"]
    );
    assert!(!is_known_metric("made_up_metric_total"));
}

#[test]
fn every_contract_alert_is_a_complete_rule_on_contract_metrics() -> Result<()> {
    let mut seen = HashSet::new();
    let dir = e2e::root().join("prometheus/rules");
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        let rules: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        for group in rules["groups"].as_sequence().context("groups")? {
            for rule in group["rules"].as_sequence().context("rules")? {
                let name = rule["alert"].as_str().context("alert name")?.to_string();
                let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
                assert!(
                    ["critical", "warning"].contains(&severity),
                    "{name}: severity {severity:?}"
                );
                for key in ["summary", "description", "runbook"] {
                    assert!(
                        rule["annotations"][key]
                            .as_str()
                            .is_some_and(|v| !v.is_empty()),
                        "{name}: no {key}"
                    );
                }
                let runbook = rule["annotations"]["runbook"].as_str().unwrap_or_default();
                assert!(
                    e2e::root().join(runbook).is_file(),
                    "{name}: runbook {runbook} missing"
                );
                for metric in metric_names(rule["expr"].as_str().context("expr")?) {
                    assert!(
                        is_known_metric(&metric),
                        "{name} uses {metric}, which is not in kit::contract"
                    );
                }
                seen.insert(name);
            }
        }
    }
    for alert in ALERTS {
        assert!(seen.contains(alert), "no rule for {alert}");
    }
    Ok(())
}

#[test]
fn every_dashboard_query_uses_contract_metrics() -> Result<()> {
    let queries = e2e::dashboard_queries()?;
    assert!(queries.len() >= 40, "{} queries", queries.len());
    let titles: HashSet<String> = queries.iter().map(|q| q.0.clone()).collect();
    for t in [
        "Overview",
        "Resources",
        "Errors",
        "Data sync",
        "Binance rate limits",
        "Restarts",
    ] {
        assert!(titles.iter().any(|x| x.ends_with(t)), "no {t} dashboard");
    }
    for (dash, panel, expr, _) in &queries {
        for metric in metric_names(&e2e::concrete(expr)) {
            assert!(
                is_known_metric(&metric) || metric == "ALERTS" || metric == "time",
                "{dash} / {panel}: {metric} is not in kit::contract"
            );
        }
    }
    Ok(())
}

/// Every `kind="..."` / `kind=~"..."` matcher in `text` (quotes possibly JSON-escaped).
fn kind_matchers(text: &str) -> Vec<(bool, String)> {
    let text = text.replace("\\\"", "\"");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("kind") {
        let after = &rest[i + 4..];
        rest = after;
        let (regex, after) = match (after.strip_prefix("=~\""), after.strip_prefix("=\"")) {
            (Some(a), _) => (true, a),
            (None, Some(a)) => (false, a),
            _ => continue,
        };
        if let Some(end) = after.find('"') {
            out.push((regex, after[..end].to_string()));
        }
    }
    out
}

/// Whether a kind matcher names only kinds that exist: an exact value must be one; each
/// alternative of a regex (a name, or a prefix followed by `.*`) must match at least one.
fn names_known_kinds(regex: bool, value: &str) -> bool {
    let kinds: Vec<&str> = kit::contract::ErrorKind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect();
    if !regex {
        return kinds.contains(&value);
    }
    value.split('|').all(|alt| match alt.strip_suffix(".*") {
        Some(prefix) => kinds.iter().any(|k| k.starts_with(prefix)),
        None => kinds.contains(&alt),
    })
}

#[test]
fn every_error_kind_in_rules_dashboards_and_the_drill_is_a_contract_kind() -> Result<()> {
    let mut files = Vec::new();
    for dir in ["prometheus/rules", "prometheus/tests", "grafana/dashboards"] {
        for entry in std::fs::read_dir(e2e::root().join(dir))? {
            files.push(format!("{dir}/{}", entry?.file_name().to_string_lossy()));
        }
    }
    files.push("crates/e2e/src/bin/drill.rs".to_string());
    let mut checked = 0;
    for f in &files {
        for (regex, value) in kind_matchers(&read(f)?) {
            assert!(
                names_known_kinds(regex, &value),
                "{f}: kind{}\"{value}\" names an error kind that kit::contract::ErrorKind lacks",
                if regex { "=~" } else { "=" }
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "too few kind matchers found ({checked}): is the scan broken?"
    );
    assert!(!names_known_kinds(false, "ws_malformd"), "a typo must fail");
    assert!(
        !names_known_kinds(true, "bad_.*|no_such_kind"),
        "each alternative counts"
    );
    Ok(())
}

/// Every task of the three services runs under kit's supervisor (`Service::spawn`, which
/// stops the service when a task fails): no bare `tokio::spawn` in their code outside tests.
#[test]
fn the_services_spawn_no_task_outside_the_supervisor() -> Result<()> {
    let mut checked = 0;
    for krate in ["collector", "sync-verifier", "restart-watcher"] {
        for path in rust_files(&e2e::root().join("crates").join(krate).join("src"))? {
            let text = std::fs::read_to_string(&path)?;
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            assert!(
                !code.contains("tokio::spawn(") && !code.contains("task::spawn("),
                "{}: a task outside kit's supervisor",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} files read: is the path right?"
    );
    Ok(())
}

fn rust_files(dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            out.extend(rust_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(out)
}
