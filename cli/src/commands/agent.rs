//! `lclstream agent`: run the facility agent from a configuration file.

use std::io::IsTerminal;
use std::path::PathBuf;

use lclstream_agent::{Agent, AgentConfig};

/// Arguments of `lclstream agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// Configuration file (TOML); keys are documented in agent/agent.example.toml.
    /// Environment variables `LCLSTREAM_<SECTION>__<KEY>` override it.
    #[arg(long, env = "LCLSTREAM_AGENT_CONFIG")]
    pub config: PathBuf,
    /// Only load and check the configuration, then exit.
    #[arg(long)]
    pub check: bool,
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Runs `lclstream agent`.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = AgentConfig::load(&args.config)?;
    if args.check {
        println!("configuration {} is valid", args.config.display());
        return Ok(());
    }
    let agent = Agent::new(config).with_progress(std::io::stderr().is_terminal());
    let report = agent.run(shutdown_signal()).await?;
    tracing::info!(
        events = report.events_published,
        batches = report.batches_published,
        raw_bytes = report.raw_bytes,
        wire_bytes = report.wire_bytes,
        spooled = report.spooled_at_exit,
        "done"
    );
    Ok(())
}
