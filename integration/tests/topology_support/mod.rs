//! Shared pieces of the topology tests: starting the small topology, a
//! publisher at the edge, a partner consumer that counts event indices, and a
//! TCP link that can be cut to simulate a WAN outage.
//!
//! The publisher runs in-process (encode with `wire::encode`, publish with
//! `Nats-Msg-Id`); `topology_agent.rs` drives the real agent binary instead
//! and counts events per subject with [`PerSubject`].

#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use lclstream_nats::streams::{pull_consumer_config, PullLimits, StartPosition};
use lclstream_nats::subjects::DataSubject;
use lclstream_nats::topology::run::ConnectFn;
use lclstream_nats::topology::{
    edge_stream_name, facility_stream_name, partner_stream_name, Plan, PortMode, RunningTopology,
    Topology,
};
use lclstream_nats::wire::{self, headers as h, Array, Batch, DecodeLimits, EncodeOptions, Event};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Instrument of the test streams.
pub const INSTRUMENT: &str = "mfx";
/// Partner site of the small topology.
pub const PARTNER: &str = "partner";
/// Edge site of the small topology.
pub const EDGE: &str = "edge";

/// Topology tests in one binary run one at a time: five servers each on two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Takes the per-binary lock that serializes topology tests.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Path of a file in `nats/topologies/`.
pub fn topology_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../nats/topologies")
        .join(name)
}

/// A running topology with its directory.
pub struct Deployment {
    /// The servers.
    pub running: RunningTopology,
    /// Configs, logs and stores; removed at the end.
    pub dir: tempfile::TempDir,
}

/// Loads `test-small.toml` (1 edge leaf, 3-node facility, 1-node partner),
/// lets `edit` change it, starts it with free ports, waits until every link is
/// up and creates the streams.
pub async fn start_small(edit: impl FnOnce(&mut Topology)) -> Deployment {
    let mut topology = Topology::load(topology_file("test-small.toml")).expect("topology loads");
    edit(&mut topology);
    start_plan(topology.plan(PortMode::FreeWhereMissing).expect("plan")).await
}

/// Starts a resolved plan, waits for readiness and creates the streams.
pub async fn start_plan(plan: Plan) -> Deployment {
    start_plan_with(plan, None).await
}

/// Like [`start_plan`], with the connect options (credentials) that stream
/// creation and test clients use, for topologies with authentication.
pub async fn start_plan_with(plan: Plan, connect: Option<ConnectFn>) -> Deployment {
    let dir = tempfile::Builder::new()
        .prefix("lclstream-topology-")
        .tempdir()
        .expect("temp dir");
    let path = dir.path().to_path_buf();
    let mut running = tokio::task::spawn_blocking(move || RunningTopology::start_plan(plan, &path))
        .await
        .unwrap()
        .expect("topology starts");
    if let Some(connect) = connect {
        running.set_connect(connect);
    }
    running
        .wait_ready(Duration::from_secs(30))
        .await
        .expect("topology ready");
    running
        .create_streams(Duration::from_secs(30))
        .await
        .expect("streams created");
    Deployment { running, dir }
}

impl Deployment {
    /// URL of the edge leaf.
    pub fn edge_url(&self) -> String {
        self.running.edge_url(Some(EDGE)).unwrap()
    }

    /// State of a stream through a client of `site`, with a timeout.
    pub async fn stream_state(&self, site: &str, stream: &str) -> jetstream::stream::Info {
        let client = tokio::time::timeout(Duration::from_secs(10), self.running.connect(site))
            .await
            .expect("connect in time")
            .expect("connect");
        let js = jetstream::new(client);
        let mut s = tokio::time::timeout(Duration::from_secs(10), js.get_stream(stream))
            .await
            .expect("stream lookup in time")
            .expect("stream exists");
        tokio::time::timeout(Duration::from_secs(10), s.info())
            .await
            .expect("stream info in time")
            .expect("stream info")
            .clone()
    }

    /// State of a stream, or `None` if it cannot be read within 5 s (leader election).
    pub async fn try_stream_state(
        &self,
        site: &str,
        stream: &str,
    ) -> Option<jetstream::stream::Info> {
        let attempt = async {
            let client = self.running.connect(site).await.ok()?;
            let js = jetstream::new(client);
            let mut s = js.get_stream(stream).await.ok()?;
            s.info().await.ok().cloned()
        };
        tokio::time::timeout(Duration::from_secs(5), attempt)
            .await
            .ok()
            .flatten()
    }

    /// Message counts of the edge, facility and partner copies, if readable now.
    pub async fn try_copy_counts(&self) -> Option<(u64, u64, u64)> {
        let edge = self
            .try_stream_state(EDGE, &edge_stream_name(INSTRUMENT))
            .await?;
        let facility = self
            .try_stream_state("facility", &facility_stream_name(INSTRUMENT))
            .await?;
        let partner = self
            .try_stream_state(PARTNER, &partner_stream_name(INSTRUMENT, PARTNER))
            .await?;
        Some((
            edge.state.messages,
            facility.state.messages,
            partner.state.messages,
        ))
    }

    /// Message counts of the edge, facility and partner copies.
    pub async fn copy_counts(&self) -> (u64, u64, u64) {
        let edge = self.stream_state(EDGE, &edge_stream_name(INSTRUMENT)).await;
        let facility = self
            .stream_state("facility", &facility_stream_name(INSTRUMENT))
            .await;
        let partner = self
            .stream_state(PARTNER, &partner_stream_name(INSTRUMENT, PARTNER))
            .await;
        (
            edge.state.messages,
            facility.state.messages,
            partner.state.messages,
        )
    }

    /// Polls `/varz` `mem` of every running server; returns the largest (name, bytes).
    pub fn max_server_mem(&self) -> (String, u64) {
        let mut best = (String::new(), 0);
        for (planned, server) in self.running.servers() {
            if let Ok(varz) = server.monitor_json("/varz") {
                let mem = varz["mem"].as_u64().unwrap_or(0);
                if mem > best.1 {
                    best = (planned.name.clone(), mem);
                }
            }
        }
        best
    }
}

/// The subject events are published on.
pub fn subject() -> String {
    DataSubject::new(INSTRUMENT, "mfxp1234", 7, "jungfrau")
        .unwrap()
        .to_string()
}

/// One batch holding event `index` with about `payload_bytes` of incompressible pixels.
pub fn event_message(index: u64, payload_bytes: usize) -> wire::WireMessage {
    let pixels = (payload_bytes / 2).max(1);
    let mut state = 0x9e37_79b9u32 ^ (index as u32).wrapping_mul(0x85eb_ca6b) | 1;
    let values: Vec<u16> = (0..pixels)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u16
        })
        .collect();
    let mut event = Event {
        index,
        time_ns: 1_700_000_000_000_000_000 + index,
        ..Default::default()
    };
    event.arrays.insert(
        "jungfrau".into(),
        Array::from_u16(vec![pixels as u64], &values).unwrap(),
    );
    let batch = Batch::new("mfxp1234", 7, "jungfrau", vec![event]).unwrap();
    let mut encoded = wire::encode(batch, &EncodeOptions::default()).unwrap();
    assert_eq!(encoded.messages.len(), 1, "test events fit one message");
    encoded.messages.remove(0)
}

/// How the publisher paces itself.
#[derive(Debug, Clone, Copy)]
pub struct PublishOptions {
    /// Pixel bytes per event.
    pub payload_bytes: usize,
    /// Events per second; `None` publishes as fast as acks come back.
    pub rate: Option<f64>,
    /// Publications in flight before waiting for their acks.
    pub window: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            payload_bytes: 2048,
            rate: None,
            window: 32,
        }
    }
}

/// Publishes events at the edge, standing in for the agent.
pub struct Publisher {
    task: JoinHandle<Result<(), String>>,
    acked: Arc<AtomicU64>,
}

impl Publisher {
    /// Starts publishing events `range` into the edge at `url`. A publication
    /// whose ack fails is republished with the same `Nats-Msg-Id` (bounded).
    pub fn spawn(url: String, range: Range<u64>, options: PublishOptions) -> Publisher {
        let acked = Arc::new(AtomicU64::new(0));
        let counter = acked.clone();
        let task = tokio::spawn(async move {
            let client = async_nats::ConnectOptions::new()
                .retry_on_initial_connect()
                .connect(lclstream_nats::server_urls::server_urls(&url))
                .await
                .map_err(|e| e.to_string())?;
            let js = jetstream::new(client);
            let subject = subject();
            let start = tokio::time::Instant::now();
            let indices: Vec<u64> = range.clone().collect();
            for window in indices.chunks(options.window.max(1)) {
                let mut pending = Vec::new();
                for &index in window {
                    if let Some(rate) = options.rate {
                        let due =
                            start + Duration::from_secs_f64((index - range.start) as f64 / rate);
                        tokio::time::sleep_until(due).await;
                    }
                    let message = event_message(index, options.payload_bytes);
                    let ack = js
                        .publish_with_headers(subject.clone(), message.headers, message.payload)
                        .await;
                    pending.push((index, ack));
                }
                for (index, ack) in pending {
                    let ok = match ack {
                        Ok(future) => future.await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        publish_with_retries(&js, &subject, index, options.payload_bytes).await?;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(())
        });
        Publisher { task, acked }
    }

    /// Number of events acknowledged by the edge so far.
    pub fn progress(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Stops the publisher abruptly, with publications in flight (stands in for SIGKILL).
    pub fn kill(self) {
        self.task.abort();
    }

    /// Waits for the publisher to finish its range.
    pub async fn finish(self, timeout: Duration) {
        tokio::time::timeout(timeout, self.task)
            .await
            .expect("publisher finishes in time")
            .expect("publisher task")
            .expect("publisher succeeds");
    }
}

async fn publish_with_retries(
    js: &jetstream::Context,
    subject: &str,
    index: u64,
    payload_bytes: usize,
) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..100 {
        let message = event_message(index, payload_bytes);
        match js
            .publish_with_headers(subject.to_string(), message.headers, message.payload)
            .await
        {
            Ok(future) => match tokio::time::timeout(Duration::from_secs(5), future).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "ack timeout".into(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("event {index} not acknowledged: {last}"))
}

/// Creates (or reattaches to) a durable pull consumer on the partner mirror.
pub async fn partner_consumer(
    deployment: &Deployment,
    durable: &str,
    ack_wait: Duration,
) -> PullConsumer {
    let client = tokio::time::timeout(Duration::from_secs(10), deployment.running.connect(PARTNER))
        .await
        .expect("connect in time")
        .expect("connect to partner");
    let js = jetstream::new(client);
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        js.get_stream(partner_stream_name(INSTRUMENT, PARTNER)),
    )
    .await
    .expect("stream lookup in time")
    .expect("partner mirror exists");
    let limits = PullLimits {
        ack_wait,
        max_ack_pending: 64,
        ..PullLimits::default()
    };
    let config = pull_consumer_config(durable, Vec::new(), &StartPosition::All, &limits);
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.get_or_create_consumer(durable, config),
    )
    .await
    .expect("consumer in time")
    .expect("consumer created")
}

/// What a partner consumer saw: how often each event index was processed.
#[derive(Debug, Clone)]
pub struct Received {
    /// Acknowledged deliveries per event index.
    pub counts: Vec<u32>,
    /// Acknowledged deliveries of indices outside the expected range.
    pub unexpected: u64,
}

impl Received {
    /// An empty record for events `0..n`.
    pub fn new(n: u64) -> Received {
        Received {
            counts: vec![0; n as usize],
            unexpected: 0,
        }
    }

    /// Distinct indices seen.
    pub fn distinct(&self) -> u64 {
        self.counts.iter().filter(|c| **c > 0).count() as u64
    }

    /// Total acknowledged deliveries.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum::<u64>() + self.unexpected
    }

    /// Asserts every index in `range` was processed exactly once and nothing else was.
    pub fn assert_exactly_once(&self, range: Range<u64>) {
        self.assert_exactly_once_in(&[range]);
    }

    /// Asserts every index in `ranges` was processed exactly once and nothing else was.
    pub fn assert_exactly_once_in(&self, ranges: &[Range<u64>]) {
        let expected = |i: &u64| ranges.iter().any(|r| r.contains(i));
        let all = 0..self.counts.len() as u64;
        let missing: Vec<u64> = all
            .clone()
            .filter(|i| expected(i) && self.counts[*i as usize] == 0)
            .collect();
        let repeated: Vec<(u64, u32)> = all
            .clone()
            .filter(|i| self.counts[*i as usize] > 1)
            .map(|i| (i, self.counts[i as usize]))
            .collect();
        let outside: Vec<u64> = all
            .filter(|i| !expected(i) && self.counts[*i as usize] > 0)
            .collect();
        assert!(
            missing.is_empty(),
            "{} events missing, first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        assert!(
            repeated.is_empty(),
            "events delivered more than once: {repeated:?}"
        );
        assert!(
            outside.is_empty(),
            "{} events outside {ranges:?} were delivered, first {:?}",
            outside.len(),
            &outside[..outside.len().min(10)]
        );
        assert_eq!(self.unexpected, 0, "unexpected event indices delivered");
    }
}

/// Samples `/varz` `mem` of every server in the background and keeps the peak per server.
pub struct MemorySampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(String, u64)>>,
}

impl MemorySampler {
    /// Starts sampling every 250 ms.
    pub fn start(deployment: &Deployment) -> MemorySampler {
        let servers: Vec<(String, SocketAddr)> = deployment
            .running
            .servers()
            .map(|(p, s)| (p.name.clone(), s.monitor_addr()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut peaks: Vec<(String, u64)> =
                servers.iter().map(|(n, _)| (n.clone(), 0)).collect();
            // Bounded by the stop flag and by 10 minutes.
            for _ in 0..2400 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                for (i, (_, addr)) in servers.iter().enumerate() {
                    if let Ok((200, body)) =
                        lclstream_nats::server::http_get(*addr, "/varz", Duration::from_secs(2))
                    {
                        let mem = serde_json::from_str::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v["mem"].as_u64())
                            .unwrap_or(0);
                        peaks[i].1 = peaks[i].1.max(mem);
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            peaks
        });
        MemorySampler { stop, task }
    }

    /// Stops sampling; returns the peak resident memory per server.
    pub async fn stop(self) -> Vec<(String, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("sampler stops")
            .expect("sampler task")
    }
}

/// How a read loop behaves.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Stop once this many distinct indices are processed.
    pub until_distinct: u64,
    /// Give up (return what was seen) after this long.
    pub timeout: Duration,
    /// Processing time per message (a slow consumer).
    pub delay: Option<Duration>,
    /// Stop after this many acknowledgements, leaving fetched messages unacknowledged
    /// (a consumer that drops).
    pub stop_after_acks: Option<u64>,
    /// Messages per pull request.
    pub batch: usize,
}

impl ReadOptions {
    /// Read until `n` distinct events are processed or `timeout` passes.
    pub fn until(n: u64, timeout: Duration) -> ReadOptions {
        ReadOptions {
            until_distinct: n,
            timeout,
            delay: None,
            stop_after_acks: None,
            batch: 32,
        }
    }
}

/// Where a read loop counts what it processed.
pub trait Tally {
    /// Distinct events processed so far (the loop stops at `until_distinct`).
    fn distinct(&self) -> u64;
    /// Total acknowledged event deliveries.
    fn total(&self) -> u64;
    /// Counts the events of a confirmed batch received on `subject`.
    fn record(&mut self, subject: &str, batch: &Batch);
}

impl Tally for Received {
    fn distinct(&self) -> u64 {
        Received::distinct(self)
    }

    fn total(&self) -> u64 {
        Received::total(self)
    }

    fn record(&mut self, _subject: &str, batch: &Batch) {
        for event in &batch.events {
            match self.counts.get_mut(event.index as usize) {
                Some(count) => *count += 1,
                None => self.unexpected += 1,
            }
        }
    }
}

/// Event counts per subject, for publishers with several sources (the agent).
#[derive(Debug, Clone, Default)]
pub struct PerSubject {
    /// Expected subjects with their counts.
    pub subjects: std::collections::BTreeMap<String, Received>,
    /// Events received on subjects not expected.
    pub unexpected_subjects: std::collections::BTreeMap<String, u64>,
}

impl PerSubject {
    /// Expects events `0..n` on each `(subject, n)`.
    pub fn new(expected: &[(String, u64)]) -> PerSubject {
        PerSubject {
            subjects: expected
                .iter()
                .map(|(s, n)| (s.clone(), Received::new(*n)))
                .collect(),
            unexpected_subjects: Default::default(),
        }
    }

    /// Asserts every expected event of every subject was processed exactly once, and nothing else.
    pub fn assert_exactly_once(&self) {
        assert!(
            self.unexpected_subjects.is_empty(),
            "events on unexpected subjects: {:?}",
            self.unexpected_subjects
        );
        for (subject, received) in &self.subjects {
            eprintln!("checking {subject}");
            received.assert_exactly_once(0..received.counts.len() as u64);
        }
    }
}

impl Tally for PerSubject {
    fn distinct(&self) -> u64 {
        self.subjects.values().map(Received::distinct).sum()
    }

    fn total(&self) -> u64 {
        self.subjects.values().map(Received::total).sum::<u64>()
            + self.unexpected_subjects.values().sum::<u64>()
    }

    fn record(&mut self, subject: &str, batch: &Batch) {
        match self.subjects.get_mut(subject) {
            Some(received) => received.record(subject, batch),
            None => {
                *self
                    .unexpected_subjects
                    .entry(subject.to_string())
                    .or_default() += batch.events.len() as u64
            }
        }
    }
}

/// Pulls, decodes and acknowledges messages, counting event indices into
/// `received` only once the server confirmed the ack (`double_ack`), so that a
/// message not confirmed is one the consumer will see again.
pub async fn read(consumer: &PullConsumer, received: &mut impl Tally, options: ReadOptions) {
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut acks = 0u64;
    // Bounded: every round waits at most 1 s and the deadline stops it.
    while tokio::time::Instant::now() < deadline && received.distinct() < options.until_distinct {
        let batch = tokio::time::timeout(
            Duration::from_secs(5),
            consumer
                .fetch()
                .max_messages(options.batch)
                .expires(Duration::from_secs(1))
                .messages(),
        )
        .await;
        let Ok(Ok(mut messages)) = batch else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        while let Ok(Some(next)) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        {
            let Ok(message) = next else { break };
            if options.stop_after_acks.is_some_and(|limit| acks >= limit) {
                // Dropped without an ack: the server redelivers after ack_wait.
                return;
            }
            let headers = message
                .headers
                .clone()
                .expect("lclstream messages have headers");
            let batch = wire::decode(Some(&headers), &message.payload, &DecodeLimits::default())
                .expect("message decodes");
            assert_eq!(
                h::get(&headers, h::MSG_ID),
                Some(batch.id().as_str()),
                "Nats-Msg-Id survives source and mirror"
            );
            if let Some(delay) = options.delay {
                tokio::time::sleep(delay).await;
            }
            let confirmed = tokio::time::timeout(Duration::from_secs(5), message.double_ack())
                .await
                .map(|r| r.is_ok())
                .unwrap_or(false);
            if !confirmed {
                continue;
            }
            acks += 1;
            received.record(message.subject.as_str(), &batch);
        }
    }
}

/// After the expected events arrived, checks for a short while that nothing more is delivered.
pub async fn read_leftovers(consumer: &PullConsumer, received: &mut impl Tally) {
    let before = received.total();
    let mut options = ReadOptions::until(u64::MAX, Duration::from_secs(2));
    options.batch = 64;
    read(consumer, received, options).await;
    assert_eq!(
        received.total(),
        before,
        "no message beyond the expected ones is delivered"
    );
}

/// Waits until `check` holds, polling every 200 ms, up to `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A TCP link that can be cut: stands for the WAN between an edge leaf and the
/// facility. While cut, open connections are closed and new ones are closed
/// right after accept, as when a router drops the path.
pub struct CuttableLink {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl CuttableLink {
    /// Listens on a free loopback port, forwarding to the first reachable of `targets`.
    pub async fn start(targets: Vec<String>) -> CuttableLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind link");
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (cut2, conns2) = (cut.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    let _ = inbound.shutdown().await;
                    continue;
                }
                let targets = targets.clone();
                let handle = tokio::spawn(async move {
                    for target in &targets {
                        let Ok(Ok(mut outbound)) = tokio::time::timeout(
                            Duration::from_secs(2),
                            TcpStream::connect(target),
                        )
                        .await
                        else {
                            continue;
                        };
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                });
                let mut conns = conns2.lock().unwrap();
                conns.retain(|h| !h.is_finished());
                conns.push(handle);
            }
        });
        CuttableLink {
            addr,
            cut,
            connections,
            accept,
        }
    }

    /// The URL a leaf node remote uses to go through this link.
    pub fn leaf_url(&self) -> String {
        format!("nats-leaf://{}", self.addr)
    }

    /// Cuts the link: closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for handle in self.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }

    /// Restores the link.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for CuttableLink {
    fn drop(&mut self) {
        self.accept.abort();
        for handle in self.connections.lock().unwrap().drain(..) {
            handle.abort();
        }
    }
}

/// Leaf node link count of the edge server (`/leafz`).
pub fn edge_leaf_links(deployment: &Deployment) -> u64 {
    deployment
        .running
        .server(EDGE)
        .ok()
        .and_then(|s| s.monitor_json("/leafz").ok())
        .and_then(|v| v["leafnodes"].as_u64())
        .unwrap_or(0)
}
