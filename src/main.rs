//! The `credits` binary: parse the command line, set up tracing, run.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = credits::cli::Cli::parse();
    let config = credits::config::Config::from_env().context("invalid configuration")?;
    credits::telemetry::init(config.log_format, &cli.log_filter(&config.log_filter));
    credits::cli::run(cli, config).await?;
    Ok(())
}
