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
    let mut value: Value = serde_yaml::from_str(&read("docker-compose.yml")?)?;
    value.apply_merge()?; // resolve the `<<: *service` merge keys as Compose does
    Ok(value)
}

/// `NAME="value"` from deploy/native/stack.sh.
fn stack_var(name: &str) -> Result<String> {
    let text = read("deploy/native/stack.sh")?;
    let line = text.lines().find(|l| l.starts_with(&format!("{name}="))).with_context(|| format!("{name} in stack.sh"))?;
    Ok(line.split('"').nth(1).context("quoted value")?.to_string())
}

fn image(compose: &Value, service: &str) -> Result<String> {
    compose["services"][service]["image"].as_str().map(String::from).with_context(|| format!("image of {service}"))
}

#[test]
fn every_image_is_pinned_and_every_service_has_a_healthcheck() -> Result<()> {
    let compose = compose()?;
    let services = compose["services"].as_mapping().context("services")?;
    for (name, svc) in services {
        let name = name.as_str().unwrap_or_default();
        let image = svc["image"].as_str().with_context(|| format!("{name} has no image"))?;
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        if tag.is_empty() || tag == "latest" {
            bail!("{name}: image {image} is not pinned to a version");
        }
        if svc.get("healthcheck").is_none() {
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
    let minor_patch = module.strip_prefix("v0.3").context("module version form v0.3MM.P")?;
    let (minor, patch) = minor_patch.split_once('.').context("minor.patch")?;
    let minor: u32 = minor.parse()?;
    assert_eq!(image(&compose, "prometheus")?, format!("prom/prometheus:v3.{minor}.{patch}"));
    assert_eq!(image(&compose, "alertmanager")?, format!("prom/alertmanager:{}", stack_var("ALERTMANAGER_VERSION")?));
    assert_eq!(image(&compose, "node-exporter")?, format!("prom/node-exporter:{}", stack_var("NODE_EXPORTER_VERSION")?));
    let pom = read("deploy/kafka/pom.xml")?;
    let kafka = pom.split("<kafka.version>").nth(1).and_then(|s| s.split('<').next()).context("kafka.version")?;
    assert_eq!(image(&compose, "kafka")?, format!("apache/kafka:{kafka}"));
    Ok(())
}

#[test]
fn every_scrape_target_is_a_compose_service_on_its_contract_port() -> Result<()> {
    let compose = compose()?;
    let prometheus: Value = serde_yaml::from_str(&read("prometheus/prometheus.yml")?)?;
    let services: HashSet<&str> = compose["services"].as_mapping().context("services")?.keys().filter_map(Value::as_str).collect();
    let mut targets = Vec::new();
    for job in prometheus["scrape_configs"].as_sequence().context("scrape_configs")? {
        for sc in job["static_configs"].as_sequence().into_iter().flatten() {
            targets.extend(sc["targets"].as_sequence().into_iter().flatten().filter_map(Value::as_str).map(String::from));
        }
    }
    assert!(targets.len() >= 5, "too few targets: {targets:?}");
    for target in &targets {
        let (host, _) = target.split_once(':').context("host:port")?;
        assert!(services.contains(host), "scrape target {target} is not a Compose service");
    }
    for (target, port) in [("collector", ports::COLLECTOR), ("sync-verifier", ports::SYNC_VERIFIER), ("restart-watcher", ports::RESTART_WATCHER)] {
        assert!(targets.contains(&format!("{target}:{port}")), "{target} must be scraped on {port}");
        let listen = compose["services"][target]["environment"]["LISTEN_ADDR"].as_str().context("LISTEN_ADDR")?;
        assert_eq!(listen, format!("0.0.0.0:{port}"));
    }
    Ok(())
}
