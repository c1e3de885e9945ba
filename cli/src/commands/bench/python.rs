//! `lclstream bench python`: lclstream against the same pipeline written the
//! way a Python user would (`integration/python/bench_pipeline.py`: h5py,
//! msgpack, lz4, nats-py), on the same HDF5 file and server in the same run.
//!
//! Ingest: the agent (HDF5 -> batch -> bitshuffle+lz4 -> spool -> pipelined
//! publish) against h5py + msgpack + lz4 + a JetStream publish awaiting each
//! ack. Pull: the partner library against nats-py fetch + decode + ack, both
//! reading the batches the agent published.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;
use lclstream_agent::config::Preset;
use lclstream_agent::sample::{write_sample, SampleSpec};
use lclstream_nats::streams::PullLimits;

use super::support::{self, AgentBatching, Rate};

/// Arguments of `lclstream bench python`.
#[derive(clap::Args)]
pub struct PythonBenchArgs {
    /// Events in the HDF5 file.
    #[arg(long, default_value_t = 1600)]
    pub events: u64,
    /// Frame height.
    #[arg(long, default_value_t = 512)]
    pub height: u64,
    /// Frame width.
    #[arg(long, default_value_t = 512)]
    pub width: u64,
    /// Events per batch (both pipelines).
    #[arg(long, default_value_t = 16)]
    pub batch_events: usize,
    /// fsync every agent spool append (as in production).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Python interpreter.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// The Python pipeline script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../integration/python/bench_pipeline.py"))]
    pub script: PathBuf,
}

/// Runs the script with `args` and parses its JSON summary line.
async fn python(args: &PythonBenchArgs, script_args: Vec<String>) -> anyhow::Result<Rate> {
    let (python, script) = (args.python.clone(), args.script.clone());
    let output = support::step(
        "python pipeline",
        tokio::task::spawn_blocking(move || {
            Command::new(&python)
                .arg(&script)
                .args(&script_args)
                .output()
                .with_context(|| format!("running {python} {}", script.display()))
        }),
    )
    .await???;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "{} failed ({}):\n{stderr}",
        args.script.display(),
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            format!(
                "no JSON summary from {}:\n{stdout}\n{stderr}",
                args.script.display()
            )
        })?;
    let v: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("summary of {}: {line}", args.script.display()))?;
    let field = |name: &str| {
        v[name]
            .as_u64()
            .with_context(|| format!("summary of {}: no {name} in {line}", args.script.display()))
    };
    Ok(Rate {
        events: field("events")?,
        raw_bytes: field("raw_bytes")?,
        wire_bytes: field("wire_bytes")?,
        secs: v["secs"].as_f64().context("summary: no secs")?,
    })
}

/// Runs the Python comparison.
pub async fn run(args: PythonBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.events > 0, "--events must be positive");
    anyhow::ensure!(args.batch_events > 0, "--batch-events must be positive");
    anyhow::ensure!(
        args.script.is_file(),
        "Python script {} not found (give --script)",
        args.script.display()
    );
    let check = Command::new(&args.python)
        .args(["-c", "import nats, msgpack, lz4, numpy, h5py"])
        .output()
        .with_context(|| format!("running {}", args.python))?;
    anyhow::ensure!(
        check.status.success(),
        "{} lacks nats-py, msgpack, lz4, numpy or h5py (pip install -r integration/python/requirements.txt):\n{}",
        args.python,
        String::from_utf8_lossy(&check.stderr)
    );
    let work = tempfile::tempdir()?;
    let file = work.path().join("run.h5");
    let spec = SampleSpec {
        height: args.height,
        width: args.width,
        ..SampleSpec::new(Preset::Sample, args.events)
    };
    {
        let file = file.clone();
        tokio::task::spawn_blocking(move || write_sample(&file, &spec)).await??;
    }
    let server = support::start_server().await?;
    let url = server.url();
    let _js = support::jetstream_with_stream(&url).await?;
    let limits = PullLimits::default();
    let gateway = support::BenchGateway::start(&url, 4, &limits).await?;
    println!(
        "python benchmark: HDF5 sample file of {} events, {}x{} u16 images ({:.0} MB), \
         {} events per batch, agent spool fsync {}, server {url}",
        args.events,
        args.height,
        args.width,
        (args.events * args.height * args.width * 2) as f64 / 1e6,
        args.batch_events,
        args.fsync
    );

    // Ingest.
    let batching = AgentBatching {
        max_events: args.batch_events,
        fsync: args.fsync,
        ..Default::default()
    };
    let toml = support::agent_toml(
        &url,
        &work.path().join("spool"),
        &batching,
        &support::hdf5_source("rs", 1, &file),
    );
    let report = support::run_agent(&toml, std::future::pending()).await?;
    anyhow::ensure!(
        report.events_published == args.events,
        "agent published {} of {} events",
        report.events_published,
        args.events
    );
    let agent = Rate::from_report(&report);
    // The agent again with Python's encoding (LZ4 without array filters).
    let toml = support::agent_toml(
        &url,
        &work.path().join("spool-noshuffle"),
        &batching,
        &support::hdf5_source("rsplain", 3, &file),
    )
    .replace("[encode]\n", "[encode]\nshuffle = false\n");
    let report = support::run_agent(&toml, std::future::pending()).await?;
    anyhow::ensure!(
        report.events_published == args.events,
        "agent (no shuffle) published {} of {} events",
        report.events_published,
        args.events
    );
    let agent_plain = Rate::from_report(&report);
    let py_publish = python(
        &args,
        vec![
            "publish".into(),
            "--url".into(),
            url.clone(),
            "--file".into(),
            file.display().to_string(),
            "--subject".into(),
            "lcls.bench.bench1.2.py".into(),
            "--batch-events".into(),
            args.batch_events.to_string(),
        ],
    )
    .await?;
    anyhow::ensure!(
        py_publish.events == args.events,
        "Python published {} of {} events",
        py_publish.events,
        args.events
    );

    // Pull what the agent published.
    let client = support::partner(&url).await?;
    let grant = support::grant(&client, "lcls.bench.bench1.1.rs", "py-bench").await?;
    let (_, partner) = support::partner_pull_counting(&client, &grant, args.events).await?;
    let py_pull = python(
        &args,
        vec![
            "pull".into(),
            "--url".into(),
            url.clone(),
            "--stream".into(),
            "LCLS_BENCH".into(),
            "--filter".into(),
            "lcls.bench.bench1.1.rs".into(),
            "--durable".into(),
            "py-pull".into(),
            "--events".into(),
            args.events.to_string(),
            "--batch".into(),
            limits.max_batch.to_string(),
        ],
    )
    .await?;
    anyhow::ensure!(
        py_pull.events == args.events && py_pull.raw_bytes == partner.raw_bytes,
        "Python pulled {} events ({} array bytes), the partner library {} ({} bytes)",
        py_pull.events,
        py_pull.raw_bytes,
        partner.events,
        partner.raw_bytes
    );
    gateway.handle.shutdown().await;

    println!();
    println!("{}", Rate::header("direction, pipeline"));
    println!(
        "{}",
        agent.row("ingest: lclstream agent (bitshuffle+lz4, spool, pipelined acks)")
    );
    println!(
        "{}",
        agent_plain.row("ingest: lclstream agent, lz4 without filters (as Python)")
    );
    println!(
        "{}",
        py_publish.row("ingest: Python h5py + msgpack + lz4 + nats-py publish (baseline)")
    );
    println!("{}", partner.row("pull: lclstream partner library"));
    println!(
        "{}",
        py_pull.row("pull: Python nats-py fetch + decode + ack (baseline)")
    );
    println!();
    println!(
        "lclstream / Python: ingest x{:.2} (x{:.2} without filters), pull x{:.2} (events/s); \
         compression ratio {:.1} vs {:.1}; ingest MB/s raw count MessagePack bytes, pull MB/s raw count array bytes",
        agent.events_per_sec() / py_publish.events_per_sec().max(1e-9),
        agent_plain.events_per_sec() / py_publish.events_per_sec().max(1e-9),
        partner.events_per_sec() / py_pull.events_per_sec().max(1e-9),
        agent.raw_bytes as f64 / agent.wire_bytes.max(1) as f64,
        py_publish.raw_bytes as f64 / py_publish.wire_bytes.max(1) as f64,
    );
    Ok(())
}
