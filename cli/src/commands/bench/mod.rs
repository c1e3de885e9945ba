//! `lclstream bench`: each benchmark prints its figures next to a baseline
//! measured in the same run. Results and machines: `docs/benchmarks.md`.

pub mod codec;

/// Benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Codec: encode/decode MB/s and compression ratio, plain LZ4 vs shuffle+LZ4.
    Codec(codec::CodecArgs),
}

/// Runs `lclstream bench`.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Codec(args) => codec::run(args).await,
    }
}
