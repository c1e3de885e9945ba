//! `lclstream gateway`.

/// Arguments of `lclstream gateway`.
#[derive(clap::Args)]
pub struct GatewayArgs {}

/// Runs `lclstream gateway`.
pub async fn run(_args: GatewayArgs) -> anyhow::Result<()> {
    super::not_yet("gateway")
}
