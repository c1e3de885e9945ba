//! Shared helpers of the agent tests: configs, sample runs, reading a stream back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use lclstream_agent::config::Preset;
use lclstream_agent::hdf5_source::{Hdf5Reader, Layout};
use lclstream_agent::sample::{write_sample, SampleSpec};
use lclstream_agent::AgentConfig;
use lclstream_nats::streams::{pull_consumer_config, PullLimits, StartPosition};
use lclstream_nats::wire::{self, Batch, DecodeLimits, Event, Reassembler};

/// The top of an agent config: broker, spool, small batches, fast retries.
pub fn config_head(url: &str, spool: &Path) -> String {
    format!(
        r#"
instrument = "mfx"
experiment = "mfxp1234"
[nats]
url = "{url}"
[spool]
dir = "{}"
checkpoint_interval_ms = 50
[batch]
max_events = 16
max_bytes = 1048576
max_linger_ms = 50
[publish]
max_in_flight = 32
ack_timeout_ms = 2000
retry_initial_ms = 50
retry_max_ms = 500
drain_timeout_ms = 10000
"#,
        spool.display()
    )
}

/// Parses a config made of `config_head` plus source tables.
pub fn config(url: &str, spool: &Path, sources: &str) -> AgentConfig {
    AgentConfig::from_toml(&format!("{}{sources}", config_head(url, spool))).expect("valid config")
}

/// Writes `files` sample-layout files of `events` events each into `dir`.
pub fn write_run(dir: &Path, files: usize, events: u64, side: u64) -> Vec<std::path::PathBuf> {
    (0..files)
        .map(|i| {
            let path = dir.join(format!("r0007-s{i:02}.h5"));
            let spec = SampleSpec {
                height: side,
                width: side,
                seed: 100 + i as u64,
                ..SampleSpec::new(Preset::Sample, events)
            };
            write_sample(&path, &spec).expect("sample written");
            path
        })
        .collect()
}

/// Reads every event of `files` (in order) with the global indices the agent gives them.
pub fn expected_events(files: &[std::path::PathBuf], layout: &Layout) -> Vec<Event> {
    let mut all = Vec::new();
    for file in files {
        let reader = Hdf5Reader::open(file, layout).expect("readable");
        let first = all.len() as u64;
        all.extend(reader.read(0, reader.events(), first).expect("read"));
    }
    all
}

static CONSUMERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Every batch stored in `stream`, per subject, in stream order (chunks reassembled).
pub async fn read_stream(url: &str, stream_name: &str) -> BTreeMap<String, Vec<Batch>> {
    let client = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(url))
        .await
        .expect("connect in time")
        .expect("connect");
    let js = jetstream::new(client);
    let mut stream = tokio::time::timeout(Duration::from_secs(10), js.get_stream(stream_name))
        .await
        .expect("stream info in time")
        .expect("stream exists");
    let total = stream.info().await.expect("info").state.messages;
    let consumer = stream
        .create_consumer(pull_consumer_config(
            &format!(
                "check{}",
                CONSUMERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
            Vec::new(),
            &StartPosition::All,
            &PullLimits::default(),
        ))
        .await
        .expect("consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut reassembler = Reassembler::default();
    let mut out: BTreeMap<String, Vec<Batch>> = BTreeMap::new();
    for _ in 0..total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("message in time")
            .expect("stream open")
            .expect("message");
        let headers = message.headers.clone().expect("headers");
        if let Some(whole) = reassembler
            .push(&headers, message.payload.clone())
            .expect("valid chunk")
        {
            let batch = wire::decode(
                Some(&whole.headers),
                &whole.payload,
                &DecodeLimits::default(),
            )
            .expect("decodable batch");
            out.entry(message.subject.to_string())
                .or_default()
                .push(batch);
        }
        message.ack().await.expect("ack");
    }
    out
}

/// The event indices of batches, in stream order.
pub fn indices(batches: &[Batch]) -> Vec<u64> {
    batches
        .iter()
        .flat_map(|b| b.events.iter().map(|e| e.index))
        .collect()
}

/// Asserts that `batches` hold each of `0..n` exactly once (in any order) and returns whether in order.
pub fn assert_exactly_once(batches: &[Batch], n: u64) -> bool {
    let got = indices(batches);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    let before = sorted.len();
    sorted.dedup();
    assert_eq!(
        before,
        sorted.len(),
        "duplicate events: {} extra",
        before - sorted.len()
    );
    assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "missing events");
    got.windows(2).all(|w| w[0] < w[1])
}

/// Polls `check` every 50 ms for up to `limit`.
pub async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

/// The agent binary of this package as a process (`agent --config CONFIG`),
/// its log (at info, whatever the caller's `RUST_LOG`) in `log`.
pub fn spawn_agent(config: &Path, log: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"))
        .args(["agent", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).expect("agent log file"))
        .spawn()
        .expect("agent starts")
}

/// Messages stored in stream `name` (0 while it does not exist).
pub async fn stored_messages(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut stream) => stream.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Polls every `every`, up to `limit`, until stream `name` holds at least `n` messages.
pub async fn wait_stored(
    js: &jetstream::Context,
    name: &str,
    n: u64,
    every: Duration,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if stored_messages(js, name).await >= n {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// Waits up to `limit` (polling every 50 ms) for `child` to exit; kills it
/// and panics with `what` when it does not.
pub async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the agent") {
            return status;
        }
        if tokio::time::Instant::now() >= deadline {
            child.kill().expect("killing the agent");
            panic!("{what} within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
