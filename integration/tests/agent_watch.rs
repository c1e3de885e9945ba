//! A watched directory: files added while the agent runs are published.

mod agent_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use agent_support::*;
use lclstream_agent::config::Preset;
use lclstream_agent::hdf5_source::Layout;
use lclstream_agent::sample::{write_sample, SampleSpec};
use lclstream_agent::Agent;
use lclstream_nats::server::{free_port, http_get, NatsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_added_while_running_are_published() {
    let server = NatsServer::start_default().expect("nats-server starts");
    let work = tempfile::tempdir().unwrap();
    let watched = work.path().join("run");
    let staging = work.path().join("staging");
    std::fs::create_dir(&watched).unwrap();
    std::fs::create_dir(&staging).unwrap();
    let spool = work.path().join("spool");
    let metrics_addr = format!("127.0.0.1:{}", free_port().unwrap());
    let sources = format!(
        r#"
[metrics]
listen = "{metrics_addr}"
[[sources]]
name = "jungfrau"
run = 11
[sources.hdf5]
watch_dir = "{}"
pattern = "*.h5"
poll_ms = 50
stable_ms = 200
preset = "sample"
"#,
        watched.display()
    );
    let agent = Agent::new(config(&server.url(), &spool, &sources));
    assert!(!agent.is_finite());
    let metrics = agent.metrics();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(agent.run(async {
        let _ = stop_rx.await;
    }));

    let mut files = Vec::new();
    for (i, events) in [(0, 30u64), (1, 45), (2, 20)] {
        let name = format!("r0011-s{i:02}.h5");
        let spec = SampleSpec {
            seed: i,
            ..SampleSpec::new(Preset::Sample, events)
        };
        // Written elsewhere, then moved in: the watcher sees whole files.
        // (A file written in place is taken once its size stops changing.)
        write_sample(&staging.join(&name), &spec).unwrap();
        std::fs::rename(staging.join(&name), watched.join(&name)).unwrap();
        files.push(watched.join(&name));
        let total: u64 = [30, 45, 20][..=i as usize].iter().sum();
        assert!(
            wait_until(Duration::from_secs(30), || metrics
                .events_published
                .load(Ordering::Relaxed)
                >= total)
            .await,
            "file {i} published"
        );
    }
    // The Prometheus endpoint reports what was published.
    let addr = metrics_addr.parse().unwrap();
    let (status, body) =
        tokio::task::spawn_blocking(move || http_get(addr, "/metrics", Duration::from_secs(5)))
            .await
            .unwrap()
            .expect("metrics endpoint answers");
    assert_eq!(status, 200);
    assert!(
        body.contains("lclstream_agent_events_published_total 95"),
        "{body}"
    );
    assert!(
        body.contains("lclstream_agent_files_done_total 3"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE lclstream_agent_publish_ack_seconds histogram"),
        "{body}"
    );
    stop_tx.send(()).unwrap();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("agent stops on the signal")
        .unwrap()
        .expect("agent succeeds");
    assert_eq!(report.files_done, 3);
    assert_eq!(report.events_published, 95);

    let stream = read_stream(&server.url(), "LCLS_MFX").await;
    let batches = &stream["lcls.mfx.mfxp1234.11.jungfrau"];
    assert!(assert_exactly_once(batches, 95));
    let got: Vec<_> = batches
        .iter()
        .flat_map(|b| b.events.iter().cloned())
        .collect();
    assert_eq!(
        got,
        expected_events(&files, &Layout::preset(Preset::Sample))
    );
}
