//! The `credits` binary: parse the command line, set up tracing, run.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = credits::cli::Cli::parse();
    let config = credits::config::Config::from_env().context("invalid configuration")?;
    let telemetry =
        credits::telemetry::init(config.log_format, &cli.log_filter(&config.log_filter), config.otlp.as_ref())?;
    let ran = credits::cli::run(cli, config).await;
    // The exporter's last spans leave before exit (its shutdown blocks).
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    Ok(ran?)
}
