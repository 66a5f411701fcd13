//! deploy/vps/Caddyfile, the VPS profile's front door, run with the real Caddy (built by
//! `stack.sh install`) in front of the test stack's real Prometheus and Alertmanager, the
//! way an operator would reach them: curl over HTTPS, the certificate checked against
//! Caddy's own root (`tls internal`, as on a VPS without a domain, whose site is its IP
//! address: clients send no SNI to an IP, and the TLS handshake must still pick the site's
//! certificate). Grafana (Compose only) is stood in for by a one-line HTTP server.
//!
//! `caddy validate` also runs in every mode (acme/internal × auth/tunnel), and a mistyped
//! ADMIN_ACCESS must not validate: the choice cannot fall open.

use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn caddy_bin() -> PathBuf {
    e2e::cache().join("bin/caddy")
}

fn caddyfile() -> PathBuf {
    e2e::root().join("deploy/vps/Caddyfile")
}

fn scratch(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("vps-caddy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `admin <bcrypt>` for the password, hashed by Caddy (password on stdin, as make vps-secrets does).
fn basic_auth_file(dir: &Path, password: &str) -> Result<PathBuf> {
    let mut child = Command::new(caddy_bin())
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("caddy in .cache/bin (deploy/native/stack.sh install builds it)")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let out = child.wait_with_output()?;
    let hash = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    ensure!(
        out.status.success() && hash.starts_with("$2"),
        "caddy hash-password: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("admin_basic_auth");
    std::fs::write(&file, format!("admin {hash}\n"))?;
    Ok(file)
}

fn caddy(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Command {
    let mut cmd = Command::new(caddy_bin());
    cmd.args(args)
        .args(["--adapter", "caddyfile", "--config"])
        .arg(caddyfile())
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

#[test]
#[ignore = "needs Caddy in .cache/bin (make test builds it)"]
fn the_caddyfile_validates_in_every_mode_and_a_typo_does_not() -> Result<()> {
    let dir = scratch("validate")?;
    let auth = basic_auth_file(&dir, "validate-only")?;
    for (tls, site) in [("acme", "monitor.example.com"), ("internal", "203.0.113.7")] {
        for admin in ["auth", "tunnel", "open"] {
            let env = [
                ("SITE_ADDRESS", format!("https://{site}")),
                ("SITE_HOST", site.to_string()),
                ("TLS_MODE", tls.to_string()),
                ("ADMIN_ACCESS", admin.to_string()),
                ("ADMIN_BASIC_AUTH_FILE", auth.display().to_string()),
            ];
            let out = caddy(&dir, &env, &["validate"]).output()?;
            let valid = out.status.success();
            let expected = admin != "open";
            ensure!(
                valid == expected,
                "caddy validate TLS_MODE={tls} ADMIN_ACCESS={admin}: valid={valid}, expected {expected}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Grafana's stand-in: answers every request with Grafana's /api/health body.
fn grafana_stand_in() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = r#"{"database": "ok", "version": "stand-in"}"#;
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(port)
}

struct Front {
    child: Child,
    https: u16,
    http: u16,
    root_crt: PathBuf,
}

impl Drop for Front {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The VPS's public address in these tests: a documentation IP (TEST-NET-3), reached by
/// curl's --connect-to on 127.0.0.1, so that the client sends no SNI, as for a real IP site.
const SITE_IP: &str = "203.0.113.7";

fn start_front(dir: &Path, admin: &str, auth: &Path, grafana: u16) -> Result<Front> {
    let (https, http, health) = (free_port()?, free_port()?, free_port()?);
    let env = [
        ("SITE_ADDRESS", format!("https://{SITE_IP}:{https}")),
        ("SITE_HOST", SITE_IP.to_string()),
        ("TLS_MODE", "internal".to_string()),
        ("ADMIN_ACCESS", admin.to_string()),
        ("ADMIN_BASIC_AUTH_FILE", auth.display().to_string()),
        ("HTTP_PORT", http.to_string()),
        ("HTTPS_PORT", https.to_string()),
        ("HEALTH_PORT", health.to_string()),
        ("PROMETHEUS_UPSTREAM", "127.0.0.1:9090".to_string()),
        ("ALERTMANAGER_UPSTREAM", "127.0.0.1:9093".to_string()),
        ("GRAFANA_UPSTREAM", format!("127.0.0.1:{grafana}")),
    ];
    let log = std::fs::File::create(dir.join(format!("caddy-{admin}.log")))?;
    let child = caddy(dir, &env, &["run"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("caddy run")?;
    let root_crt = dir.join("data/caddy/pki/authorities/local/root.crt");
    let mut front = Front {
        child,
        https,
        http,
        root_crt,
    };
    let start = Instant::now();
    loop {
        let healthy = curl(&[&format!("http://127.0.0.1:{health}/healthz")])
            .is_ok_and(|o| o.status.success());
        if healthy && front.root_crt.exists() {
            let site = curl(&front.https_args("/api/health", None));
            if site.is_ok_and(|o| o.status.success()) {
                return Ok(front);
            }
        }
        if let Some(status) = front.child.try_wait()? {
            let log = std::fs::read_to_string(dir.join(format!("caddy-{admin}.log")))?;
            bail!("caddy exited ({status}): {log}");
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "caddy did not serve https://{SITE_IP}:{https}/ in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Front {
    /// curl arguments for a path on the site, TLS checked against Caddy's root.
    fn https_args(&self, path: &str, user: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "--cacert".to_string(),
            self.root_crt.display().to_string(),
            "--connect-to".to_string(),
            format!("{SITE_IP}:{}:127.0.0.1:{}", self.https, self.https),
            format!("https://{SITE_IP}:{}{path}", self.https),
        ];
        if let Some(user) = user {
            args.extend(["-u".to_string(), user.to_string()]);
        }
        args
    }

    fn status(&self, path: &str, user: Option<&str>) -> Result<u16> {
        let mut args = self.https_args(path, user);
        args.extend(["-o", "/dev/null", "-w", "%{http_code}"].map(String::from));
        let out = curl(&args)?;
        ensure!(out.status.success(), "curl {path}: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    fn body(&self, path: &str, user: Option<&str>) -> Result<String> {
        let mut args = self.https_args(path, user);
        args.push("-f".to_string());
        let out = curl(&args)?;
        ensure!(out.status.success(), "curl {path}: {out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    }
}

fn curl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Result<Output> {
    Ok(Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()?)
}

#[test]
#[ignore = "needs the native stack and Caddy in .cache/bin (make test)"]
fn https_basic_auth_and_the_tunnel_choice_in_front_of_the_live_stack() -> Result<()> {
    let dir = scratch("run")?;
    let password = format!("pw-{}", std::process::id());
    let auth = basic_auth_file(&dir, &password)?;
    let grafana = grafana_stand_in()?;
    let admin = format!("admin:{password}");

    let front = start_front(&dir, "auth", &auth, grafana)?;
    // TLS: verified against Caddy's root; without it, curl refuses the certificate.
    let untrusted = curl(&[
        "--connect-to".to_string(),
        format!("{SITE_IP}:{}:127.0.0.1:{}", front.https, front.https),
        format!("https://{SITE_IP}:{}/", front.https),
    ])?;
    ensure!(
        untrusted.status.code() == Some(60),
        "without Caddy's root the certificate must not verify: {untrusted:?}"
    );
    // Grafana at /, with its own login (not Caddy's).
    ensure!(front
        .body("/api/health", None)?
        .contains(r#""database": "ok""#));
    // Prometheus and Alertmanager: 401 without or with a wrong password, 200 with it.
    for path in [
        "/prometheus/-/ready",
        "/alertmanager/-/ready",
        "/prometheus",
        "/alertmanager/api/v2/status",
    ] {
        ensure!(
            front.status(path, None)? == 401,
            "{path} without credentials"
        );
        ensure!(
            front.status(path, Some("admin:wrong"))? == 401,
            "{path} with a wrong password"
        );
    }
    ensure!(front.status("/prometheus/-/ready", Some(&admin))? == 200);
    ensure!(front.status("/alertmanager/-/ready", Some(&admin))? == 200);
    let targets = front.body("/prometheus/api/v1/targets", Some(&admin))?;
    ensure!(
        targets.contains(r#""health":"up""#),
        "the post-check's route: Prometheus's targets through Caddy: {targets:.300}"
    );
    let status = front.body("/alertmanager/api/v2/status", Some(&admin))?;
    ensure!(
        status.contains("versionInfo"),
        "Alertmanager's status: {status:.300}"
    );
    // Port 80 only redirects to HTTPS; responses carry HSTS and no Server header.
    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--connect-to",
        &format!("{SITE_IP}:{}:127.0.0.1:{}", front.http, front.http),
        &format!("http://{SITE_IP}:{}/prometheus/", front.http),
    ])?;
    let redirect = String::from_utf8_lossy(&redirect.stdout).to_string();
    ensure!(
        redirect.starts_with(&format!("308 https://{SITE_IP}")),
        "plain HTTP must redirect to HTTPS: {redirect}"
    );
    let mut head = front.https_args("/api/health", None);
    head.push("-I".to_string());
    let headers = String::from_utf8_lossy(&curl(&head)?.stdout).to_lowercase();
    ensure!(headers.contains("strict-transport-security"), "{headers}");
    ensure!(!headers.contains("\nserver:"), "{headers}");
    drop(front);

    // ADMIN_ACCESS=tunnel: not served at all, whatever the credentials; Grafana still is.
    let front = start_front(&dir, "tunnel", &auth, grafana)?;
    for path in [
        "/prometheus/-/ready",
        "/alertmanager/-/ready",
        "/prometheus",
    ] {
        ensure!(
            front.status(path, Some(&admin))? == 404,
            "{path} in tunnel mode"
        );
    }
    ensure!(front.status("/api/health", None)? == 200);
    drop(front);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
