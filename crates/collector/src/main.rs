//! The collector binary: configuration, logging, signals; the service itself is in the library.
//! A failed task stops the service: the last log line names it and the exit status is 1.
use kit::contract::{ports, services};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kit::app::main(services::COLLECTOR, ports::COLLECTOR, collector::run).await
}
