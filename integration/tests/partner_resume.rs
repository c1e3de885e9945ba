//! A partner that disappears mid-dataset (dropped client, SIGKILLed `lclstream
//! pull` process) resumes with the same label and ends with every event
//! exactly once; HDF5 output resumes into the same file.

mod partner_support;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lclstream_nats::wire::Event;
use lclstream_partner::hdf5_sink::Hdf5Sink;
use lclstream_partner::{
    BatchInfo, DatasetRequest, EventKey, EventSink, PullOptions, Start, StopReason,
};
use partner_support::*;

/// Collects events; remembers them so that redeliveries are skipped.
#[derive(Clone, Default)]
struct Collector {
    written: Arc<Mutex<Vec<EventKey>>>,
    seen: Arc<Mutex<HashSet<EventKey>>>,
}

impl EventSink for Collector {
    fn contains(&self, key: &EventKey) -> bool {
        self.seen.lock().unwrap().contains(key)
    }

    fn write(&mut self, batch: &BatchInfo, events: Vec<Event>) -> anyhow::Result<()> {
        for e in events {
            let key = batch.key(e.index);
            self.seen.lock().unwrap().insert(key.clone());
            self.written.lock().unwrap().push(key);
        }
        Ok(())
    }
}

fn request(label: &str) -> DatasetRequest {
    DatasetRequest {
        filters: vec!["lcls.mfx.mfxp1234.>".into()],
        start: Start::All,
        end: None,
        label: Some(label.into()),
    }
}

#[tokio::test]
async fn dropped_partner_resumes_with_every_event_once() {
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas())]).await;
    publish(&s.js, "mfxp1234", 5, 60, 4, 32).await;
    let total = 240;
    let sink = Collector::default();

    // First partner: pulls in the background and is dropped mid-dataset.
    let first = partner(&s.server.url(), "ucsd").await;
    let grant = step("request", first.request_dataset(&request("r5")))
        .await
        .unwrap();
    let task = {
        let mut sink = sink.clone();
        let grant = grant.clone();
        let client = first.clone();
        tokio::spawn(async move {
            let options = PullOptions {
                batch_messages: 3,
                idle_timeout: Duration::from_secs(30),
                ..Default::default()
            };
            client.pull(&grant, &options, &mut sink).await
        })
    };
    let deadline = Instant::now() + STEP;
    while sink.written.lock().unwrap().len() < 20 {
        assert!(Instant::now() < deadline, "first partner made no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    drop(first);
    let before = sink.written.lock().unwrap().len();
    assert!(before < total, "stopped mid-dataset ({before} of {total})");

    // Second partner, new connection, same label: same consumer, the rest once.
    let second = partner(&s.server.url(), "ucsd").await;
    let again = step("re-request", second.request_dataset(&request("r5")))
        .await
        .unwrap();
    assert!(again.resumed);
    assert_eq!(again.consumer, grant.consumer);
    let mut resumed_sink = sink.clone();
    let options = PullOptions {
        idle_timeout: Duration::from_secs(4),
        ..Default::default()
    };
    let summary = step(
        "resume pull",
        second.pull(&again, &options, &mut resumed_sink),
    )
    .await
    .unwrap();
    assert_eq!(summary.stop, StopReason::Idle);
    let written = sink.written.lock().unwrap().clone();
    let unique: HashSet<&EventKey> = written.iter().collect();
    assert_eq!(unique.len(), written.len(), "no event written twice");
    let mut indices: Vec<u64> = written.iter().map(|k| k.index).collect();
    indices.sort();
    assert_eq!(indices, (0..total as u64).collect::<Vec<_>>());
    // Everything is acknowledged: nothing pending on the consumer.
    let info =
        s.js.get_stream("LCLS_MFX")
            .await
            .unwrap()
            .consumer_info(&grant.consumer)
            .await
            .unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
}

fn count_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn killed_pull_process_resumes_with_every_event_once() {
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas())]).await;
    let total = 300usize;
    publish(&s.js, "mfxp1234", 2, 150, 2, 48).await;
    let out = s.dir.path().join("events.jsonl");
    let url = s.server.url();
    let out_path = out.clone();
    let pull = move |idle: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"));
        cmd.args([
            "pull",
            "--url",
            &url,
            "--institution",
            "ucsd",
            "--subject",
            "lcls.mfx.mfxp1234.>",
            "--label",
            "r2",
            "--batch",
            "2",
            "--idle-timeout",
            idle,
            "--jsonl",
        ])
        .arg(&out_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        cmd
    };
    let mut child = pull("30").spawn().expect("lclstream pull starts");
    let deadline = Instant::now() + STEP;
    while count_lines(&out) < 10 {
        assert!(Instant::now() < deadline, "the pull process wrote nothing");
        if child.try_wait().unwrap().is_some() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            panic!("the pull process exited early: {stderr}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let before = count_lines(&out);
    eprintln!("killed after {before} of {total} events");

    let output = tokio::task::spawn_blocking(move || pull("4").output())
        .await
        .unwrap()
        .expect("second pull runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "second pull failed: {stderr}");
    let summary: serde_json::Value = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("a summary line");
    assert_eq!(summary["resumed"], true);

    let text = std::fs::read_to_string(&out).unwrap();
    let mut indices: Vec<u64> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("every line is whole JSON");
            assert_eq!(v["run"], 2);
            v["index"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        indices.len(),
        total,
        "every event exactly once ({before} before the kill)"
    );
    indices.sort();
    assert_eq!(indices, (0..total as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn hdf5_output_resumes_into_the_same_file() {
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas())]).await;
    publish(&s.js, "mfxp1234", 4, 6, 5, 24).await;
    let total = 30u64;
    let path = s.dir.path().join("out.h5");
    let client = partner(&s.server.url(), "ucsd").await;
    let grant = step("request", client.request_dataset(&request("h5")))
        .await
        .unwrap();

    // Stop in the middle of a batch (7 of 30), then resume into the same file.
    let mut sink = Hdf5Sink::open(&path).unwrap();
    let options = PullOptions {
        max_events: Some(7),
        idle_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let first = step("first pull", client.pull(&grant, &options, &mut sink))
        .await
        .unwrap();
    assert_eq!((first.events, first.stop), (7, StopReason::MaxEvents));
    drop(sink);
    let mut sink = Hdf5Sink::open(&path).unwrap();
    assert_eq!(sink.known_events(), 7);
    let options = PullOptions {
        idle_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let rest = step("second pull", client.pull(&grant, &options, &mut sink))
        .await
        .unwrap();
    assert_eq!(rest.events, total - 7);
    assert_eq!(
        rest.duplicates, 2,
        "the written part of the split batch came back and was skipped"
    );
    drop(sink);

    let file = hdf5::File::open(&path).unwrap();
    let group = file.group("mfxp1234/jungfrau").unwrap();
    let index: Vec<u64> = group.dataset("index").unwrap().read_raw().unwrap();
    let mut sorted = index.clone();
    sorted.sort();
    assert_eq!(sorted, (0..total).collect::<Vec<_>>());
    let frames = group.dataset("jungfrau").unwrap();
    assert_eq!(frames.shape(), vec![total as usize, 24, 24]);
    let energy: Vec<f64> = group
        .dataset("photon_energy_ev")
        .unwrap()
        .read_raw()
        .unwrap();
    assert_eq!(energy.len(), total as usize);
    // Row contents match what was published for that index.
    let model = lclstream_nats::synthetic::DetectorModel {
        height: 24,
        width: 24,
        ..Default::default()
    };
    let all: ndarray::ArrayD<u16> = frames.read_dyn().unwrap();
    for (row, &i) in index.iter().enumerate() {
        let expected = model.event("jungfrau", i, 1_000 + i);
        let pixels = expected.arrays["jungfrau"].to_u16().unwrap();
        let got: Vec<u16> = all
            .index_axis(ndarray::Axis(0), row)
            .iter()
            .copied()
            .collect();
        assert_eq!(got, pixels, "frame of event {i}");
    }
    let runs: Vec<u32> = group.dataset("run").unwrap().read_raw().unwrap();
    assert!(runs.iter().all(|&r| r == 4));
}

#[tokio::test]
async fn bounded_dataset_stops_at_its_end() {
    let s = setup(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], quick_quotas())]).await;
    // Message b+1 holds events 2b and 2b+1.
    publish(&s.js, "mfxp1234", 9, 10, 2, 8).await;
    let client = partner(&s.server.url(), "ucsd").await;
    let grant = step(
        "request",
        client.request_dataset(&DatasetRequest {
            filters: vec!["lcls.mfx.mfxp1234.9.jungfrau".into()],
            start: Start::Sequence(3),
            end: Some(lclstream_partner::End::Sequence(6)),
            label: None,
        }),
    )
    .await
    .unwrap();
    assert_eq!(grant.end, Some(lclstream_partner::End::Sequence(6)));
    let mut sink = Collector::default();
    let options = PullOptions {
        idle_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let summary = step("pull", client.pull(&grant, &options, &mut sink))
        .await
        .unwrap();
    assert_eq!(summary.stop, StopReason::EndOfDataset);
    let mut indices: Vec<u64> = sink
        .written
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.index)
        .collect();
    indices.sort();
    assert_eq!(indices, (4..=11).collect::<Vec<u64>>());
}
