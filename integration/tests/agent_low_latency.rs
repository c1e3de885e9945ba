//! `batch.low_latency`: a batch leaves as soon as the source has nothing more
//! waiting, instead of waiting for `max_events` or the linger. At a low event
//! rate every event then travels alone; without it, the same events wait and
//! fill batches.

mod agent_support;

use std::time::Duration;

use agent_support::*;
use lclstream_agent::spool::SpoolSync;
use lclstream_agent::{Agent, AgentConfig};
use lclstream_nats::server::NatsServer;

fn config(url: &str, spool: &std::path::Path, run: u32, low_latency: bool) -> AgentConfig {
    AgentConfig::from_toml(&format!(
        r#"
instrument = "mfx"
experiment = "mfxp1234"
[nats]
url = "{url}"
[spool]
dir = "{}"
[batch]
max_events = 16
max_linger_ms = 600000
low_latency = {low_latency}

[[sources]]
name = "det"
run = {run}
[sources.synthetic]
height = 16
width = 16
rate_hz = 40.0
events = 20
"#,
        spool.display()
    ))
    .expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_latency_sends_each_event_of_a_slow_source_at_once() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let mut batch_counts = Vec::new();
    for (run, low_latency) in [(1u32, false), (2, true)] {
        let spool = tempfile::tempdir().unwrap();
        let config = config(&server.url(), spool.path(), run, low_latency);
        // Live data: group commit normally; no fsync when asked for low latency.
        let sync = if low_latency {
            SpoolSync::Off
        } else {
            SpoolSync::Group
        };
        assert_eq!(config.spool_sync(), sync);
        let report = tokio::time::timeout(
            Duration::from_secs(60),
            Agent::new(config).run(std::future::pending()),
        )
        .await
        .expect("the counted source ends")
        .expect("agent succeeds");
        assert_eq!(report.events_published, 20);
        let stream = read_stream(&server.url(), "LCLS_MFX").await;
        let batches = &stream[&format!("lcls.mfx.mfxp1234.{run}.det")];
        assert!(assert_exactly_once(batches, 20), "events out of order");
        batch_counts.push(batches.len());
    }
    // Without low latency: 16 events wait for the batch to fill, then the
    // last 4 leave when the source ends (the linger is 10 minutes).
    assert_eq!(batch_counts[0], 2, "batches without low latency");
    // With it, events 25 ms apart leave alone (a scheduling hiccup may let
    // two meet; far more than 2 batches either way).
    assert!(
        batch_counts[1] >= 15,
        "batches with low latency: {}",
        batch_counts[1]
    );
}
