//! The kit's error type.

/// What can go wrong inside the kit; each variant says which part failed.
#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("task {task} failed: {reason}")]
    TaskFailed { task: &'static str, reason: String },
    #[error("kafka admin: creating topic {topic}: {reason}")]
    TopicCreate { topic: String, reason: String },
    #[error("KAFKA_MIN_INSYNC_REPLICAS {min_insync} is above KAFKA_REPLICATION_FACTOR {replication}: no write could ever be acknowledged")]
    Replication { replication: i32, min_insync: i32 },
}
