//! `lclstream bench`.

/// Benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Codec: encode/decode MB/s and compression ratio, plain LZ4 vs shuffle+LZ4.
    Codec,
}

/// Runs `lclstream bench`.
pub async fn run(_command: BenchCommand) -> anyhow::Result<()> {
    super::not_yet("bench")
}
