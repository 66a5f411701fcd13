//! The frame every service runs in: telemetry, the Kafka context and producer, topic
//! creation, heartbeats, the ops HTTP server and graceful shutdown. A service builds a
//! [`Service`], spawns its own tasks on it, then calls [`Service::run`].

use crate::config::KitConfig;
use crate::heartbeat::{self, Identity};
use crate::http::{self, OpsApp};
use crate::kafka::{self, KafkaContext};
use crate::{KitError, Telemetry};
use rdkafka::producer::FutureProducer;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// A running service's shared parts.
pub struct Service {
    pub telemetry: Telemetry,
    pub kafka: KafkaContext,
    pub producer: FutureProducer<KafkaContext>,
    pub identity: Identity,
    pub shutdown: CancellationToken,
    pub config: KitConfig,
    tasks: JoinSet<()>,
}

impl Service {
    /// Sets up telemetry and Kafka, and starts heartbeats and topic creation; `listener`
    /// (the ops server's) names the replica.
    pub fn start(service: &'static str, version: &str, config: KitConfig, listener: &TcpListener, shutdown: CancellationToken) -> Result<Self, KitError> {
        let telemetry = Telemetry::new(service, version)?;
        let kafka = KafkaContext::new(&telemetry)?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let identity = Identity::new(service, crate::heartbeat::replica_name(port));
        let client_id = format!("{service}-{}", &identity.instance_id[..8]);
        let producer = kafka::producer(&config.kafka_brokers, &client_id, kafka.clone())?;
        let mut me = Self { telemetry, kafka, producer, identity, shutdown, config, tasks: JoinSet::new() };
        me.spawn_topic_setup();
        me.spawn_heartbeats();
        tracing::info!(service, instance_id = %me.identity.instance_id, "service starting");
        Ok(me)
    }

    /// Runs `task` until it ends; a task's error is logged and counted under `kind`.
    pub fn spawn<F>(&mut self, kind: &'static str, task: F)
    where
        F: Future<Output = Result<(), KitError>> + Send + 'static,
    {
        let telemetry = self.telemetry.clone();
        self.tasks.spawn(async move {
            if let Err(err) = task.await {
                telemetry.error(kind, &err);
            }
        });
    }

    /// The ops server's app with the Kafka readiness probe already added.
    pub fn ops_app(&self) -> OpsApp {
        OpsApp::new(self.telemetry.clone()).probe("kafka", kafka::probe(self.producer.clone()))
    }

    /// Serves the ops endpoints on `listener` until shutdown, then drains every task.
    pub async fn run(mut self, listener: TcpListener, app: OpsApp) {
        let token = self.shutdown.clone();
        self.tasks.spawn(http::serve(listener, app, token.clone()));
        token.cancelled().await;
        let left = crate::shutdown::drain(self.tasks, self.config.shutdown_grace()).await;
        if left > 0 {
            tracing::warn!(left, "tasks still running after the grace period were aborted");
        }
        let _ = tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            self.producer.flush(Duration::from_secs(2))
        })
        .await;
        tracing::info!(service = self.telemetry.service(), "service stopped");
    }

    fn spawn_topic_setup(&mut self) {
        let brokers = self.config.kafka_brokers.clone();
        let telemetry = self.telemetry.clone();
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            let create = || kafka::ensure_topics(&brokers, 1);
            crate::shutdown::retry(&shutdown, Duration::from_millis(500), Duration::from_secs(10), create, |e| telemetry.error("kafka_topics", &e)).await;
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

/// Binds the ops listener, with the address in the error.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, KitError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| KitError::Io(std::io::Error::new(e.kind(), format!("binding {addr}: {e}"))))
}
