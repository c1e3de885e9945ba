//! `lclstream sample`: write sample HDF5 runs in the layouts the agent reads.

use std::path::PathBuf;

use lclstream_agent::config::Preset;
use lclstream_agent::sample::{write_sample, SampleSpec};

/// File layout of a sample.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Layout {
    /// Per-shot scalars and /jungfrau/image [N,H,W] u16 (agent `preset = "sample"`).
    Sample,
    /// CXI-like: /entry_1/data_1/data [N,H,W] and peak tables.
    Cxi,
}

/// Arguments of `lclstream sample`.
#[derive(clap::Args)]
pub struct SampleArgs {
    /// Layout of the file.
    #[arg(long, value_enum, default_value = "sample")]
    pub layout: Layout,
    /// Number of events.
    #[arg(long, default_value_t = 100)]
    pub events: u64,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Frame height.
    #[arg(long, default_value_t = 64)]
    pub height: u64,
    /// Frame width.
    #[arg(long, default_value_t = 64)]
    pub width: u64,
    /// Seed of the synthetic frames.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs `lclstream sample`.
pub async fn run(args: SampleArgs) -> anyhow::Result<()> {
    let spec = SampleSpec {
        layout: match args.layout {
            Layout::Sample => Preset::Sample,
            Layout::Cxi => Preset::Cxi,
        },
        events: args.events,
        height: args.height,
        width: args.width,
        seed: args.seed,
    };
    let out = args.out.clone();
    tokio::task::spawn_blocking(move || write_sample(&out, &spec)).await??;
    println!(
        "wrote {} events ({:?} layout, {}x{}) to {}",
        args.events,
        args.layout,
        args.height,
        args.width,
        args.out.display()
    );
    Ok(())
}
