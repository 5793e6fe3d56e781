//! `qrlogin-peer-sse run ...` (the coordinator) or `qrlogin-peer-sse worker`
//! (started by the coordinator). Wiring only.

use clap::Parser as _;
use qrlogin_peer_sse::{config::Cli, coordinator, worker};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.command {
        qrlogin_peer_sse::config::Command::Run(args) => rt.block_on(coordinator::run(*args)),
        qrlogin_peer_sse::config::Command::Worker => rt.block_on(worker::run()),
    }
}
