//! The restart-watcher binary: configuration, logging, signals; the service itself is in the library.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = restart_watcher::Config::parse();
    kit::telemetry::init_logging(&config.kit.log_format);
    let listener = kit::app::bind(config.listen).await?;
    restart_watcher::run(config, listener, kit::shutdown::on_signal()).await?;
    Ok(())
}
