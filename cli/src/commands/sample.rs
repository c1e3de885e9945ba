//! `lclstream sample`.

/// Arguments of `lclstream sample`.
#[derive(clap::Args)]
pub struct SampleArgs {}

/// Runs `lclstream sample`.
pub async fn run(_args: SampleArgs) -> anyhow::Result<()> {
    super::not_yet("sample")
}
