//! `qrlogin-loadgen`: see the library for what each part does.

use clap::Parser;
use qrlogin_loadgen::{
    chaos, compare,
    config::{Cli, Command},
    coordinator, worker,
};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Run(args) => {
            let settings = (*args).settings().map_err(anyhow::Error::msg)?;
            let passed = runtime.block_on(coordinator::run(settings))?;
            std::process::exit(if passed { 0 } else { 1 });
        }
        Command::Transport(args) => {
            let passed = runtime.block_on(compare::transport(*args))?;
            std::process::exit(if passed { 0 } else { 1 });
        }
        Command::Throughput(args) => {
            runtime.block_on(compare::throughput::run(*args))?;
            Ok(())
        }
        Command::Chaos(args) => {
            let passed = runtime.block_on(chaos::run(*args))?;
            std::process::exit(if passed { 0 } else { 1 });
        }
        Command::Worker => runtime.block_on(worker::main()),
    }
}
