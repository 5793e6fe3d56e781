//! `qrlogin-charts --input results.json --out-dir DIR`: wiring only.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// SVG charts of the transport and peer comparison.
#[derive(Debug, Parser)]
#[command(name = "qrlogin-charts")]
struct Cli {
    /// results.json: a JSON array of result rows.
    #[arg(long)]
    input: PathBuf,
    /// Where the SVG files go (created when missing).
    #[arg(long)]
    out_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.input)
        .with_context(|| format!("cannot read {}", cli.input.display()))?;
    let rows = qrlogin_charts::results::parse(&text)
        .with_context(|| format!("{} is not an array of result rows", cli.input.display()))?;
    for path in qrlogin_charts::render(&rows, &cli.out_dir)? {
        println!("{}", path.display());
    }
    Ok(())
}
