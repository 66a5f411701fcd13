//! The Compose files as the real Compose loader resolves them (`docker-compose config
//! --format json`, built from the Go module by `stack.sh install`; no engine needed), for
//! each combination that runs: `make up` (base), with the offline overrides, and the VPS
//! profile. What must hold is what an operator of a VPS would check by hand: nothing public
//! but Caddy's 80/443, networks that keep the UI away from the data and the Docker API
//! away from everything but restart-watcher, no password in the files, limits and rotated
//! logs everywhere, and every path an override names resolving to a file that exists.

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::Command;

const VPS_ENV: [(&str, &str); 3] = [
    ("SITE_ADDRESS", "https://monitor.example.com"),
    ("SITE_HOST", "monitor.example.com"),
    ("GRAFANA_URL", "https://monitor.example.com/"),
];

/// Variables a developer's shell might hold that would change what the files resolve to.
const CLEARED: [&str; 10] = [
    "SITE_ADDRESS",
    "SITE_HOST",
    "SECRETS_DIR",
    "GRAFANA_URL",
    "PROMETHEUS_URL",
    "ALERTMANAGER_URL",
    "TLS_MODE",
    "ADMIN_ACCESS",
    "COMPOSE_FILE",
    "COMPOSE_PROFILES",
];

fn compose(files: &[&str], env: &[(&str, &str)]) -> Result<std::process::Output> {
    let bin = e2e::cache().join("bin/docker-compose");
    let mut cmd = Command::new(&bin);
    cmd.current_dir(e2e::root())
        .arg("--project-directory")
        .arg(e2e::root());
    for f in files {
        cmd.args(["-f", f]);
    }
    for k in CLEARED {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied())
        .args(["config", "--format", "json"]);
    cmd.output().with_context(|| {
        format!(
            "{} (deploy/native/stack.sh install builds it)",
            bin.display()
        )
    })
}

fn config(files: &[&str], env: &[(&str, &str)]) -> Result<Value> {
    let out = compose(files, env)?;
    ensure!(
        out.status.success(),
        "docker-compose {files:?} config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn services(c: &Value) -> Result<Vec<(String, &Value)>> {
    Ok(c["services"]
        .as_object()
        .context("services")?
        .iter()
        .map(|(k, v)| (k.clone(), v))
        .collect())
}

fn names(c: &Value) -> Result<BTreeSet<String>> {
    Ok(services(c)?.into_iter().map(|(k, _)| k).collect())
}

fn networks_of(svc: &Value) -> BTreeSet<String> {
    svc["networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn members(c: &Value, network: &str) -> Result<BTreeSet<String>> {
    Ok(services(c)?
        .into_iter()
        .filter(|(_, s)| networks_of(s).contains(network))
        .map(|(k, _)| k)
        .collect())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// (service, host_ip, published) of every published port.
fn published(c: &Value) -> Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for (name, svc) in services(c)? {
        for p in svc["ports"].as_array().into_iter().flatten() {
            let ip = p["host_ip"].as_str().unwrap_or("0.0.0.0").to_string();
            let port = p["published"].as_str().unwrap_or_default().to_string();
            out.push((name.clone(), ip, port));
        }
    }
    Ok(out)
}

/// What holds in every combination.
fn secure_everywhere(c: &Value) -> Result<()> {
    let root = e2e::root().canonicalize()?;
    for (name, svc) in services(c)? {
        ensure!(
            svc["logging"]["driver"] == "json-file"
                && svc["logging"]["options"]["max-size"].is_string(),
            "{name}: logs not rotated"
        );
        ensure!(
            !svc["deploy"]["resources"]["limits"]["memory"].is_null(),
            "{name}: no memory limit"
        );
        ensure!(svc["privileged"] != true, "{name} is privileged");
        let cpus = svc["deploy"]["resources"]["limits"]["cpus"]
            .as_f64()
            .unwrap_or(0.0);
        ensure!(
            cpus > 0.0 && cpus <= 1.0,
            "{name}: cpus {cpus}: Docker refuses a limit above the host's CPUs (1 on small VPSes)"
        );
        for v in svc["volumes"].as_array().into_iter().flatten() {
            let source = v["source"].as_str().unwrap_or_default();
            ensure!(source != "/var/run", "{name} mounts all of /var/run");
            if v["type"] == "bind" && source.starts_with(root.to_str().unwrap_or("/nonexistent")) {
                ensure!(
                    std::path::Path::new(source).exists(),
                    "{name}: bind source {source} does not exist (a path relative to the wrong file?)"
                );
            }
        }
        if let Some(ctx) = svc["build"]["context"].as_str() {
            ensure!(
                std::path::Path::new(ctx).canonicalize()? == root,
                "{name}: build context {ctx} is not the repository"
            );
        }
        for (k, v) in svc["environment"].as_object().into_iter().flatten() {
            let v = v.as_str().unwrap_or_default();
            ensure!(
                k != "POSTGRES_PASSWORD",
                "{name}: a password in the environment"
            );
            ensure!(
                !v.contains(":nghenhan@"),
                "{name}: {k} carries a password: {v}"
            );
        }
        if name == "prometheus" {
            let cmd = svc["command"].to_string();
            ensure!(
                !cmd.contains("enable-lifecycle"),
                "Prometheus's lifecycle API is on"
            );
            ensure!(
                cmd.contains("retention.size"),
                "Prometheus kept by time only"
            );
        }
    }
    for (net, internal) in [("data", true), ("docker-api", true)] {
        ensure!(
            c["networks"][net]["internal"].as_bool() == Some(internal),
            "network {net} must be internal"
        );
    }
    ensure!(
        members(c, "docker-api")? == set(&["docker-proxy", "restart-watcher"]),
        "only restart-watcher may share the Docker API proxy's network: {:?}",
        members(c, "docker-api")?
    );
    let data = members(c, "data")?;
    for ui in [
        "grafana",
        "caddy",
        "alertmanager",
        "discord-sink",
        "exchange-sim",
    ] {
        ensure!(!data.contains(ui), "{ui} can reach Kafka and PostgreSQL");
    }
    let kafka_health = c["services"]["kafka"]["healthcheck"]["test"].to_string();
    ensure!(
        kafka_health.contains("KAFKA_OPTS= "),
        "Kafka's health check would load the JMX agent a second time and never pass: {kafka_health}"
    );
    let postgres = &c["services"]["postgres"]["environment"];
    ensure!(postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password");
    let verifier = &c["services"]["sync-verifier"];
    ensure!(verifier["environment"]["DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password");
    ensure!(verifier["secrets"]
        .to_string()
        .contains("postgres_password"));
    secrets_in(c, &root.join("secrets"))
}

fn secrets_in(c: &Value, dir: &std::path::Path) -> Result<()> {
    for (name, secret) in c["secrets"].as_object().context("secrets")? {
        let file = secret["file"].as_str().unwrap_or_default();
        ensure!(
            file == dir.join(name).to_str().unwrap_or_default(),
            "secret {name} read from {file}, not {}/{name}",
            dir.display()
        );
    }
    Ok(())
}

#[test]
#[ignore = "needs docker-compose in .cache/bin (make test builds it)"]
fn make_up_base_file_binds_loopback_only_and_splits_the_networks() -> Result<()> {
    let c = config(&["docker-compose.yml"], &[])?;
    secure_everywhere(&c)?;
    ensure!(
        names(&c)?
            == set(&[
                "kafka-jmx-agent",
                "kafka",
                "postgres",
                "collector",
                "sync-verifier",
                "restart-watcher",
                "docker-proxy",
                "prometheus",
                "alertmanager",
                "grafana",
                "node-exporter",
                "cadvisor",
            ]),
        "base services: {:?}",
        names(&c)?
    );
    for (svc, ip, port) in published(&c)? {
        ensure!(ip == "127.0.0.1", "{svc} publishes {port} on {ip}");
    }
    Ok(())
}

#[test]
#[ignore = "needs docker-compose in .cache/bin (make test builds it)"]
fn the_cluster_override_runs_three_brokers_and_the_services_replicate_on_them() -> Result<()> {
    let c = config(&["docker-compose.yml", "deploy/cluster/compose.yml"], &[])?;
    secure_everywhere(&c)?;
    let all = names(&c)?;
    for node in ["kafka", "kafka-2", "kafka-3"] {
        ensure!(all.contains(node), "{node} in {all:?}");
        let env = &c["services"][node]["environment"];
        ensure!(
            env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9094,2@kafka-2:9094,3@kafka-3:9094",
            "{node}: {env}"
        );
        ensure!(env["KAFKA_MIN_INSYNC_REPLICAS"] == "2", "{node}: {env}");
        ensure!(
            env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3",
            "{node}: {env}"
        );
        let id = env["KAFKA_NODE_ID"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let advertised = env["KAFKA_ADVERTISED_LISTENERS"]
            .as_str()
            .unwrap_or_default();
        ensure!(
            advertised == format!("PLAINTEXT://{node}:9092"),
            "{node} (id {id}): {advertised}"
        );
    }
    for svc in ["collector", "sync-verifier", "restart-watcher"] {
        let env = &c["services"][svc]["environment"];
        ensure!(
            env["KAFKA_BROKERS"] == "kafka:9092,kafka-2:9092,kafka-3:9092"
                && env["KAFKA_REPLICATION_FACTOR"] == "3"
                && env["KAFKA_MIN_INSYNC_REPLICAS"] == "2",
            "{svc}: {env}"
        );
        ensure!(
            env["RUST_LOG"] == "info",
            "{svc}: the base environment is kept: {env}"
        );
    }
    for (svc, ip, port) in published(&c)? {
        ensure!(ip == "127.0.0.1", "{svc} publishes {port} on {ip}");
    }
    Ok(())
}

#[test]
#[ignore = "needs docker-compose in .cache/bin (make test builds it)"]
fn offline_overrides_add_the_sink_and_the_simulator_and_point_the_collector_at_it() -> Result<()> {
    let c = config(
        &[
            "docker-compose.yml",
            "deploy/offline/sink.yml",
            "deploy/offline/sim.yml",
        ],
        &[],
    )?;
    secure_everywhere(&c)?;
    let all = names(&c)?;
    ensure!(all.contains("discord-sink") && all.contains("exchange-sim"));
    let env = &c["services"]["collector"]["environment"];
    ensure!(
        env["BINANCE_REST_URL"] == "http://exchange-sim:9180",
        "{env}"
    );
    ensure!(env["BINANCE_WS_URL"] == "ws://exchange-sim:9180", "{env}");
    ensure!(
        env["KAFKA_BROKERS"] == "kafka:9092",
        "the base environment is kept: {env}"
    );
    for (svc, ip, port) in published(&c)? {
        ensure!(ip == "127.0.0.1", "{svc} publishes {port} on {ip}");
    }
    let sink_only = config(&["docker-compose.yml", "deploy/offline/sink.yml"], &[])?;
    ensure!(
        sink_only["services"]["collector"]["environment"]["BINANCE_REST_URL"].is_null(),
        "without sim.yml the collector talks to Binance"
    );
    Ok(())
}

#[test]
#[ignore = "needs docker-compose in .cache/bin (make test builds it)"]
fn the_vps_profile_publishes_only_caddy_on_80_and_443() -> Result<()> {
    let files = ["docker-compose.yml", "deploy/vps/compose.yml"];
    let c = config(&files, &VPS_ENV)?;
    secure_everywhere(&c)?;
    let mut public = BTreeSet::new();
    for (svc, ip, port) in published(&c)? {
        if ip != "127.0.0.1" {
            public.insert(format!("{svc}:{port}"));
        }
    }
    ensure!(
        public == set(&["caddy:80", "caddy:443"]),
        "public ports: {public:?}"
    );
    let grafana = &c["services"]["grafana"];
    ensure!(
        grafana["ports"].as_array().is_none_or(|p| p.is_empty()),
        "Grafana's port is published"
    );
    ensure!(grafana["environment"]["GF_SERVER_ROOT_URL"] == "https://monitor.example.com/");
    ensure!(grafana["environment"]["GF_USERS_ALLOW_SIGN_UP"] == "false");
    ensure!(grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false");
    ensure!(networks_of(&c["services"]["caddy"]) == set(&["edge"]));
    ensure!(
        members(&c, "edge")? == set(&["caddy", "grafana", "prometheus", "alertmanager"]),
        "edge: {:?}",
        members(&c, "edge")?
    );
    let caddy_env = &c["services"]["caddy"]["environment"];
    ensure!(caddy_env["SITE_ADDRESS"] == "https://monitor.example.com");
    ensure!(
        caddy_env["ADMIN_ACCESS"] == "tunnel",
        "closed unless asked: {caddy_env}"
    );
    ensure!(
        caddy_env["SITE_HOST"] == "monitor.example.com",
        "default_sni: {caddy_env}"
    );
    // Tunnel mode needs no basic-auth secret (a missing secret file stops Caddy); auth
    // mode adds it with admin-auth.yml, as make deploy does.
    ensure!(
        c["services"]["caddy"]["secrets"].is_null(),
        "tunnel mode mounts a secret"
    );
    let auth_files = [
        "docker-compose.yml",
        "deploy/vps/compose.yml",
        "deploy/vps/admin-auth.yml",
    ];
    let mut env = VPS_ENV.to_vec();
    env.push(("SECRETS_DIR", "/srv/nghenhan/secrets"));
    let auth = config(&auth_files, &env)?;
    ensure!(
        auth["services"]["caddy"]["secrets"]
            .to_string()
            .contains("admin_basic_auth"),
        "auth mode: {}",
        auth["services"]["caddy"]
    );
    // make deploy's SECRETS_DIR: every secret from the VPS's one folder, never through a
    // release folder that a later deploy prunes.
    secrets_in(&auth, std::path::Path::new("/srv/nghenhan/secrets"))?;

    // Without the values make deploy writes, Compose refuses to start it.
    let out = compose(&files, &[])?;
    ensure!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("make deploy writes it"),
        "the VPS profile without SITE_ADDRESS: {out:?}"
    );
    Ok(())
}
