//! `lclstream gateway`: the data-request service, byte meter and audit log.

use std::path::PathBuf;

use anyhow::Context as _;
use lclstream_gateway::gateway::{Gateway, GatewayConfig};

/// Arguments of `lclstream gateway`.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// Configuration file (see gateway/gateway.example.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// NATS server URL (without --config).
    #[arg(long, env = "LCLSTREAM_NATS_URL")]
    nats_url: Option<String>,
    /// Directory of institution policy files (without --config).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Append audit lines to this file.
    #[arg(long)]
    audit_file: Option<PathBuf>,
    /// Also write audit lines to stderr.
    #[arg(long)]
    audit_stderr: bool,
}

/// Runs `lclstream gateway` until interrupted (SIGINT or SIGTERM).
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => GatewayConfig::from_file(path)?,
        None => {
            let url = args
                .nats_url
                .clone()
                .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
            let policies = args
                .policies
                .clone()
                .context("give --config FILE, or at least --policies DIR")?;
            GatewayConfig::local(&url, &policies)
        }
    };
    if let Some(url) = args.nats_url {
        config.nats.url = url;
    }
    if let Some(dir) = args.policies {
        config.policies.dir = dir;
    }
    if let Some(file) = args.audit_file {
        config.audit.file = Some(file);
    }
    if args.audit_stderr {
        config.audit.stderr = true;
    }
    // Installed before starting: a gateway is visible (heartbeat, callout)
    // while start() still runs, and a SIGTERM then must still stop it cleanly.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let handle = Gateway::start(config).await?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("gateway stopping");
    handle.shutdown().await;
    Ok(())
}
