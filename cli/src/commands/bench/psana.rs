//! `lclstream bench psana`: the agent's psana source against psana itself on
//! the same xtc2 run (written by psana's `xtcwriter`) in the same run:
//! psana iterating the run in Python (baseline; both Python processes are
//! timed from start to exit, imports included), the psana helper's frames
//! read and decoded by the agent's reader (no publishing), and the whole agent
//! (helper -> batch -> encode -> spool -> publish into JetStream).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use lclstream_agent::config::{PsanaConfig, PsanaField};

use super::support::{self, AgentBatching, Rate};

/// Arguments of `lclstream bench psana`.
#[derive(clap::Args)]
pub struct PsanaBenchArgs {
    /// Events in the xtc2 run.
    #[arg(long, default_value_t = 20000)]
    pub events: u64,
    /// Events per agent batch.
    #[arg(long, default_value_t = 64)]
    pub batch_events: usize,
    /// fsync every agent spool append (as in production).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Python with psana (default: $LCLSTREAM_PSANA_PYTHON, else the workspace's .venv-psana).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

// Timed from outside, like the helper: interpreter start and imports included.
const DIRECT: &str = r#"
import json, sys
from psana import DataSource
run = next(DataSource(files=sys.argv[1], skip_calib_load="all").runs())
cspad = run.Detector("xppcspad")
n = nbytes = 0
for evt in run.events():
    nbytes += cspad.raw.raw(evt).nbytes
    n += 1
print(json.dumps({"events": n, "bytes": nbytes}))
"#;

/// Runs the psana comparison.
pub async fn run(args: PsanaBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.events > 0, "--events must be positive");
    let python = args
        .python
        .clone()
        .or_else(|| std::env::var_os(lclstream_agent::psana_source::PYTHON_ENV).map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../.venv-psana/bin/python"
            ))
        });
    let site = Command::new(&python)
        .args([
            "-c",
            "import os, psana, msgpack; print(os.path.dirname(os.path.dirname(psana.__file__)))",
        ])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        site.status.success(),
        "{} cannot import psana and msgpack (scripts/setup installs them into .venv-psana; or give --python):\n{}",
        python.display(),
        String::from_utf8_lossy(&site.stderr)
    );
    let site = PathBuf::from(String::from_utf8(site.stdout)?.trim());
    let work = tempfile::tempdir()?;
    let file = work.path().join("xpptut15-r0014.xtc2");
    let status = Command::new(site.join("bin/xtcwriter"))
        .arg("-f")
        .arg(&file)
        .args(["-n", &args.events.to_string()])
        .env(
            "LD_LIBRARY_PATH",
            format!(
                "{}:{}",
                site.join("psana").display(),
                site.join("lib").display()
            ),
        )
        .stdout(std::process::Stdio::null())
        .status()
        .context("running xtcwriter")?;
    anyhow::ensure!(status.success(), "xtcwriter failed ({status})");
    println!(
        "psana benchmark: xtcwriter run of {} events ({:.1} MB), detector xppcspad raw u16 (2,3,6), \
         {} events per batch, agent spool fsync {}",
        args.events,
        std::fs::metadata(&file)?.len() as f64 / 1e6,
        args.batch_events,
        args.fsync
    );

    // Baseline: psana alone.
    let started = Instant::now();
    let out = Command::new(&python)
        .args(["-c", DIRECT])
        .arg(&file)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "psana direct read failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let direct = Rate {
        events: v["events"].as_u64().context("events")?,
        raw_bytes: v["bytes"].as_u64().context("bytes")?,
        wire_bytes: 0,
        secs: started.elapsed().as_secs_f64(),
    };

    // The helper and the agent's reader, without publishing.
    let config = PsanaConfig {
        python: Some(python.clone()),
        restarts: 0,
        ..PsanaConfig::for_files(
            vec![file.clone()],
            vec![PsanaField {
                detector: "xppcspad".into(),
                data: "raw".into(),
                field: Some("cspad".into()),
            }],
        )
    };
    let reader = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let (mut events, mut bytes) = (0u64, 0u64);
        let mut count = |e: lclstream_nats::wire::Event| {
            events += 1;
            bytes += e.arrays.values().map(|a| a.data.len() as u64).sum::<u64>();
            true
        };
        lclstream_agent::psana_source::read_events(&config, 14, 0, &|| false, &mut count)
            .map_err(anyhow::Error::msg)?;
        anyhow::Ok(Rate {
            events,
            raw_bytes: bytes,
            wire_bytes: 0,
            secs: started.elapsed().as_secs_f64(),
        })
    })
    .await??;
    anyhow::ensure!(
        reader.events == direct.events,
        "the helper read {} of {} events",
        reader.events,
        direct.events
    );

    // The whole agent.
    let server = support::start_server().await?;
    let url = server.url();
    let _js = support::jetstream_with_stream(&url).await?;
    let batching = AgentBatching {
        max_events: args.batch_events,
        fsync: args.fsync,
        ..Default::default()
    };
    let source = format!(
        "[[sources]]\nname = \"xpp\"\nrun = 14\n[sources.psana]\nfiles = [\"{}\"]\npython = \"{}\"\nfields = [{{ detector = \"xppcspad\", field = \"cspad\" }}]\n",
        file.display(),
        python.display()
    );
    let toml = support::agent_toml(&url, &work.path().join("spool"), &batching, &source);
    let report = support::run_agent(&toml, std::future::pending()).await?;
    anyhow::ensure!(
        report.events_published == args.events,
        "agent published {} of {} events",
        report.events_published,
        args.events
    );
    let agent = Rate::from_report(&report);

    println!();
    println!("{}", Rate::header("pipeline"));
    println!(
        "{}",
        direct.row("psana in Python, reading xppcspad raw (baseline)")
    );
    println!(
        "{}",
        reader.row("psana helper -> pipe -> agent reader (no publish)")
    );
    println!(
        "{}",
        agent.row("lclstream agent, psana source -> JetStream")
    );
    println!();
    println!(
        "helper / psana x{:.2}, agent / psana x{:.2} (events/s); MB/s raw count detector bytes \
         (the agent's also count scalars and framing)",
        reader.events_per_sec() / direct.events_per_sec().max(1e-9),
        agent.events_per_sec() / direct.events_per_sec().max(1e-9),
    );
    Ok(())
}
