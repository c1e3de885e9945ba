//! `lclstream gateways`: the live gateways of a deployment and which one
//! meters, read from their heartbeats in the `lclstream-gateway-live`
//! bucket. It needs a facility (LCLS account) user: partner institutions
//! cannot read the gateway buckets.

use std::path::PathBuf;

use lclstream_gateway::shared_state::gateways;
use time::OffsetDateTime;

/// Arguments of `lclstream gateways`.
#[derive(clap::Args)]
pub struct GatewaysArgs {
    #[command(flatten)]
    server: super::ServerUrl,
    /// File holding a facility user's nkey seed (an operator or admin user
    /// of the LCLS account); omit on servers without authentication.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: GatewaysArgs) -> anyhow::Result<()> {
    let seed = super::read_seed(args.seed.as_deref())?;
    let client = args.server.connect(seed, "lclstream-gateways").await?;
    let js = async_nats::jetstream::new(client);
    let (beats, leader) = gateways(&js).await.map_err(|e| {
        anyhow::anyhow!("{e} (is this a facility user? partners cannot read the gateway buckets)")
    })?;
    let now = OffsetDateTime::now_utc();
    if args.json {
        let rows: Vec<_> = beats
            .iter()
            .map(|b| {
                serde_json::json!({
                    "id": b.id,
                    "started": b.started.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "last_beat_secs": (now - b.seen).as_seconds_f64().max(0.0),
                    "version": b.version,
                    "metering": leader.as_deref() == Some(b.id.as_str()),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({ "gateways": rows, "meter": leader })
        );
        return Ok(());
    }
    println!(
        "{:<24} {:<26} {:>10} {:<10} METER",
        "ID", "STARTED", "LAST BEAT", "VERSION"
    );
    for b in &beats {
        let started = b
            .started
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let age = (now - b.seen).as_seconds_f64().max(0.0);
        let meter = if leader.as_deref() == Some(b.id.as_str()) {
            "yes"
        } else {
            ""
        };
        println!(
            "{:<24} {:<26} {:>9.1}s {:<10} {meter}",
            b.id, started, age, b.version
        );
    }
    match &leader {
        Some(id) => println!("meter: {id}"),
        None => println!("meter: none (no gateway holds the meter lease)"),
    }
    if beats.is_empty() {
        anyhow::bail!("no live gateway: every heartbeat has expired");
    }
    Ok(())
}
