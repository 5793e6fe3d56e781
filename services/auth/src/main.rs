use anyhow::Context as _;
use clap::Parser as _;
use qrlogin_auth::config::{Cli, Command};
use qrlogin_auth::{dev, shutdown, startup::Application, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(config) => {
            let host = hostname_or_none();
            let _telemetry = telemetry::init(config.log_format, "qrlogin-auth", host.as_deref())
                .context("telemetry")?;
            let app = Application::build(*config)
                .await
                .context("startup failed")?;
            app.run_until_stopped(shutdown::signal()).await?;
        }
        Command::DevKeygen(args) => dev::keygen(&args)?,
        Command::DevToken(args) => println!("{}", dev::token(&args)?),
        Command::DevNatsConfig(args) => print!("{}", dev::nats_config(&args)?),
    }
    Ok(())
}

/// This host's name, for `service.instance.id` in traces.
fn hostname_or_none() -> Option<String> {
    std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty())
}
