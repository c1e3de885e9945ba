//! `lclstream init DIR`: write a complete single-host deployment (keys,
//! policies, nats-server configuration with the auth callout, gateway and
//! agent configurations, README with the start commands).

use std::path::PathBuf;

use lclstream_gateway::deploy::{self, InitOptions};

/// Arguments of `lclstream init`.
#[derive(clap::Args)]
pub struct InitArgs {
    /// Directory to write (created; must be empty if it exists).
    pub dir: PathBuf,
    /// Address nats-server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// nats-server client port.
    #[arg(long, default_value_t = 4222)]
    pub port: u16,
    /// nats-server HTTP monitoring port.
    #[arg(long, default_value_t = 8222)]
    pub monitor_port: u16,
    /// Instrument of the example agent.
    #[arg(long, default_value = "mfx")]
    pub instrument: String,
    /// Experiment of the example agent.
    #[arg(long, default_value = "mfxp1234")]
    pub experiment: String,
    /// Id of the example partner institution.
    #[arg(long, default_value = "example-university")]
    pub institution: String,
    /// JetStream storage budget of the server, GiB (`max_file_store`).
    #[arg(long, default_value_t = 64)]
    pub storage_gib: u64,
    /// Size limit of the instrument's stream, GiB: each stream reserves this
    /// much of the storage budget.
    #[arg(long, default_value_t = 8)]
    pub stream_gib: u64,
    /// JetStream `sync_interval`: `always` fsyncs each write before it is
    /// acknowledged; a duration such as `2m` (the server's own default)
    /// trades that for speed (see docs/benchmarks.md).
    #[arg(long, default_value = "always")]
    pub sync_interval: String,
    /// Address of the gateway's Prometheus endpoint (`GET /metrics`).
    #[arg(long, default_value = "127.0.0.1:9465")]
    pub gateway_metrics: String,
}

/// Runs `lclstream init`.
pub async fn run(args: InitArgs) -> anyhow::Result<()> {
    const GIB: u64 = 1024 * 1024 * 1024;
    let options = InitOptions {
        host: args.host,
        port: args.port,
        monitor_port: args.monitor_port,
        instrument: args.instrument,
        experiment: args.experiment,
        institution: args.institution,
        max_file_store: args.storage_gib.saturating_mul(GIB),
        stream_max_bytes: args.stream_gib.saturating_mul(GIB),
        sync_interval: args.sync_interval,
        gateway_metrics: args.gateway_metrics,
    };
    let deployment = deploy::init(&args.dir, &options)?;
    println!(
        "deployment written to {}; start it with the commands in {}",
        deployment.dir.display(),
        deployment.readme.display()
    );
    Ok(())
}
