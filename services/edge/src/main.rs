//! `qrlogin-edge`: wiring only; see the library for everything else.

use clap::Parser;
use qrlogin_edge::{config::EdgeConfig, shutdown, startup::Application, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = EdgeConfig::parse();
    let _telemetry = telemetry::init(config.log_format, &config.node())?;
    let app = Application::build(config).await?;
    app.run_until_stopped(shutdown::signal()).await?;
    Ok(())
}
