//! The restart-watcher binary: configuration, logging, signals; the service itself is in the library.
//! A failed task stops the service: the last log line names it and the exit status is 1.
use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = restart_watcher::Config::parse();
    kit::telemetry::init_logging(&config.kit.log_format);
    let result = async {
        let listener = kit::app::bind(config.listen).await?;
        restart_watcher::run(config, listener, kit::shutdown::on_signal()).await
    };
    kit::app::exit(kit::contract::services::RESTART_WATCHER, result.await)
}
