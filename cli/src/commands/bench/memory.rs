//! `lclstream bench memory`: peak memory (VmHWM, VmRSS from `/proc`) of the
//! agent and the gateway run as child processes of this same binary: the
//! agent on a file backfill and on a stalled broker (the server is stopped
//! mid-run, the spool fills to its limit and reading waits), the gateway
//! under a burst of requests. Baseline: an idle process of the same binary
//! (`lclstream nats server`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lclstream_agent::config::Preset;
use lclstream_agent::sample::{write_sample, SampleSpec};
use lclstream_nats::server::{free_port, http_get};
use lclstream_nats::streams::PullLimits;
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::EncodeOptions;
use lclstream_partner::{DatasetRequest, ReleaseRequest, Start};

use super::support::{self, mib, AgentBatching, Memory};

/// Arguments of `lclstream bench memory`.
#[derive(clap::Args)]
pub struct MemoryBenchArgs {
    /// Events in the larger HDF5 backfill file (the smaller one has a quarter).
    #[arg(long, default_value_t = 2000)]
    pub events: u64,
    /// Frame height (file and synthetic detector).
    #[arg(long, default_value_t = 512)]
    pub height: u64,
    /// Frame width.
    #[arg(long, default_value_t = 512)]
    pub width: u64,
    /// Spool limit of the agent in MiB (`spool.max_bytes`).
    #[arg(long, default_value_t = 32)]
    pub spool_mib: u64,
    /// Seconds the broker stays stopped in the stalled case.
    #[arg(long, default_value_t = 6.0)]
    pub stall_seconds: f64,
    /// Gateway requests in the burst.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// Concurrent requesters in the burst.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

/// A child process of this binary, sampled for memory, stopped on drop.
struct Sampled {
    child: Child,
    peak: Arc<Mutex<Memory>>,
    running: Arc<AtomicBool>,
}

impl Sampled {
    /// Starts `lclstream <args>` with output into `log`, sampling every 20 ms.
    fn spawn(args: &[&str], log: &Path) -> anyhow::Result<Sampled> {
        let exe = std::env::current_exe().context("locating the lclstream binary")?;
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} {}", exe.display(), args.join(" ")))?;
        let peak = Arc::new(Mutex::new(Memory::default()));
        let running = Arc::new(AtomicBool::new(true));
        let (pid, p, r) = (child.id(), peak.clone(), running.clone());
        std::thread::spawn(move || {
            // Bounded by the process: /proc/<pid> disappears (or stops having Vm lines) when it exits.
            while r.load(Ordering::Relaxed) {
                match support::memory_of(Some(pid)) {
                    Some(m) => {
                        let mut peak = p.lock().expect("not poisoned");
                        peak.hwm_kib = peak.hwm_kib.max(m.hwm_kib);
                        peak.rss_kib = peak.rss_kib.max(m.rss_kib);
                    }
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Ok(Sampled {
            child,
            peak,
            running,
        })
    }

    /// Peak VmHWM and largest sampled VmRSS so far.
    fn peak(&self) -> Memory {
        *self.peak.lock().expect("not poisoned")
    }

    /// Current memory (none once exited).
    fn now(&self) -> Option<Memory> {
        support::memory_of(Some(self.child.id()))
    }

    /// Sends `signal` (`TERM`, `INT`) with kill(1).
    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status();
    }

    /// Waits up to `timeout` for the process to exit; kills it after that.
    async fn wait(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.running.store(false, Ordering::Relaxed);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait()?;
                self.running.store(false, Ordering::Relaxed);
                anyhow::bail!(
                    "process {} did not exit within {timeout:?} ({status})",
                    self.child.id()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` and waits up to 30 s.
    async fn stop(&mut self, signal: &str) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(signal);
        self.wait(Duration::from_secs(30)).await
    }
}

impl Drop for Sampled {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One table row.
struct Row {
    process: &'static str,
    case: String,
    memory: Memory,
    note: String,
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

fn write_agent_config(dir: &Path, name: &str, toml: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, toml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Reads the agent's `lclstream_agent_spool_bytes` gauge from its metrics endpoint.
fn spool_bytes(port: u16) -> Option<u64> {
    let (status, body) = http_get(
        ([127, 0, 0, 1], port).into(),
        "/metrics",
        Duration::from_secs(2),
    )
    .ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find(|l| l.starts_with("lclstream_agent_spool_bytes "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// Runs the memory benchmark.
pub async fn run(args: MemoryBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.stall_seconds > 0.0 && args.stall_seconds < 600.0,
        "--stall-seconds must be between 0 and 600"
    );
    anyhow::ensure!(
        args.concurrency > 0 && args.concurrency <= 256,
        "--concurrency must be between 1 and 256"
    );
    let work = tempfile::tempdir()?;
    let mut rows = Vec::new();
    let described = DetectorModel {
        height: args.height,
        width: args.width,
        ..Default::default()
    }
    .describe();
    println!(
        "memory benchmark: agent spool limit {} MiB, frames from the synthetic detector \
         ({described}), {} file events, broker stalled {} s, {} gateway requests from {} requesters",
        args.spool_mib,
        args.events,
        args.stall_seconds,
        args.requests,
        args.concurrency
    );

    // Baseline: the same binary, idle.
    let mut idle = Sampled::spawn(&["nats", "server"], &work.path().join("idle.log"))?;
    let idle_started = Instant::now();
    while !std::fs::read_to_string(work.path().join("idle.log"))
        .unwrap_or_default()
        .contains("press Ctrl-C")
    {
        anyhow::ensure!(
            idle_started.elapsed() < Duration::from_secs(30),
            "`lclstream nats server` did not start: {}",
            log_tail(&work.path().join("idle.log"))
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_memory = idle.now().unwrap_or_else(|| idle.peak());
    idle.stop("INT").await?;
    rows.push(Row {
        process: "lclstream nats server",
        case: "idle (baseline)".into(),
        memory: idle_memory,
        note: "same binary, runtime started, waiting".into(),
    });

    // Agent: HDF5 file backfills of two sizes (memory must not follow the file size).
    let server = support::start_server().await?;
    let url = server.url();
    let spool_limit = args.spool_mib << 20;
    let batching = AgentBatching {
        spool_bytes: spool_limit,
        ..Default::default()
    };
    for (run, events) in [(1u32, (args.events / 4).max(1)), (2, args.events.max(1))] {
        let file = work.path().join(format!("backfill{run}.h5"));
        let spec = SampleSpec {
            height: args.height,
            width: args.width,
            ..SampleSpec::new(Preset::Sample, events)
        };
        {
            let file = file.clone();
            tokio::task::spawn_blocking(move || write_sample(&file, &spec)).await??;
        }
        let config = write_agent_config(
            work.path(),
            &format!("backfill{run}"),
            &support::agent_toml(
                &url,
                &work.path().join(format!("spool-backfill{run}")),
                &batching,
                &support::hdf5_source(&format!("backfill{run}"), run, &file),
            ),
        )?;
        let log = work.path().join(format!("agent-backfill{run}.log"));
        let started = Instant::now();
        let mut agent =
            Sampled::spawn(&["agent", "--config", &config.display().to_string()], &log)?;
        let status = agent.wait(Duration::from_secs(300)).await?;
        anyhow::ensure!(
            status.success(),
            "agent backfill failed ({status}):\n{}",
            log_tail(&log)
        );
        let secs = started.elapsed().as_secs_f64();
        let file_mb = (events * args.height * args.width * 2) as f64 / 1e6;
        rows.push(Row {
            process: "lclstream agent",
            case: format!("HDF5 file backfill, {events} events"),
            memory: agent.peak(),
            note: format!("{file_mb:.0} MB in {secs:.1} s (process start to exit)"),
        });
        let _ = std::fs::remove_file(&file);
    }

    // Agent: stalled broker. Its own server, so stopping it disturbs nothing else.
    let mut stalled_server = support::start_server().await?;
    let metrics_port = free_port()?;
    let sources = format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n{}",
        support::synthetic_source("stall", 2, args.height, args.width, None, 0.0)
    );
    let mut batching = batching;
    batching.fsync = true;
    let toml = support::agent_toml(
        &stalled_server.url(),
        &work.path().join("spool-stall"),
        &batching,
        &sources,
    )
    // Quick retries so the agent resumes soon after the server returns.
    .replace(
        "drain_timeout_ms = 20000",
        "drain_timeout_ms = 10000\nack_timeout_ms = 1000\nretry_max_ms = 500",
    );
    let config = write_agent_config(work.path(), "stall", &toml)?;
    let log = work.path().join("agent-stall.log");
    let mut agent = Sampled::spawn(&["agent", "--config", &config.display().to_string()], &log)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let flowing = agent.peak();
    let flowing_spool = spool_bytes(metrics_port).unwrap_or(0);
    tokio::task::block_in_place(|| stalled_server.stop());
    let stall_started = Instant::now();
    let mut max_spool = 0u64;
    while stall_started.elapsed() < Duration::from_secs_f64(args.stall_seconds) {
        if let Some(b) = spool_bytes(metrics_port) {
            max_spool = max_spool.max(b);
        }
        anyhow::ensure!(
            agent.now().is_some(),
            "agent exited while the broker was away:\n{}",
            log_tail(&log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stalled = agent.peak();
    tokio::task::block_in_place(|| stalled_server.restart())?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_spool = spool_bytes(metrics_port).unwrap_or(0);
    let recovered = agent.peak();
    let status = agent.stop("TERM").await?;
    anyhow::ensure!(
        status.success(),
        "agent (stalled case) failed ({status}):\n{}",
        log_tail(&log)
    );
    rows.push(Row {
        process: "lclstream agent",
        case: "synthetic, broker up (first 3 s)".into(),
        memory: flowing,
        note: format!("spool {:.1} MiB", flowing_spool as f64 / 1048576.0),
    });
    rows.push(Row {
        process: "lclstream agent",
        case: format!("broker stopped for {} s", args.stall_seconds),
        memory: stalled,
        note: format!(
            "spool filled to {:.1} MiB of {} MiB, reading waited",
            max_spool as f64 / 1048576.0,
            args.spool_mib
        ),
    });
    rows.push(Row {
        process: "lclstream agent",
        case: "broker back (3 s)".into(),
        memory: recovered,
        note: format!(
            "spool {:.1} MiB 3 s after restart",
            after_spool as f64 / 1048576.0
        ),
    });
    drop(stalled_server);

    // Gateway under a burst of requests.
    let js = support::jetstream_with_stream(&url).await?;
    let model = DetectorModel {
        height: 64,
        width: 64,
        ..Default::default()
    };
    for run in 1..=4 {
        support::publish_synthetic(
            &js,
            &format!("lcls.bench.bench1.{run}.gw"),
            run,
            "gw",
            &model,
            16,
            4,
            &EncodeOptions::default(),
        )
        .await?;
    }
    let policies = work.path().join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(
        policies.join(format!("{}.toml", support::INSTITUTION)),
        support::policy_toml(args.concurrency as u32 + 4, &PullLimits::default()),
    )?;
    let log = work.path().join("gateway.log");
    let mut gateway = Sampled::spawn(
        &[
            "gateway",
            "--nats-url",
            &url,
            "--policies",
            &policies.display().to_string(),
        ],
        &log,
    )?;
    let client = support::partner(&url).await?;
    let ready = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), client.usage()).await {
            Ok(Ok(_)) => break,
            _ if ready.elapsed() > Duration::from_secs(30) => {
                anyhow::bail!("gateway did not answer within 30 s:\n{}", log_tail(&log))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gateway_idle = gateway.now().unwrap_or_default();
    let burst_started = Instant::now();
    let per_task = args.requests.div_ceil(args.concurrency);
    let mut tasks = Vec::new();
    for t in 0..args.concurrency {
        let c = support::partner(&url).await?;
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            for i in 0..per_task {
                // A mix: list, usage, and request + release of a labelled dataset.
                match i % 4 {
                    0 => drop(c.list().await?),
                    1 => drop(c.usage().await?),
                    _ => {
                        let grant = c
                            .request_dataset(&DatasetRequest {
                                filters: vec![format!("lcls.bench.bench1.{}.gw", 1 + i % 4)],
                                start: Start::All,
                                end: None,
                                label: Some(format!("burst-{t}-{i}")),
                            })
                            .await?;
                        c.release(&ReleaseRequest {
                            consumer: Some(grant.consumer),
                            label: None,
                        })
                        .await?;
                        done += 1;
                    }
                }
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut requests = 0;
    for t in tasks {
        requests += support::step("request burst", t).await???;
    }
    let burst_secs = burst_started.elapsed().as_secs_f64();
    let burst = gateway.peak();
    let status = gateway.stop("TERM").await?;
    anyhow::ensure!(
        status.success(),
        "gateway failed ({status}):\n{}",
        log_tail(&log)
    );
    rows.push(Row {
        process: "lclstream gateway",
        case: "idle, connected".into(),
        memory: gateway_idle,
        note: "policies loaded".into(),
    });
    rows.push(Row {
        process: "lclstream gateway",
        case: format!("burst of {requests} requests"),
        memory: burst,
        note: format!(
            "{} requesters, {:.0} requests/s (list, usage, request+release)",
            args.concurrency,
            requests as f64 / burst_secs
        ),
    });
    drop(server);

    println!();
    println!("| process | case | VmHWM MiB | peak VmRSS MiB | vs idle baseline | note |");
    println!("|---|---|---:|---:|---:|---|");
    let base = idle_memory.hwm_kib.max(1) as f64;
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | x{:.1} | {} |",
            r.process,
            r.case,
            mib(r.memory.hwm_kib),
            mib(r.memory.rss_kib),
            r.memory.hwm_kib as f64 / base,
            r.note
        );
    }
    println!();
    println!(
        "peak over idle: agent backfill of {} events +{:.0} MiB, agent stalled broker +{:.0} MiB (spool limit {} MiB), gateway burst +{:.0} MiB",
        args.events,
        mib(rows[2].memory.hwm_kib.saturating_sub(idle_memory.hwm_kib)),
        mib(stalled.hwm_kib.saturating_sub(idle_memory.hwm_kib)),
        args.spool_mib,
        mib(burst.hwm_kib.saturating_sub(idle_memory.hwm_kib)),
    );
    Ok(())
}
