//! The sync-verifier binary: configuration, logging, signals; the service itself is in the library.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = sync_verifier::Config::parse();
    kit::telemetry::init_logging(&config.kit.log_format);
    let listener = kit::app::bind(config.listen).await?;
    sync_verifier::run(config, listener, kit::shutdown::on_signal()).await?;
    Ok(())
}
