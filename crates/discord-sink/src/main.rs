//! The discord-sink binary: `discord-sink --listen 127.0.0.1:9199`.
use clap::Parser;

/// A Discord-compatible webhook receiver for tests and offline demos.
#[derive(Parser)]
#[command(name = "discord-sink", version)]
struct Args {
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:9199")]
    listen: std::net::SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    kit::telemetry::init_logging("json");
    let listener = kit::app::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, "discord-sink ready");
    discord_sink::serve(
        listener,
        discord_sink::Sink::default(),
        kit::shutdown::on_signal(),
    )
    .await;
    Ok(())
}
