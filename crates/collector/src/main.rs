//! The collector binary: configuration, logging, signals; the service itself is in the library.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = collector::Config::parse();
    kit::telemetry::init_logging(&config.kit.log_format);
    let listener = kit::app::bind(config.listen).await?;
    collector::run(config, listener, kit::shutdown::on_signal()).await?;
    Ok(())
}
