//! `lclstream gateway`: the data-request service, byte meter and audit log.

use std::path::PathBuf;

use anyhow::Context as _;
use lclstream_gateway::gateway::{connect_as_service, Gateway, GatewayConfig};

/// Arguments of `lclstream gateway`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GatewayArgs {
    #[command(subcommand)]
    command: Option<GatewayCommand>,
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

/// Operations on running gateways.
#[derive(clap::Subcommand)]
enum GatewayCommand {
    /// The live gateways of the facility (several gateways, `[quota] shared`):
    /// each one's id, start, last heartbeat and version, and which one meters.
    Status(StatusArgs),
}

#[derive(clap::Args)]
struct StatusArgs {
    /// A gateway's configuration file: connects as that gateway's service user.
    #[arg(long)]
    config: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `lclstream gateway` until interrupted (SIGINT or SIGTERM).
pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if let Some(GatewayCommand::Status(status_args)) = args.command {
        return status(status_args).await;
    }
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
    let handle = Gateway::start(config).await?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("gateway stopping");
    handle.shutdown().await;
    Ok(())
}

async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let config = GatewayConfig::from_file(&args.config)?;
    let client = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        connect_as_service(&config, "lclstream-gateway-status"),
    )
    .await
    .with_context(|| format!("connecting to {}: timed out", config.nats.url))??;
    let js = async_nats::jetstream::new(client);
    let (beats, meter) = lclstream_gateway::shared_state::gateways(&js)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = time::OffsetDateTime::now_utc();
    if args.json {
        let value = serde_json::json!({ "gateways": beats, "meter": meter });
        println!("{value}");
        return Ok(());
    }
    println!(
        "{} gateway(s) live; meter: {}",
        beats.len(),
        meter.as_deref().unwrap_or("none")
    );
    for beat in &beats {
        let age = (now - beat.seen).as_seconds_f64().max(0.0);
        let started = beat
            .started
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        println!(
            "  {}{}  started {started}  last beat {age:.1} s ago  version {}",
            beat.id,
            if beat.metering { " (meter)" } else { "" },
            beat.version
        );
    }
    Ok(())
}
