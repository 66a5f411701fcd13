//! The frame every service runs in: telemetry, the Kafka context and producer, topic
//! creation, heartbeats, the ops HTTP server, supervision and graceful shutdown. A service
//! builds a [`Service`], spawns its own tasks on it, then calls [`Service::run`].
//!
//! Supervision follows two rules. Every task is tracked (mini-redis): nothing a service
//! runs is a bare `tokio::spawn` that could die unnoticed. A failed component stops the
//! service (vector): a task that returns an error or panics — or a lasting task that ends
//! at all — before shutdown cancels every other task, and [`Service::run`] returns
//! [`KitError::TaskFailed`] naming it, so the process exits non-zero ([`exit`]) and Docker
//! (or the native supervisor) restarts it, which restart-watcher then sees.

use crate::config::{KitConfig, ServiceConfig};
use crate::heartbeat::{self, Identity};
use crate::http::{self, Degraded, OpsApp};
use crate::kafka::{self, KafkaContext};
use crate::{KitError, Telemetry};
use futures::FutureExt;
use rdkafka::producer::FutureProducer;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long the other tasks get to stop after one failed (then they are aborted).
const FAILED_GRACE: Duration = Duration::from_secs(1);

/// How a tracked task ended.
struct Ended {
    name: &'static str,
    /// A lasting task must run until shutdown; a job may finish.
    lasting: bool,
    outcome: Result<(), String>,
}

/// A running service's shared parts.
pub struct Service {
    pub telemetry: Telemetry,
    pub kafka: KafkaContext,
    pub producer: FutureProducer<KafkaContext>,
    pub identity: Identity,
    pub shutdown: CancellationToken,
    pub config: KitConfig,
    /// Components working in a reduced mode (shown by `/readyz`, liveness unaffected).
    pub degraded: Degraded,
    tasks: JoinSet<Ended>,
}

impl Service {
    /// Sets up telemetry and Kafka, and starts heartbeats and topic creation; `listener`
    /// (the ops server's) names the replica.
    pub fn start(
        service: &'static str,
        config: &KitConfig,
        listener: &TcpListener,
        shutdown: CancellationToken,
    ) -> Result<Self, KitError> {
        let config = config.clone();
        kafka::check_replication(config.replication_factor, config.min_insync_replicas)?;
        let telemetry = Telemetry::new(service, env!("CARGO_PKG_VERSION"))?;
        let kafka = KafkaContext::new(&telemetry)?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let identity = Identity::new(service, crate::heartbeat::replica_name(port));
        let client_id = identity.client_id(service);
        let producer = kafka::producer(&config.kafka_brokers, &client_id, kafka.clone())?;
        let degraded = Degraded::default();
        let mut started = Self {
            telemetry,
            kafka,
            producer,
            identity,
            shutdown,
            config,
            degraded,
            tasks: JoinSet::new(),
        };
        started.spawn_topic_setup();
        started.spawn_heartbeats();
        tracing::info!(service, instance_id = %started.identity.instance_id, "service starting");
        Ok(started)
    }

    /// Runs a lasting task, one that works until shutdown: if it returns (with or without
    /// an error) or panics before shutdown, the service stops and `run` names it.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), KitError>> + Send + 'static,
    {
        self.track(name, true, task);
    }

    /// Runs a job, a task that may finish (topic setup, loading limits): finishing is
    /// fine; an error or a panic stops the service.
    pub fn spawn_job<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = Result<(), KitError>> + Send + 'static,
    {
        self.track(name, false, task);
    }

    fn track<F>(&mut self, name: &'static str, lasting: bool, task: F)
    where
        F: Future<Output = Result<(), KitError>> + Send + 'static,
    {
        self.tasks.spawn(async move {
            let outcome = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(panic) => Err(format!("panicked: {}", panic_message(panic.as_ref()))),
            };
            Ended {
                name,
                lasting,
                outcome,
            }
        });
    }

    /// The ops server's app with the Kafka readiness probe and the degraded list.
    pub fn ops_app(&self) -> OpsApp {
        OpsApp::new(self.telemetry.clone())
            .degraded(self.degraded.clone())
            .probe("kafka", kafka::probe(self.producer.clone()))
    }

    /// Serves the ops endpoints on `listener` until shutdown or until a task fails, then
    /// drains every task. `Err` names the failed task.
    pub async fn run(mut self, listener: TcpListener, app: OpsApp) -> Result<(), KitError> {
        let token = self.shutdown.clone();
        let serve = http::serve(listener, app, token.clone());
        self.spawn("ops_http", async move {
            serve.await;
            Ok(())
        });
        let failure = self.supervise().await;
        // After a failure the process must end fast (so it is restarted): a short drain.
        let (grace, flush) = match &failure {
            Some(err) => {
                self.telemetry
                    .error(crate::contract::ErrorKind::TaskFailed, err);
                token.cancel();
                (
                    FAILED_GRACE.min(self.config.shutdown_grace()),
                    FAILED_GRACE / 2,
                )
            }
            None => (self.config.shutdown_grace(), Duration::from_secs(2)),
        };
        self.drain(grace).await;
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer.flush(flush)
        })
        .await;
        tracing::info!(service = self.telemetry.service(), "service stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Waits for shutdown or the first failed task.
    async fn supervise(&mut self) -> Option<KitError> {
        loop {
            let ended = tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                ended = self.tasks.join_next() => ended,
            };
            match ended {
                None => return None,
                Some(Ok(end)) => {
                    if let Some(err) = self.judge(end) {
                        return Some(err);
                    }
                }
                Some(Err(join)) => {
                    return Some(KitError::TaskFailed {
                        task: "unknown",
                        reason: join.to_string(),
                    })
                }
            }
        }
    }

    /// Whether a task's end (outside shutdown) is a failure of the service.
    fn judge(&self, end: Ended) -> Option<KitError> {
        match end.outcome {
            Err(reason) => Some(KitError::TaskFailed {
                task: end.name,
                reason,
            }),
            Ok(()) if end.lasting && !self.shutdown.is_cancelled() => Some(KitError::TaskFailed {
                task: end.name,
                reason: "ended before shutdown".into(),
            }),
            Ok(()) => {
                tracing::debug!(task = end.name, "task finished");
                None
            }
        }
    }

    /// Waits for every task within the grace period, logging those that fail on the way
    /// out; aborts what is left.
    async fn drain(&mut self, grace: Duration) {
        let telemetry = self.telemetry.clone();
        let tasks = &mut self.tasks;
        let finished = tokio::time::timeout(grace, async {
            while let Some(ended) = tasks.join_next().await {
                if let Ok(Ended {
                    name,
                    outcome: Err(reason),
                    ..
                }) = ended
                {
                    telemetry.error(
                        crate::contract::ErrorKind::TaskFailed,
                        &format!("task {name} failed during shutdown: {reason}"),
                    );
                }
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                left = self.tasks.len(),
                "tasks still running after the grace period were aborted"
            );
            self.tasks.abort_all();
        }
    }

    fn spawn_topic_setup(&mut self) {
        let brokers = self.config.kafka_brokers.clone();
        let (replication, min_insync) = (
            self.config.replication_factor,
            self.config.min_insync_replicas,
        );
        let telemetry = self.telemetry.clone();
        let shutdown = self.shutdown.clone();
        self.spawn_job("kafka_topics", async move {
            let create = || kafka::ensure_topics(&brokers, replication, min_insync);
            crate::retry::retry(
                &shutdown,
                crate::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
                create,
                |e| telemetry.error(crate::contract::ErrorKind::KafkaTopics, &e),
            )
            .await;
            Ok(())
        });
    }

    fn spawn_heartbeats(&mut self) {
        let task = heartbeat::run(
            self.producer.clone(),
            self.identity.clone(),
            self.config.heartbeat_interval(),
            self.telemetry.clone(),
            self.shutdown.clone(),
        );
        self.spawn("heartbeat", task);
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Binds the ops listener, with the address in the error.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, KitError> {
    TcpListener::bind(addr).await.map_err(|e| {
        KitError::Io(std::io::Error::new(
            e.kind(),
            format!("binding {addr}: {e}"),
        ))
    })
}

/// A service's whole `main`: reads `C` from the environment, starts logging, binds the
/// ops server (`LISTEN_ADDR`, or every interface on `port`), runs `run` until SIGTERM or
/// SIGINT, and turns the outcome into the exit status ([`exit`]).
pub async fn main<C, F, Fut, E>(service: &'static str, port: u16, run: F) -> std::process::ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display + From<KitError>,
{
    let config = C::parse();
    crate::telemetry::init_logging(&config.kit().log_format);
    let result = async {
        let listener = bind(config.kit().listen_addr(port)).await?;
        run(config, listener, crate::shutdown::on_signal()).await
    };
    exit(service, result.await)
}

/// The end of a service's `main`: success exits 0; a failure is the last log line (with
/// the failed task and its error) and exits 1 at once, without waiting for clients that
/// may block on a broker that is away.
pub fn exit<E: std::fmt::Display>(service: &str, result: Result<(), E>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(service, error = %err, "service failed; exiting with status 1");
            std::process::exit(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn service() -> (Service, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let vars = std::collections::HashMap::from([
            ("KAFKA_BROKERS", "127.0.0.1:1"),
            ("SHUTDOWN_GRACE_SECS", "1"),
        ]);
        #[derive(clap::Parser)]
        struct C {
            #[command(flatten)]
            kit: KitConfig,
        }
        let c: C = crate::config::parse_from_map(&vars).expect("config");
        let s = Service::start("collector", &c.kit, &listener, CancellationToken::new())
            .expect("service");
        (s, listener)
    }

    async fn run_with(
        task: impl Future<Output = Result<(), KitError>> + Send + 'static,
        lasting: bool,
    ) -> Result<(), KitError> {
        let (mut s, listener) = service().await;
        let token = s.shutdown.clone();
        s.track("probe_task", lasting, task);
        let app = s.ops_app();
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(20)).await;
            token.cancel();
        });
        let result = tokio::time::timeout(Duration::from_secs(30), s.run(listener, app))
            .await
            .expect("run ends");
        stopper.abort();
        result
    }

    fn failed_task(result: Result<(), KitError>) -> (&'static str, String) {
        match result {
            Err(KitError::TaskFailed { task, reason }) => (task, reason),
            other => panic!("expected a task failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_task_error_stops_the_service_and_names_the_task() {
        let started = std::time::Instant::now();
        let failing = async { Err(KitError::Io(std::io::Error::other("disk on fire"))) };
        let (task, reason) = failed_task(run_with(failing, true).await);
        assert_eq!(task, "probe_task");
        assert!(reason.contains("disk on fire"), "{reason}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "stopped after {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_panic_stops_the_service() {
        let (task, reason) =
            failed_task(run_with(async { panic!("index out of bounds") }, true).await);
        assert_eq!(task, "probe_task");
        assert!(reason.contains("panicked: index out of bounds"), "{reason}");
    }

    #[tokio::test]
    async fn a_lasting_task_that_returns_stops_the_service_but_a_job_may_finish() {
        let (task, reason) = failed_task(run_with(async { Ok(()) }, true).await);
        assert_eq!(
            (task, reason.as_str()),
            ("probe_task", "ended before shutdown")
        );
        let (mut s, listener) = service().await;
        s.spawn_job("done_soon", async { Ok(()) });
        let token = s.shutdown.clone();
        let app = s.ops_app();
        let run = tokio::spawn(s.run(listener, app));
        tokio::time::sleep(Duration::from_millis(300)).await; // the job finished meanwhile
        assert!(
            !run.is_finished(),
            "a finished job must not stop the service"
        );
        token.cancel();
        assert!(
            run.await.expect("joins").is_ok(),
            "shutdown is a clean stop"
        );
    }
}
