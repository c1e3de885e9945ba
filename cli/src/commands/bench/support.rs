//! Helpers shared by the benchmarks: a harness nats-server, an in-process
//! gateway, agent configurations, pre-encoded publishing, raw pulls, counting
//! sinks, percentiles and process memory from `/proc`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::stream::{FuturesOrdered, StreamExt};
use lclstream_agent::{Agent, AgentConfig, RunReport};
use lclstream_gateway::gateway::{Gateway, GatewayConfig, GatewayHandle};
use lclstream_nats::server::NatsServer;
use lclstream_nats::streams::{pull_consumer_config, PullLimits, StartPosition};
use lclstream_nats::synthetic::DetectorModel;
use lclstream_nats::wire::{self, Batch, EncodeOptions, Event, WireMessage};
use lclstream_partner::{
    BatchInfo, CallbackSink, DatasetGrant, DatasetRequest, PartnerClient, PartnerConfig,
    PullOptions, PullSummary, Start,
};

/// Longest time any single benchmark step may take before it is reported as hung.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Instrument of every benchmark stream (`LCLS_BENCH`, subjects `lcls.bench.>`).
pub const INSTRUMENT: &str = "bench";

/// Institution id of the benchmark partners.
pub const INSTITUTION: &str = "benchlab";

/// Events moved in some time, with their uncompressed and wire sizes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    /// Events.
    pub events: u64,
    /// Uncompressed bytes (MessagePack documents or event data).
    pub raw_bytes: u64,
    /// Payload bytes on the wire.
    pub wire_bytes: u64,
    /// Wall time in seconds.
    pub secs: f64,
}

impl Rate {
    /// A rate from an agent's run report.
    pub fn from_report(r: &RunReport) -> Rate {
        Rate {
            events: r.events_published,
            raw_bytes: r.raw_bytes,
            wire_bytes: r.wire_bytes,
            secs: r.elapsed.as_secs_f64(),
        }
    }

    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs.max(1e-9)
    }

    /// Uncompressed MB/s.
    pub fn raw_mb_s(&self) -> f64 {
        self.raw_bytes as f64 / 1e6 / self.secs.max(1e-9)
    }

    /// Wire MB/s.
    pub fn wire_mb_s(&self) -> f64 {
        self.wire_bytes as f64 / 1e6 / self.secs.max(1e-9)
    }

    /// One table row: name, events, seconds, ev/s, MB/s raw and wire.
    pub fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.2} | {:.0} | {:.0} | {:.1} |",
            self.events,
            self.secs,
            self.events_per_sec(),
            self.raw_mb_s(),
            self.wire_mb_s()
        )
    }

    /// Header matching [`Rate::row`].
    pub fn header(first: &str) -> String {
        format!(
            "| {first} | events | s | events/s | MB/s raw | MB/s wire |\n|---|---:|---:|---:|---:|---:|"
        )
    }
}

/// Nanoseconds since the Unix epoch (the clock the agent stamps synthetic events with).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Awaits `f` for at most [`STEP_TIMEOUT`], naming `what` when it does not finish.
pub async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(STEP_TIMEOUT, f)
        .await
        .with_context(|| format!("{what} did not finish within {STEP_TIMEOUT:?}"))
}

/// Starts a harness nats-server (loopback, file-backed JetStream in a temporary directory).
pub async fn start_server() -> anyhow::Result<NatsServer> {
    tokio::task::spawn_blocking(NatsServer::start_default)
        .await?
        .context("starting the harness nats-server")
}

/// A JetStream context on a fresh connection, with `LCLS_BENCH` created.
pub async fn jetstream_with_stream(url: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = jetstream::new(client);
    js.get_or_create_stream(
        lclstream_nats::streams::StreamSettings::for_instrument(INSTRUMENT).to_config(),
    )
    .await
    .context("creating stream LCLS_BENCH")?;
    Ok(js)
}

/// Batching settings written into an agent configuration.
#[derive(Debug, Clone, Copy)]
pub struct AgentBatching {
    /// `batch.max_events`.
    pub max_events: usize,
    /// `batch.max_bytes`.
    pub max_bytes: usize,
    /// `batch.max_linger_ms`.
    pub linger_ms: u64,
    /// `spool.fsync`.
    pub fsync: bool,
    /// `spool.max_bytes`.
    pub spool_bytes: u64,
    /// `batch.low_latency`.
    pub low_latency: bool,
}

impl Default for AgentBatching {
    fn default() -> Self {
        AgentBatching {
            max_events: 16,
            max_bytes: 16 * 1024 * 1024,
            linger_ms: 100,
            fsync: true,
            spool_bytes: 512 * 1024 * 1024,
            low_latency: false,
        }
    }
}

/// The TOML of an agent publishing to `LCLS_BENCH` (experiment `bench1`) with `sources`.
pub fn agent_toml(url: &str, spool: &Path, batching: &AgentBatching, sources: &str) -> String {
    format!(
        r#"instrument = "{INSTRUMENT}"
experiment = "bench1"
[nats]
url = "{url}"
[spool]
dir = "{}"
fsync = {}
max_bytes = {}
[batch]
max_events = {}
max_bytes = {}
max_linger_ms = {}
low_latency = {}
[encode]
max_payload = 8388608
[publish]
max_in_flight = 64
drain_timeout_ms = 20000
{sources}
"#,
        spool.display(),
        batching.fsync,
        batching.spool_bytes,
        batching.max_events,
        batching.max_bytes,
        batching.linger_ms,
        batching.low_latency
    )
}

/// A `[[sources]]` entry of a synthetic detector (`events`: none for endless).
pub fn synthetic_source(
    name: &str,
    run: u32,
    height: u64,
    width: u64,
    events: Option<u64>,
    rate_hz: f64,
) -> String {
    let events = events
        .map(|n| format!("events = {n}\n"))
        .unwrap_or_default();
    format!(
        "[[sources]]\nname = \"{name}\"\nrun = {run}\n[sources.synthetic]\nheight = {height}\nwidth = {width}\nrate_hz = {rate_hz}\n{events}"
    )
}

/// A `[[sources]]` entry reading one sample-layout HDF5 file.
pub fn hdf5_source(name: &str, run: u32, file: &Path) -> String {
    format!(
        "[[sources]]\nname = \"{name}\"\nrun = {run}\n[sources.hdf5]\nfile = \"{}\"\npreset = \"sample\"\n",
        file.display()
    )
}

/// Runs an agent in-process until its finite sources are published or `shutdown` resolves.
pub async fn run_agent(
    toml: &str,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<RunReport> {
    let config = AgentConfig::from_toml(toml)?;
    let report = step("agent run", Agent::new(config).run(shutdown)).await??;
    Ok(report)
}

/// Publishes `count` synthetic events (indices from `first`) in batches of
/// `per_batch` on `subject`, pre-encoded, with up to 64 publishes in flight.
/// Returns the publishing rate (encode time excluded).
#[allow(clippy::too_many_arguments)]
pub async fn publish_synthetic(
    js: &jetstream::Context,
    subject: &str,
    run: u32,
    source: &str,
    model: &DetectorModel,
    count: u64,
    per_batch: u64,
    options: &EncodeOptions,
) -> anyhow::Result<Rate> {
    let (mut messages, mut raw, mut wire_bytes) = (Vec::new(), 0u64, 0u64);
    let per_batch = per_batch.max(1);
    let mut first = 0;
    while first < count {
        let last = (first + per_batch).min(count);
        let events = (first..last)
            .map(|i| model.event(source, i, 1_000 + i))
            .collect();
        let encoded = wire::encode(Batch::new("bench1", run, source, events)?, options)?;
        raw += encoded.raw_size as u64;
        wire_bytes += encoded.wire_size as u64;
        messages.extend(encoded.messages);
        first = last;
    }
    let started = Instant::now();
    let mut pending = FuturesOrdered::new();
    for m in messages {
        if pending.len() >= 64 {
            let ack: Result<_, _> = pending.next().await.context("publish ack")?;
            ack?;
        }
        let ack = js
            .publish_with_headers(subject.to_string(), m.headers, m.payload)
            .await?;
        pending.push_back(std::future::IntoFuture::into_future(ack));
    }
    while let Some(ack) = step("publish acks", pending.next()).await? {
        ack?;
    }
    Ok(Rate {
        events: count,
        raw_bytes: raw,
        wire_bytes,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// How a raw pull acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawAck {
    /// `ack()`: fire and forget.
    Plain,
    /// `double_ack()`: wait for the server to confirm (what the partner library does).
    Confirmed,
}

/// The baseline consumer: a durable pull consumer created directly with the
/// partner limits, fetched in `batch`-message pulls and acknowledged without
/// decoding, until `messages` messages arrived or nothing came for `idle`.
/// With `keep`, the received messages are returned too.
#[allow(clippy::too_many_arguments)]
pub async fn raw_pull(
    js: &jetstream::Context,
    durable: &str,
    filter: &str,
    limits: &PullLimits,
    messages: u64,
    ack: RawAck,
    idle: Duration,
    keep: bool,
) -> anyhow::Result<(Rate, Vec<WireMessage>)> {
    let stream = js
        .get_stream(lclstream_nats::subjects::stream_name(INSTRUMENT))
        .await?;
    let consumer: PullConsumer = stream
        .create_consumer(pull_consumer_config(
            durable,
            vec![filter.to_string()],
            &StartPosition::All,
            limits,
        ))
        .await
        .with_context(|| format!("creating consumer {durable}"))?;
    let started = Instant::now();
    let (mut count, mut bytes) = (0u64, 0u64);
    let mut kept = Vec::new();
    let mut last = Instant::now();
    'pulls: while count < messages && last.elapsed() < idle {
        let mut batch = consumer
            .batch()
            .max_messages(limits.max_batch as usize)
            .max_bytes(limits.max_bytes as usize)
            .expires(Duration::from_secs(1))
            .messages()
            .await?;
        let mut delivered = 0u64;
        while let Some(message) = step("raw pull", batch.next()).await? {
            let message = match message {
                Ok(m) => m,
                // The request ends with this status when the next message
                // does not fit in the bytes left: pull again.
                Err(e) if delivered > 0 && e.to_string().contains("Exceeds MaxBytes") => break,
                Err(e) => anyhow::bail!("raw pull: {e}"),
            };
            delivered += 1;
            bytes += message.payload.len() as u64;
            count += 1;
            if keep {
                kept.push(WireMessage {
                    headers: message.headers.clone().unwrap_or_default(),
                    payload: message.payload.clone(),
                });
            }
            last = Instant::now();
            match ack {
                RawAck::Plain => message.ack().await.map_err(|e| anyhow::anyhow!("{e}"))?,
                RawAck::Confirmed => message
                    .double_ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            }
            if count >= messages {
                // Everything asked for arrived: do not wait for the request to expire.
                break 'pulls;
            }
        }
    }
    js.client().flush().await?;
    let secs = started.elapsed().as_secs_f64();
    let _ = stream.delete_consumer(durable).await;
    Ok((
        Rate {
            events: 0,
            raw_bytes: 0,
            wire_bytes: bytes,
            secs,
        },
        kept,
    ))
}

/// An in-process gateway over one policy granting `lcls.bench.>` to [`INSTITUTION`].
pub struct BenchGateway {
    /// The running gateway.
    pub handle: GatewayHandle,
    _dir: tempfile::TempDir,
}

/// The policy file text of the benchmark institution with `limits` per consumer.
pub fn policy_toml(consumers: u32, limits: &PullLimits) -> String {
    format!(
        r#"id = "{INSTITUTION}"
name = "Benchmark partner"
[[grants]]
stream = "LCLS_BENCH"
subjects = ["lcls.bench.>"]
[quotas]
requests_per_hour = 100000
concurrent_consumers = {consumers}
bytes_per_day = 1_000_000_000_000_000
[quotas.pull]
max_batch = {}
max_bytes = {}
max_ack_pending = {}
ack_wait_secs = 60
"#,
        limits.max_batch, limits.max_bytes, limits.max_ack_pending
    )
}

impl BenchGateway {
    /// Starts a gateway on `url` allowing `consumers` concurrent consumers with `limits`.
    pub async fn start(url: &str, consumers: u32, limits: &PullLimits) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies)?;
        std::fs::write(
            policies.join(format!("{INSTITUTION}.toml")),
            policy_toml(consumers, limits),
        )?;
        let config = GatewayConfig::local(url, &policies);
        let handle = step("gateway start", Gateway::start(config)).await??;
        Ok(BenchGateway { handle, _dir: dir })
    }
}

/// A partner connection of [`INSTITUTION`] (server without authentication).
pub async fn partner(url: &str) -> anyhow::Result<PartnerClient> {
    Ok(step(
        "partner connect",
        PartnerClient::connect(&PartnerConfig {
            url: url.to_string(),
            institution: INSTITUTION.to_string(),
            seed: None,
        }),
    )
    .await??)
}

/// Asks the gateway for `filter` from the start of the stream under `label`.
pub async fn grant(
    client: &PartnerClient,
    filter: &str,
    label: &str,
) -> anyhow::Result<DatasetGrant> {
    Ok(step(
        "dataset request",
        client.request_dataset(&DatasetRequest {
            filters: vec![filter.to_string()],
            start: Start::All,
            end: None,
            label: Some(label.to_string()),
        }),
    )
    .await??)
}

/// Pulls `events` events of `grant` into a sink that counts events and array bytes.
///
/// The time is taken from the start to the moment the last event reached the
/// sink: a pull that stops at `max_events` then waits for its open pull request
/// to expire (to hand back late messages), which is not transfer time.
pub async fn partner_pull_counting(
    client: &PartnerClient,
    grant: &DatasetGrant,
    events: u64,
) -> anyhow::Result<(PullSummary, Rate)> {
    let threads = lclstream_partner::default_decode_threads();
    partner_pull_counting_threads(client, grant, events, threads).await
}

/// [`partner_pull_counting`] with `decode_threads` decoding batches at once.
pub async fn partner_pull_counting_threads(
    client: &PartnerClient,
    grant: &DatasetGrant,
    events: u64,
    decode_threads: usize,
) -> anyhow::Result<(PullSummary, Rate)> {
    let array_bytes = Arc::new(AtomicU64::new(0));
    let last_ns = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (counter, last) = (array_bytes.clone(), last_ns.clone());
    let mut sink = CallbackSink::new(move |_b: &BatchInfo, e: Event| {
        let bytes: usize = e.arrays.values().map(|a| a.data.len()).sum();
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
        last.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    });
    let options = PullOptions {
        max_events: Some(events),
        idle_timeout: Duration::from_secs(10),
        expires: Duration::from_millis(500),
        decode_threads,
        ..Default::default()
    };
    let summary = step("partner pull", client.pull(grant, &options, &mut sink)).await??;
    anyhow::ensure!(
        summary.events == events,
        "partner pulled {} of {events} events ({:?})",
        summary.events,
        summary.stop
    );
    Ok((
        summary.clone(),
        Rate {
            events: summary.events,
            raw_bytes: array_bytes.load(Ordering::Relaxed),
            wire_bytes: summary.bytes,
            secs: last_ns.load(Ordering::Relaxed) as f64 / 1e9,
        },
    ))
}

/// Value at quantile `q` (0..=1) of sorted `values` (nearest rank); 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak and current resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmHWM`: peak resident set.
    pub hwm_kib: u64,
    /// `VmRSS`: current resident set.
    pub rss_kib: u64,
}

/// Reads `VmHWM` and `VmRSS` of `pid` (or `self`) from `/proc`; none once it has exited.
pub fn memory_of(pid: Option<u32>) -> Option<Memory> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
    };
    Some(Memory {
        hwm_kib: field("VmHWM:")?,
        rss_kib: field("VmRSS:")?,
    })
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
