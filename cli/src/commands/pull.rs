//! `lclstream pull`.

/// Arguments of `lclstream pull`.
#[derive(clap::Args)]
pub struct PullArgs {}

/// Runs `lclstream pull`.
pub async fn run(_args: PullArgs) -> anyhow::Result<()> {
    super::not_yet("pull")
}
