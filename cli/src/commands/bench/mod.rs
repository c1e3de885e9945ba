//! `lclstream bench`: each benchmark prints its figures next to a baseline
//! measured in the same run. Results and machines: `docs/benchmarks.md`.

pub mod agent;
pub mod codec;
pub mod durability;
pub mod latency;
pub mod memory;
pub mod psana;
pub mod pull;
pub mod python;
pub mod scaling;
pub mod support;

/// Benchmarks.
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Codec: encode/decode GB/s and ratio: LZ4, shuffle+LZ4, bitshuffle+LZ4 on two data models.
    Codec(codec::CodecArgs),
    /// Agent: HDF5 and synthetic throughput into JetStream vs a raw publisher of the same payloads.
    Agent(agent::AgentBenchArgs),
    /// Pull: partner library (pull, decode, ack) vs a raw async-nats pull of the same messages.
    Pull(pull::PullBenchArgs),
    /// Python: agent ingest and partner pull vs the same pipeline in Python (h5py, msgpack, lz4, nats-py).
    Python(python::PythonBenchArgs),
    /// Latency: agent read to partner decode at fixed rates vs a raw one-event-per-message pipeline.
    Latency(latency::LatencyBenchArgs),
    /// Scaling: throughput vs batch size and vs number of concurrent partner consumers.
    Scaling(scaling::ScalingBenchArgs),
    /// psana: the agent's psana source vs psana iterating the same xtc2 run in Python.
    Psana(psana::PsanaBenchArgs),
    /// Durability: JetStream sync_interval always (fsync before ack) vs the server default.
    Durability(durability::DurabilityBenchArgs),
    /// Memory: peak RSS of the agent (backfill, stalled broker) and gateway (request burst) vs an idle process.
    Memory(memory::MemoryBenchArgs),
}

/// Runs `lclstream bench`.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Codec(args) => codec::run(args).await,
        BenchCommand::Agent(args) => agent::run(args).await,
        BenchCommand::Pull(args) => pull::run(args).await,
        BenchCommand::Python(args) => python::run(args).await,
        BenchCommand::Latency(args) => latency::run(args).await,
        BenchCommand::Scaling(args) => scaling::run(args).await,
        BenchCommand::Memory(args) => memory::run(args).await,
        BenchCommand::Psana(args) => psana::run(args).await,
        BenchCommand::Durability(args) => durability::run(args).await,
    }
}
