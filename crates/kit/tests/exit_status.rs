//! A service whose task fails ends its process with status 1, and the last log line names
//! the task and its error, as Docker (or the native supervisor) and an operator reading
//! the logs need. The test runs a real service in a child process: this test binary again,
//! with `KIT_EXIT_CHILD` set, running only `child_service_with_a_failing_task`.

use std::process::Command;
use std::time::{Duration, Instant};

const CHILD: &str = "KIT_EXIT_CHILD";

#[test]
fn a_failed_task_exits_the_process_with_status_1_naming_it() {
    for mode in ["error", "panic"] {
        let started = Instant::now();
        let out = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "child_service_with_a_failing_task",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, mode)
            .env("RUST_LOG", "info")
            .output()
            .expect("child runs");
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{mode}: exit status; output:\n{stdout}"
        );
        let last = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .expect("a JSON log line");
        let line: serde_json::Value = serde_json::from_str(last).expect("JSON");
        assert_eq!(line["level"], "ERROR", "{last}");
        let error = line["error"].as_str().unwrap_or_default();
        let expected = if mode == "error" {
            "task doomed failed: i/o: disk on fire"
        } else {
            "task doomed failed: panicked: index out of bounds"
        };
        assert!(error.contains(expected), "{mode}: last line {last}");
        eprintln!("{mode}: the child exited with status 1 {took:?} after it started (its task fails at 300 ms)");
        // "within a second" of the failure, with room for a loaded machine (typically 1.1 s).
        assert!(took < Duration::from_secs(4), "{mode}: took {took:?}");
    }
}

/// Runs only inside the child process (see above); a no-op in a normal test run.
#[test]
fn child_service_with_a_failing_task() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    kit::telemetry::init_logging("json");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let result = runtime.block_on(async move {
        #[derive(clap::Parser)]
        struct C {
            #[command(flatten)]
            kit: kit::config::KitConfig,
        }
        let vars = std::collections::HashMap::from([("KAFKA_BROKERS", "127.0.0.1:1")]);
        let c: C = kit::config::parse_from_map(&vars).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let token = tokio_util::sync::CancellationToken::new();
        let mut service =
            kit::app::Service::start("collector", &c.kit, &listener, token).expect("service");
        service.spawn("doomed", async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if mode == "panic" {
                panic!("index out of bounds");
            }
            Err(kit::KitError::Io(std::io::Error::other("disk on fire")))
        });
        let app = service.ops_app();
        service.run(listener, app).await
    });
    kit::app::exit("collector", result);
}
