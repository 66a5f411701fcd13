//! The exchange-sim binary: configuration, logging, signals; the simulator is the library.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = exchange_sim::Config::parse();
    kit::telemetry::init_logging(&config.log_format);
    let listener = kit::app::bind(config.listen).await?;
    tracing::info!(listen = %config.listen, symbols = ?config.symbols, "exchange-sim ready");
    exchange_sim::run(config, listener, kit::shutdown::on_signal()).await?;
    Ok(())
}
