//! `lclstream bench codec`.

/// Arguments of `lclstream bench codec`.
#[derive(clap::Args)]
pub struct CodecArgs {}

/// Runs the codec benchmark.
pub async fn run(_args: CodecArgs) -> anyhow::Result<()> {
    super::super::not_yet("bench codec")
}
