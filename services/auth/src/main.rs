use anyhow::Context as _;
use clap::Parser as _;
use qrlogin_auth::config::{Cli, Command};
use qrlogin_auth::{dev, shutdown, startup::Application, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve(config) => {
            telemetry::init(config.log_format);
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
