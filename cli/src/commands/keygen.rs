//! `lclstream keygen`.

/// Arguments of `lclstream keygen`.
#[derive(clap::Args)]
pub struct KeygenArgs {}

/// Runs `lclstream keygen`.
pub async fn run(_args: KeygenArgs) -> anyhow::Result<()> {
    super::not_yet("keygen")
}
