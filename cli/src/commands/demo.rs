//! `lclstream demo`: the whole system on one machine, on embedded defaults.
//!
//! 1. a local nats-server with JetStream and the gateway's auth callout;
//! 2. generated keys and policies for one partner institution and one agent;
//! 3. the gateway (auth callout, request service, quotas, audit);
//! 4. a sample HDF5 run, published by the agent;
//! 5. a partner that requests the run through the gateway, pulls it with its
//!    durable consumer while the agent publishes, writes it to HDF5, and
//!    compares the file it wrote with the one the agent read;
//! 6. a live phase: a synthetic detector at a fixed rate, measuring latency
//!    from event read at the agent to event decoded at the partner.
//!
//! 7. with `--view`: a synthetic detector that keeps publishing and the web
//!    viewer (`lclstream view`) on it, until Ctrl-C.
//!
//! Exits non-zero if any event is missing, duplicated or different.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context as _};
use lclstream_agent::config::Preset;
use lclstream_agent::sample::{write_sample, SampleSpec};
use lclstream_agent::{Agent, AgentConfig, RunReport};
use lclstream_gateway::auth::{callout_server_blocks, CalloutServerSettings};
use lclstream_gateway::gateway::{AuthConfig, Gateway, GatewayConfig, GatewayHandle};
use lclstream_gateway::keys::GatewayKeys;
use lclstream_gateway::policy::{Grant, InstitutionKey, InstitutionPolicy, Quotas};
use lclstream_nats::server::NatsServer;
use lclstream_nats::subjects::DataSubject;
use lclstream_nats::wire::Event;
use lclstream_partner::hdf5_sink::Hdf5Sink;
use lclstream_partner::{
    BatchInfo, CallbackSink, DatasetRequest, EventKey, EventSink, PartnerClient, PartnerConfig,
    PullOptions, PullSummary, Start,
};

const INSTRUMENT: &str = "mfx";
const EXPERIMENT: &str = "mfxdemo01";
const INSTITUTION: &str = "demo-university";
const BACKFILL_RUN: u32 = 1;
const LIVE_RUN: u32 = 2;
const VIEW_RUN: u32 = 3;

/// Arguments of `lclstream demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Events in the sample HDF5 run.
    #[arg(long, default_value_t = 600)]
    pub events: u64,
    /// Detector frame height of the sample run.
    #[arg(long, default_value_t = 256)]
    pub height: u64,
    /// Detector frame width of the sample run.
    #[arg(long, default_value_t = 512)]
    pub width: u64,
    /// Seconds of the live phase (0 skips it).
    #[arg(long, default_value_t = 3.0)]
    pub live_seconds: f64,
    /// Event rate of the live phase, in Hz.
    #[arg(long, default_value_t = 120.0)]
    pub rate_hz: f64,
    /// Keep every file (server store and log, keys, policies, spool, sample
    /// run, received HDF5, audit log) in this directory instead of a
    /// temporary one that is removed at exit.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// After the checks, keep a synthetic detector publishing at --rate-hz
    /// and serve the web viewer on it until Ctrl-C.
    #[arg(long)]
    pub view: bool,
    /// Address of the viewer with --view (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub view_bind: std::net::SocketAddr,
}

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    ensure!(args.events > 0, "--events must be at least 1");
    ensure!(
        args.rate_hz > 0.0 && args.rate_hz <= 10_000.0,
        "--rate-hz must be in (0, 10000]"
    );
    let temp = tempfile::Builder::new()
        .prefix("lclstream-demo-")
        .tempdir()?;
    let dir = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.canonicalize()?
        }
        None => temp.path().to_path_buf(),
    };
    let world = World::start(&dir).await?;
    let outcome = run_phases(&args, &dir, &world).await;
    let audit_lines = || {
        std::fs::read_to_string(dir.join("audit.jsonl"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let viewed = match &outcome {
        Ok(summary) if args.view => {
            summary.print(audit_lines());
            Some(view_phase(&args, &dir, &world).await)
        }
        _ => None,
    };
    world.gateway.shutdown().await;
    let audit_lines = audit_lines();
    drop(world.server);
    let summary = outcome?;
    match viewed {
        Some(viewed) => viewed?,
        None => {
            summary.print(audit_lines);
            println!("  watch it live       lclstream demo --view (a web page on loopback)");
        }
    }
    if let Some(keep) = &args.keep {
        println!("  files kept in       {}", keep.display());
    }
    Ok(())
}

/// The running server and gateway, with the keys of the demo's clients.
struct World {
    server: NatsServer,
    gateway: GatewayHandle,
    partner_seed: String,
    agent_seed_file: PathBuf,
}

impl World {
    async fn start(dir: &Path) -> anyhow::Result<World> {
        let keys_dir = dir.join("gateway-keys");
        let gateway_keys = GatewayKeys::load_or_generate(&keys_dir, true)?;
        let settings = CalloutServerSettings::from_keys(&gateway_keys);
        let store = dir.join("nats");
        let server = tokio::task::spawn_blocking(move || {
            NatsServer::start_with(|config| {
                if let Some(js) = config.jetstream.as_mut() {
                    js.store_dir = store.join("jetstream");
                }
                config.blocks.extend(callout_server_blocks(&settings));
            })
        })
        .await??;
        println!(
            "nats-server         {} (JetStream, auth callout)",
            server.url()
        );

        // Keys and policies: one partner institution, one facility agent.
        let partner_key = nkeys::KeyPair::new_user();
        let agent_key = nkeys::KeyPair::new_user();
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies)?;
        write_policies(
            &policies,
            &partner_key.public_key(),
            &agent_key.public_key(),
        )?;
        let agent_seed_file = dir.join("agent.nk");
        std::fs::write(&agent_seed_file, agent_key.seed()?)?;

        let mut config = GatewayConfig::local(&server.url(), &policies);
        config.audit.file = Some(dir.join("audit.jsonl"));
        config.auth = Some(AuthConfig {
            keys_dir,
            encrypt: true,
            user_ttl_secs: 3600,
            callout: true,
            admin_keys: Vec::new(),
        });
        let gateway = Gateway::start(config)
            .await
            .context("starting the gateway")?;
        println!(
            "gateway             auth callout + request service, policies in {}",
            policies.display()
        );
        Ok(World {
            server,
            gateway,
            partner_seed: partner_key.seed()?,
            agent_seed_file,
        })
    }

    fn agent_config(&self, dir: &Path, source: &str) -> anyhow::Result<AgentConfig> {
        let text = format!(
            r#"
instrument = "{INSTRUMENT}"
experiment = "{EXPERIMENT}"
[nats]
url = "{url}"
nkey_seed_file = "{seed}"
name = "lclstream-demo-agent"
[spool]
dir = "{spool}"
[batch]
max_events = 32
max_bytes = 4194304
max_linger_ms = 20
[encode]
max_payload = 4194304
{source}
"#,
            url = self.server.url(),
            seed = self.agent_seed_file.display(),
            spool = dir.join("spool").display(),
        );
        Ok(AgentConfig::from_toml(&text)?)
    }

    async fn partner(&self) -> anyhow::Result<PartnerClient> {
        Ok(PartnerClient::connect(&PartnerConfig {
            url: self.server.url(),
            institution: INSTITUTION.into(),
            seed: Some(self.partner_seed.clone()),
        })
        .await?)
    }
}

fn write_policies(dir: &Path, partner_public: &str, agent_public: &str) -> anyhow::Result<()> {
    let policy = InstitutionPolicy {
        id: INSTITUTION.into(),
        name: "Demo University, structural biology".into(),
        keys: vec![InstitutionKey {
            public: partner_public.into(),
            comment: "generated by lclstream demo".into(),
            revoked: false,
            expires: None,
        }],
        grants: vec![Grant {
            stream: lclstream_nats::subjects::stream_name(INSTRUMENT),
            subjects: vec![lclstream_nats::subjects::experiment_filter(
                INSTRUMENT, EXPERIMENT,
            )],
            not_before: None,
            not_after: None,
        }],
        quotas: Quotas::default(),
    };
    std::fs::write(
        dir.join(format!("{INSTITUTION}.toml")),
        toml::to_string(&policy)?,
    )?;
    let roles = format!(
        "[[agent]]\nid = \"demo-agent\"\nname = \"Demo agent\"\ninstruments = [\"{INSTRUMENT}\"]\n\
         keys = [{{ public = \"{agent_public}\", comment = \"generated by lclstream demo\" }}]\n"
    );
    std::fs::write(dir.join("roles.toml"), roles)?;
    Ok(())
}

/// What the demo measured.
struct Summary {
    sample: String,
    agent: RunReport,
    pulled: PullSummary,
    pull_seconds: f64,
    received_file: PathBuf,
    live: Option<Latency>,
}

struct Latency {
    events: usize,
    rate_hz: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Summary {
    fn print(&self, audit_lines: usize) {
        let mb = |b: u64| b as f64 / 1e6;
        let a = &self.agent;
        let ratio = a.raw_bytes as f64 / a.wire_bytes.max(1) as f64;
        println!();
        println!("lclstream demo: every event arrived exactly once and matches the source");
        println!("  sample run          {}", self.sample);
        println!(
            "  agent               {} events in {} batches: {:.1} MB raw -> {:.1} MB on the wire (ratio {:.1}), {:.2} s, {:.0} MB/s raw",
            a.events_published,
            a.batches_published,
            mb(a.raw_bytes),
            mb(a.wire_bytes),
            ratio,
            a.elapsed.as_secs_f64(),
            mb(a.raw_bytes) / a.elapsed.as_secs_f64().max(1e-9)
        );
        println!(
            "  partner             {} events in {} messages ({:.1} MB) pulled, decoded, written and acknowledged in {:.2} s ({:.0} events/s)",
            self.pulled.events,
            self.pulled.messages,
            mb(self.pulled.bytes),
            self.pull_seconds,
            self.pulled.events as f64 / self.pull_seconds.max(1e-9)
        );
        println!("  received file       {}", self.received_file.display());
        if let Some(l) = &self.live {
            println!(
                "  live {:.0} Hz         {} events, latency read-at-agent to decoded-at-partner: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.rate_hz, l.events, l.p50_ms, l.p99_ms, l.max_ms
            );
        }
        println!("  audit log           {audit_lines} decisions");
    }
}

async fn run_phases(args: &DemoArgs, dir: &Path, world: &World) -> anyhow::Result<Summary> {
    // The sample run.
    let sample_path = dir.join(format!("{EXPERIMENT}-r{BACKFILL_RUN:04}.h5"));
    let spec = SampleSpec {
        height: args.height,
        width: args.width,
        ..SampleSpec::new(Preset::Sample, args.events)
    };
    write_sample(&sample_path, &spec)?;
    let sample = format!(
        "{} events of {}x{} u16 frames + scalars, {} ({:.1} MB)",
        args.events,
        args.height,
        args.width,
        sample_path.display(),
        std::fs::metadata(&sample_path)?.len() as f64 / 1e6
    );
    println!("sample run          {sample}");

    // The partner asks for the run before the agent publishes and pulls while it does.
    let partner = world
        .partner()
        .await
        .context("partner connects through the auth callout")?;
    let subject = DataSubject::new(INSTRUMENT, EXPERIMENT, BACKFILL_RUN, "jungfrau")
        .map_err(anyhow::Error::msg)?;
    let agent_config = world.agent_config(
        dir,
        &format!(
            "[[sources]]\nname = \"jungfrau\"\nrun = {BACKFILL_RUN}\n[sources.hdf5]\nfile = \"{}\"\npreset = \"sample\"\non_error = \"stop\"\n",
            sample_path.display()
        ),
    )?;
    // The agent creates the stream; the partner's request needs it to exist.
    let agent = tokio::spawn(Agent::new(agent_config).run(std::future::pending()));
    let grant = request_when_stream_exists(&partner, &subject.to_string(), "demo-backfill").await?;
    println!(
        "partner             {INSTITUTION} granted consumer {} on stream {}",
        grant.consumer, grant.stream
    );
    let received_file = dir.join("received.h5");
    let started = Instant::now();
    let mut sink = TimedSink {
        inner: Hdf5Sink::open(&received_file)?,
        last_write: None,
    };
    let options = PullOptions {
        max_events: Some(args.events),
        idle_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let pulled = tokio::time::timeout(
        Duration::from_secs(600),
        partner.pull(&grant, &options, &mut sink),
    )
    .await
    .context("the partner pull did not finish within 10 minutes")??;
    let pull_seconds = sink
        .last_write
        .unwrap_or_else(Instant::now)
        .duration_since(started)
        .as_secs_f64();
    let agent_report = tokio::time::timeout(Duration::from_secs(120), agent)
        .await
        .context("the agent did not finish")???;
    drop(sink);
    ensure!(
        agent_report.events_published == args.events,
        "the agent published {} of {} events",
        agent_report.events_published,
        args.events
    );
    ensure!(
        pulled.events == args.events && pulled.duplicates == 0 && pulled.rejected == 0,
        "the partner received {} events ({} duplicates, {} rejected) of {}",
        pulled.events,
        pulled.duplicates,
        pulled.rejected,
        args.events
    );
    verify_received(&sample_path, &received_file, args.events)?;

    let live = if args.live_seconds > 0.0 {
        Some(live_phase(args, dir, world, &partner).await?)
    } else {
        None
    };
    Ok(Summary {
        sample,
        agent: agent_report,
        pulled,
        pull_seconds,
        received_file,
        live,
    })
}

/// A sink that remembers when it last wrote, so that throughput excludes the
/// pull's final wait for more messages.
struct TimedSink<S> {
    inner: S,
    last_write: Option<Instant>,
}

impl<S: EventSink> EventSink for TimedSink<S> {
    fn contains(&self, key: &EventKey) -> bool {
        self.inner.contains(key)
    }

    fn write(&mut self, batch: &BatchInfo, events: Vec<Event>) -> anyhow::Result<()> {
        self.inner.write(batch, events)?;
        self.last_write = Some(Instant::now());
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.inner.flush()
    }
}

/// Requests a dataset, retrying while the stream does not exist yet.
async fn request_when_stream_exists(
    partner: &PartnerClient,
    filter: &str,
    label: &str,
) -> anyhow::Result<lclstream_partner::DatasetGrant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let request = DatasetRequest {
            filters: vec![filter.to_string()],
            start: Start::All,
            end: None,
            label: Some(label.to_string()),
        };
        match partner.request_dataset(&request).await {
            Ok(grant) => return Ok(grant),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("request not granted yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!("the gateway refused the dataset request: {e}"),
        }
    }
}

/// Compares the HDF5 file the partner wrote with the sample run the agent read.
fn verify_received(sample: &Path, received: &Path, events: u64) -> anyhow::Result<()> {
    let input = hdf5::File::open(sample)?;
    let output = hdf5::File::open(received)?;
    let group = output.group(&format!("{EXPERIMENT}/jungfrau"))?;
    let index: Vec<u64> = group.dataset("index")?.read_raw()?;
    ensure!(
        index == (0..events).collect::<Vec<u64>>(),
        "received event indices are not 0..{events} in order"
    );
    let sent: Vec<u16> = input.dataset("jungfrau/image")?.read_raw()?;
    let got: Vec<u16> = group.dataset("jungfrau")?.read_raw()?;
    ensure!(
        sent == got,
        "received detector images differ from the sample run"
    );
    for scalar in ["photon_energy_ev", "pulse_energy_mj"] {
        let sent: Vec<f64> = input.dataset(scalar)?.read_raw()?;
        let got: Vec<f64> = group.dataset(scalar)?.read_raw()?;
        ensure!(sent == got, "received {scalar} differs from the sample run");
    }
    let sent: Vec<i64> = input.dataset("pulse_id")?.read_raw()?;
    let got: Vec<i64> = group.dataset("pulse_id")?.read_raw()?;
    ensure!(sent == got, "received pulse_id differs from the sample run");
    Ok(())
}

/// A synthetic detector at a fixed rate; latency from read to decode.
async fn live_phase(
    args: &DemoArgs,
    dir: &Path,
    world: &World,
    partner: &PartnerClient,
) -> anyhow::Result<Latency> {
    let events = ((args.live_seconds * args.rate_hz).ceil() as u64).max(1);
    let subject = DataSubject::new(INSTRUMENT, EXPERIMENT, LIVE_RUN, "detector")
        .map_err(anyhow::Error::msg)?;
    let grant = request_when_stream_exists(partner, &subject.to_string(), "demo-live").await?;
    let config = world.agent_config(
        dir,
        &format!(
            "[[sources]]\nname = \"detector\"\nrun = {LIVE_RUN}\n[sources.synthetic]\nheight = {}\nwidth = {}\nrate_hz = {}\nevents = {events}\n",
            args.height, args.width, args.rate_hz
        ),
    )?;
    println!(
        "live phase          synthetic detector at {} Hz for {} s",
        args.rate_hz, args.live_seconds
    );
    let agent = tokio::spawn(Agent::new(config).run(std::future::pending()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(events as usize)));
    let mut sink = {
        let latencies = latencies.clone();
        // Milliseconds from the event's read time at the agent (`time_ns`) to its decoding here.
        CallbackSink::new(move |_: &BatchInfo, event: Event| -> anyhow::Result<()> {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
            let ms = now.saturating_sub(event.time_ns) as f64 / 1e6;
            latencies
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(ms);
            Ok(())
        })
    };
    let options = PullOptions {
        max_events: Some(events),
        idle_timeout: Duration::from_secs(20),
        batch_messages: 1,
        ..Default::default()
    };
    let pulled = tokio::time::timeout(
        Duration::from_secs_f64(args.live_seconds + 120.0),
        partner.pull(&grant, &options, &mut sink),
    )
    .await
    .context("the live pull did not finish")??;
    tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .context("the live agent did not finish")???;
    ensure!(
        pulled.events == events && pulled.duplicates == 0,
        "live phase: received {} events ({} duplicates) of {events}",
        pulled.events,
        pulled.duplicates
    );
    let mut ms = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    ms.sort_by(f64::total_cmp);
    let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        events: ms.len(),
        rate_hz: args.rate_hz,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: ms[ms.len() - 1],
    })
}

/// A synthetic detector publishing until Ctrl-C, watched by the web viewer
/// through the partner's own consumer.
async fn view_phase(args: &DemoArgs, dir: &Path, world: &World) -> anyhow::Result<()> {
    let subject = DataSubject::new(INSTRUMENT, EXPERIMENT, VIEW_RUN, "detector")
        .map_err(anyhow::Error::msg)?;
    // A day of events: the detector runs until Ctrl-C stops it.
    let events = (args.rate_hz * 86_400.0) as u64;
    let config = world.agent_config(
        dir,
        &format!(
            "[[sources]]\nname = \"detector\"\nrun = {VIEW_RUN}\n[sources.synthetic]\nheight = {}\nwidth = {}\nrate_hz = {}\nevents = {events}\n",
            args.height, args.width, args.rate_hz
        ),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(Agent::new(config).run(async move {
        let _ = stopped.await;
    }));
    let partner = world.partner().await?;
    let viewer = lclstream_viewer::Viewer::start_partner(
        partner,
        args.view_bind,
        &subject.to_string(),
        None,
    )
    .await?;
    println!(
        "live view           synthetic detector at {} Hz on {subject}",
        args.rate_hz
    );
    println!("viewer              {}", viewer.url());
    println!("                    (Ctrl-C stops the demo)");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    drop(viewer);
    let _ = stop.send(());
    let report = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .context("the live view's agent did not stop")???;
    println!(
        "live view           stopped after {} events",
        report.events_published
    );
    Ok(())
}
