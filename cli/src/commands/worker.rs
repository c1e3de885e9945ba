//! `lclstream worker`: run publish jobs from the gateway's work queue.

use std::path::PathBuf;

use lclstream_agent::worker::{Worker, WorkerConfig};

/// Arguments of `lclstream worker`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Configuration file (TOML); keys are documented in docs/jobs.md.
    #[arg(long, env = "LCLSTREAM_WORKER_CONFIG")]
    pub config: PathBuf,
    /// Override the NATS server URL of the configuration.
    #[arg(long)]
    pub url: Option<String>,
    /// Only load and check the configuration, then exit.
    #[arg(long)]
    pub check: bool,
}

/// Runs `lclstream worker` until SIGTERM or SIGINT.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let mut config = WorkerConfig::load(&args.config)?;
    if let Some(url) = args.url {
        config.nats.url = url;
    }
    if args.check {
        println!("configuration {} is valid", args.config.display());
        return Ok(());
    }
    let report = Worker::new(config)
        .run(super::agent::shutdown_signal())
        .await?;
    tracing::info!(
        done = report.done,
        failed = report.failed,
        cancelled = report.cancelled,
        requeued = report.requeued,
        "worker stopped"
    );
    Ok(())
}
