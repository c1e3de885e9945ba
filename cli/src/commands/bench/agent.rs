//! `lclstream bench agent`: agent throughput from an HDF5 file and from the
//! synthetic detector into a file-backed stream on a harness nats-server,
//! next to a raw async-nats publisher sending the same pre-encoded payloads
//! to the same server in the same run (the ceiling).

use std::future::IntoFuture;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures::stream::{FuturesOrdered, StreamExt};
use lclstream_agent::config::Preset;
use lclstream_agent::hdf5_source::{Hdf5Reader, Layout};
use lclstream_agent::sample::{write_sample, SampleSpec};
use lclstream_agent::source::{detector_model, synthetic_event};
use lclstream_agent::{Agent, AgentConfig, RunReport};
use lclstream_nats::server::NatsServer;
use lclstream_nats::streams::StreamSettings;
use lclstream_nats::wire::{self, headers as h, Batch, EncodeOptions, Event, WireMessage};

/// Arguments of `lclstream bench agent`.
#[derive(clap::Args)]
pub struct AgentBenchArgs {
    /// Target duration of each case in seconds (sets the event counts from a short probe).
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Frame height.
    #[arg(long, default_value_t = 512)]
    pub height: u64,
    /// Frame width.
    #[arg(long, default_value_t = 512)]
    pub width: u64,
    /// Events per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_events: usize,
    /// Publishes in flight.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Upper bound of events per case.
    #[arg(long, default_value_t = 6000)]
    pub max_events: u64,
    /// fsync every spool append (as in production).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
}

/// Throughput of one case.
struct Figures {
    events: u64,
    raw: u64,
    wire: u64,
    secs: f64,
}

impl Figures {
    fn from_report(r: &RunReport) -> Figures {
        Figures {
            events: r.events_published,
            raw: r.raw_bytes,
            wire: r.wire_bytes,
            secs: r.elapsed.as_secs_f64(),
        }
    }

    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }

    fn line(&self, name: &str) -> String {
        let mb = |b: u64| b as f64 / 1e6 / self.secs.max(1e-9);
        format!(
            "{name:<34} {:>7} ev {:>7.2} s {:>9.1} ev/s {:>9.1} MB/s raw {:>8.1} MB/s wire  (x{:.2})",
            self.events,
            self.secs,
            self.events_per_sec(),
            mb(self.raw),
            mb(self.wire),
            self.raw as f64 / self.wire.max(1) as f64
        )
    }
}

/// Peak resident memory of this process (VmHWM) in MiB.
fn peak_rss_mib() -> f64 {
    super::support::memory_of(None)
        .map(|m| super::support::mib(m.hwm_kib))
        .unwrap_or(0.0)
}

/// `sync`: the `spool.sync` policy (`auto` is the default).
fn agent_config(
    url: &str,
    spool: &Path,
    args: &AgentBenchArgs,
    sync: &str,
    sources: &str,
) -> anyhow::Result<AgentConfig> {
    let text = format!(
        r#"
instrument = "bench"
experiment = "bench1"
[nats]
url = "{url}"
[spool]
dir = "{}"
fsync = {}
sync = "{sync}"
max_bytes = 536870912
[batch]
max_events = {}
max_bytes = 16777216
max_linger_ms = 100
[encode]
max_payload = 8388608
[publish]
max_in_flight = {}
{sources}
"#,
        spool.display(),
        args.fsync,
        args.batch_events,
        args.in_flight
    );
    Ok(AgentConfig::from_toml(&text)?)
}

/// Pre-encoded messages of the raw publisher, accumulated batch by batch.
#[derive(Default)]
struct PreEncoded {
    messages: Vec<WireMessage>,
    raw: u64,
    wire: u64,
    events: u64,
}

impl PreEncoded {
    /// Encodes one batch like the agent does; the ids get their own prefix
    /// so the agent's stored ids do not deduplicate these.
    fn push(&mut self, source: &str, events: Vec<Event>) -> anyhow::Result<()> {
        let options = EncodeOptions {
            max_payload: 8 * 1024 * 1024,
            ..Default::default()
        };
        self.events += events.len() as u64;
        let encoded = wire::encode(Batch::new("raw", 1, source, events)?, &options)?;
        self.raw += encoded.raw_size as u64;
        self.wire += encoded.wire_size as u64;
        for mut m in encoded.messages {
            let id = format!("raw/{}", h::get(&m.headers, h::MSG_ID).unwrap_or_default());
            m.headers.insert(h::MSG_ID, id.as_str());
            self.messages.push(m);
        }
        Ok(())
    }
}

/// Pipelined JetStream publishing: at most `in_flight` acks outstanding.
struct Pipelined<'a> {
    js: &'a jetstream::Context,
    subject: &'a str,
    in_flight: usize,
    pending: FuturesOrdered<<jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture>,
}

impl<'a> Pipelined<'a> {
    fn new(js: &'a jetstream::Context, subject: &'a str, in_flight: usize) -> Self {
        Pipelined {
            js,
            subject,
            in_flight: in_flight.max(1),
            pending: FuturesOrdered::new(),
        }
    }

    async fn send(&mut self, m: &WireMessage) -> anyhow::Result<()> {
        if self.pending.len() >= self.in_flight {
            self.pending.next().await.context("ack")??;
        }
        let ack = self
            .js
            .publish_with_headers(
                self.subject.to_string(),
                m.headers.clone(),
                m.payload.clone(),
            )
            .await?;
        self.pending.push_back(ack.into_future());
        Ok(())
    }

    async fn finish(mut self) -> anyhow::Result<()> {
        while let Some(ack) = self.pending.next().await {
            ack?;
        }
        Ok(())
    }
}

/// The ceiling: a raw pipelined JetStream publisher of pre-encoded messages.
async fn raw_publish(
    js: &jetstream::Context,
    subject: &str,
    messages: &[WireMessage],
    in_flight: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut publisher = Pipelined::new(js, subject, in_flight);
    for m in messages {
        publisher.send(m).await?;
    }
    publisher.finish().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// A second baseline: what one would write by hand without the agent's
/// guarantees. One thread reads and encodes the file batch by batch, the
/// publisher sends with pipelined acks; no spool, no fsync, no checkpoint.
async fn hand_written_publish(
    js: &jetstream::Context,
    file: &Path,
    subject: &str,
    per_batch: u64,
    in_flight: usize,
) -> anyhow::Result<Figures> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<PreEncoded>>(4);
    let file = file.to_path_buf();
    let started = Instant::now();
    let reader = tokio::task::spawn_blocking(move || {
        let run = || -> anyhow::Result<()> {
            let reader = Hdf5Reader::open(&file, &Layout::preset(Preset::Sample))?;
            let mut at = 0;
            while at < reader.events() {
                let mut pre = PreEncoded::default();
                pre.push("hand", reader.read(at, at + per_batch, at)?)?;
                if tx.blocking_send(Ok(pre)).is_err() {
                    break;
                }
                at += per_batch;
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut figures = Figures {
        events: 0,
        raw: 0,
        wire: 0,
        secs: 0.0,
    };
    let mut publisher = Pipelined::new(js, subject, in_flight);
    while let Some(pre) = rx.recv().await {
        let pre = pre?;
        figures.events += pre.events;
        figures.raw += pre.raw;
        figures.wire += pre.wire;
        for m in &pre.messages {
            publisher.send(m).await?;
        }
    }
    publisher.finish().await?;
    reader.await?;
    figures.secs = started.elapsed().as_secs_f64();
    Ok(figures)
}

async fn run_agent(config: AgentConfig) -> anyhow::Result<Figures> {
    let report = tokio::time::timeout(
        Duration::from_secs(600),
        Agent::new(config).run(std::future::pending()),
    )
    .await
    .context("agent case timed out")??;
    Ok(Figures::from_report(&report))
}

/// Runs the agent benchmark.
pub async fn run(args: AgentBenchArgs) -> anyhow::Result<()> {
    let server = NatsServer::start_default().context("starting the harness nats-server")?;
    let url = server.url();
    let work = tempfile::tempdir()?;
    let client = async_nats::connect(&url).await?;
    let js = jetstream::new(client);
    js.get_or_create_stream(StreamSettings::for_instrument("bench").to_config())
        .await?;
    js.get_or_create_stream(StreamSettings::for_instrument("raw").to_config())
        .await?;
    let frame_mb = (args.height * args.width * 2) as f64 / 1e6;
    println!(
        "agent benchmark: {}x{} u16 frames ({frame_mb:.2} MB), {} events/batch, {} in flight, fsync {}, server {}",
        args.height, args.width, args.batch_events, args.in_flight, args.fsync, url
    );

    // Size the cases so each takes about `seconds`: encoding is the agent's
    // costliest stage, so time it on one batch of synthetic events.
    let synthetic_config = lclstream_agent::config::SyntheticConfig {
        field: "detector".into(),
        height: args.height,
        width: args.width,
        dtype: "u16".into(),
        rate_hz: 0.0,
        photon_density: 0.02,
        read_noise: 3.0,
        mode: "adu".into(),
        peaks: 30,
        events: None,
        seed: 1,
    };
    let probe_events: Vec<Event> = {
        let model = detector_model(&synthetic_config);
        (0..args.batch_events.max(1) as u64)
            .map(|i| synthetic_event(&synthetic_config, &model, i, 0))
            .collect()
    };
    let probe_count = probe_events.len() as f64;
    let probe_started = Instant::now();
    PreEncoded::default().push("probe", probe_events)?;
    let encode_rate = probe_count / probe_started.elapsed().as_secs_f64().max(1e-6);
    let events = ((encode_rate * args.seconds) as u64).clamp(32, args.max_events.max(32));

    // HDF5 file case.
    let file = work.path().join("bench.h5");
    let spec = SampleSpec {
        height: args.height,
        width: args.width,
        ..SampleSpec::new(Preset::Sample, events)
    };
    let write_started = Instant::now();
    {
        let file = file.clone();
        // Flushed before measuring: otherwise the spool's first fsyncs pay
        // for writing the freshly written sample out of the page cache.
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            write_sample(&file, &spec)?;
            std::fs::File::open(&file)?.sync_all()?;
            Ok(())
        })
        .await??;
    }
    println!(
        "wrote {events} events to an HDF5 sample in {:.1} s",
        write_started.elapsed().as_secs_f64()
    );
    let hdf5_source = |run: u32| {
        format!(
            "[[sources]]\nname = \"hdf5\"\nrun = {run}\n[sources.hdf5]\nfile = \"{}\"\npreset = \"sample\"\n",
            file.display()
        )
    };
    // Re-readable file: `auto` does not fsync (resume comes from JetStream).
    let hdf5 = run_agent(agent_config(
        &url,
        &work.path().join("spool-hdf5"),
        &args,
        "auto",
        &hdf5_source(1),
    )?)
    .await?;
    // The write-ahead fsync of every batch, as before, for comparison.
    let hdf5_every = run_agent(agent_config(
        &url,
        &work.path().join("spool-hdf5-every"),
        &args,
        "every_batch",
        &hdf5_source(3),
    )?)
    .await?;
    let hwm_hdf5 = peak_rss_mib();

    // Synthetic case.
    let synthetic_source = |run: u32| {
        format!(
            "[[sources]]\nname = \"syn\"\nrun = {run}\n[sources.synthetic]\nheight = {}\nwidth = {}\nevents = {events}\n",
            args.height, args.width
        )
    };
    // Live source: `auto` is group commit.
    let synthetic = run_agent(agent_config(
        &url,
        &work.path().join("spool-syn"),
        &args,
        "auto",
        &synthetic_source(2),
    )?)
    .await?;
    // The same without any fsync: the rate group commit is measured against.
    let synthetic_nosync = run_agent(agent_config(
        &url,
        &work.path().join("spool-syn-off"),
        &args,
        "off",
        &synthetic_source(4),
    )?)
    .await?;
    let hwm_agent = peak_rss_mib();

    // Ceilings: the same payloads, pre-encoded (one batch at a time, so only
    // compressed messages are held), then sent by a raw publisher. The read
    // and encode stages are timed alone too, to show where the time goes.
    let per_batch = args.batch_events.max(1) as u64;
    let (hdf5_pre, read_secs, encode_secs) = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<(PreEncoded, f64, f64)> {
            let reader = Hdf5Reader::open(&file, &Layout::preset(Preset::Sample))?;
            let (mut pre, mut read_secs, mut encode_secs) = (PreEncoded::default(), 0.0, 0.0);
            let mut at = 0;
            while at < reader.events() {
                let t = Instant::now();
                let events = reader.read(at, at + per_batch, at)?;
                read_secs += t.elapsed().as_secs_f64();
                let t = Instant::now();
                pre.push("hdf5", events)?;
                encode_secs += t.elapsed().as_secs_f64();
                at += per_batch;
            }
            Ok((pre, read_secs, encode_secs))
        })
        .await??
    };
    let secs = raw_publish(
        &js,
        "lcls.raw.raw.1.hdf5",
        &hdf5_pre.messages,
        args.in_flight,
    )
    .await?;
    let raw_hdf5 = Figures {
        events: hdf5_pre.events,
        raw: hdf5_pre.raw,
        wire: hdf5_pre.wire,
        secs,
    };
    drop(hdf5_pre);
    let hand =
        hand_written_publish(&js, &file, "lcls.raw.raw.3.hand", per_batch, args.in_flight).await?;
    let model = detector_model(&synthetic_config);
    let mut syn_pre = PreEncoded::default();
    let mut at = 0;
    while at < events {
        let batch: Vec<Event> = (at..(at + per_batch).min(events))
            .map(|i| synthetic_event(&synthetic_config, &model, i, 0))
            .collect();
        syn_pre.push("syn", batch)?;
        at += per_batch;
    }
    let secs = raw_publish(&js, "lcls.raw.raw.2.syn", &syn_pre.messages, args.in_flight).await?;
    let raw_syn = Figures {
        events: syn_pre.events,
        raw: syn_pre.raw,
        wire: syn_pre.wire,
        secs,
    };
    drop(syn_pre);

    println!();
    let stage = |name: &str, secs: f64| {
        Figures {
            events: raw_hdf5.events,
            raw: raw_hdf5.raw,
            wire: raw_hdf5.wire,
            secs,
        }
        .line(name)
    };
    println!("{}", stage("stage alone: HDF5 read (1 thread)", read_secs));
    println!("{}", stage("stage alone: encode (1 thread)", encode_secs));
    println!("{}", hdf5.line("agent, HDF5 file (sync auto: off)"));
    println!("{}", raw_hdf5.line("raw publisher, same payloads"));
    println!(
        "  ratio agent/raw: {:.0}% (target >= 80%)",
        100.0 * hdf5.events_per_sec() / raw_hdf5.events_per_sec()
    );
    println!("{}", hand.line("hand-written read+encode+publish"));
    println!(
        "  ratio agent/hand-written (no spool, no fsync, one encode thread): {:.0}% (target >= 90%)",
        100.0 * hdf5.events_per_sec() / hand.events_per_sec()
    );
    println!("{}", hdf5_every.line("agent, HDF5, fsync every batch"));
    println!(
        "  ratio fsync-every-batch agent/hand-written: {:.0}%",
        100.0 * hdf5_every.events_per_sec() / hand.events_per_sec()
    );
    println!("{}", synthetic.line("agent, synthetic (group commit)"));
    println!("{}", synthetic_nosync.line("agent, synthetic, no fsync"));
    println!(
        "  ratio group commit/no fsync: {:.0}% (target >= 90%)",
        100.0 * synthetic.events_per_sec() / synthetic_nosync.events_per_sec()
    );
    println!("{}", raw_syn.line("raw publisher, same payloads"));
    println!(
        "  ratio agent/raw: {:.0}% (target >= 80%)",
        100.0 * synthetic.events_per_sec() / raw_syn.events_per_sec()
    );
    println!();
    println!(
        "peak memory (VmHWM): {hwm_hdf5:.0} MiB after the HDF5 case, {hwm_agent:.0} MiB after both agent cases, {:.0} MiB at the end (raw cases hold all payloads in memory)",
        peak_rss_mib()
    );
    Ok(())
}
