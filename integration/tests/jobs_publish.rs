//! A publish job against a real nats-server and real HDF5 files: a run that
//! is only on disk is read by a worker, processed (ROI crop + binning, field
//! selection) and delivered to the requester exactly once, while the job
//! runs; the bytes are charged to the institution.

mod jobs_support;
mod partner_support;

use std::time::Duration;

use jobs_support::*;
use lclstream_gateway::jobs::protocol::{JobBatch, JobProcessing, JobState};
use lclstream_gateway::policy::Quotas;
use lclstream_nats::wire::{DType, Scalar};
use partner_support::*;

/// The file's frames, cropped to `[y0, y1, x0, x1]` and summed in `n` x `n` blocks.
fn expected_frames(path: &std::path::Path, roi: [usize; 4], n: usize) -> Vec<Vec<u32>> {
    let file = hdf5::File::open(path).unwrap();
    let images = file
        .dataset("jungfrau/image")
        .unwrap()
        .read::<u16, ndarray::Ix3>()
        .unwrap();
    let [y0, y1, x0, x1] = roi;
    let (oh, ow) = ((y1 - y0) / n, (x1 - x0) / n);
    images
        .outer_iter()
        .map(|frame| {
            let mut out = vec![0u32; oh * ow];
            for y in 0..oh * n {
                for x in 0..ow * n {
                    out[(y / n) * ow + x / n] += frame[[y0 + y, x0 + x]] as u32;
                }
            }
            out
        })
        .collect()
}

fn pulse_ids(path: &std::path::Path) -> Vec<i64> {
    let file = hdf5::File::open(path).unwrap();
    file.dataset("pulse_id")
        .unwrap()
        .read_raw::<u64>()
        .unwrap()
        .into_iter()
        .map(|v| v as i64)
        .collect()
}

#[tokio::test]
async fn a_run_on_disk_is_streamed_processed_and_exactly_once() {
    let s = setup_jobs(&[policy("ucsd", &["lcls.mfx.mfxp1234.>"], Quotas::default())]).await;
    let root = s.dir.path().join("data");
    let files = write_run(&root, "mfxp1234", 7, &[20, 13]).await;
    let worker = start_worker(&worker_toml(&s.server.url(), &root, "w1", 0.0));
    let ucsd = partner(&s.server.url(), "ucsd").await;

    let mut request = job("mfxp1234", 7);
    request.fields = vec!["jungfrau".into(), "pulse_id".into()];
    request.processing = JobProcessing {
        roi: Some([8, 40, 4, 36]),
        bin: Some(4),
        ..Default::default()
    };
    request.batch = JobBatch {
        max_events: 5,
        max_bytes: 1 << 20,
    };
    let view = submit(&ucsd, &request).await.expect("job accepted");
    let record = &view.record;
    assert!(matches!(record.state, JobState::Queued | JobState::Running));
    assert_eq!(record.consumer, "ucsd-c0");
    assert_eq!(
        record.subject,
        format!("lclstream.jobs.data.{}", record.job)
    );
    assert_eq!(view.watch, format!("_INBOX.ucsd.jobs.{}", record.job));
    let grant = view.grant.as_ref().expect("the job has a consumer");
    assert_eq!(grant.stream, "LCLS_JOBS_DATA");
    assert_eq!(grant.filters, vec![record.subject.clone()]);

    // Pull while the job runs: every event of both files, once, processed.
    let (summary, received) = pull_job(&ucsd, &view, 33, Duration::from_secs(20)).await;
    assert_eq!(summary.events, 33, "{summary:?}");
    assert_eq!(summary.duplicates, 0);
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 33);
    let mut expected = expected_frames(&files[0], [8, 40, 4, 36], 4);
    expected.extend(expected_frames(&files[1], [8, 40, 4, 36], 4));
    let mut pulses = pulse_ids(&files[0]);
    pulses.extend(pulse_ids(&files[1]));
    for (i, ((run, index), (times, event))) in received.iter().enumerate() {
        assert_eq!(
            (*run, *index),
            (7, i as u64),
            "events in order, indexes continue across files"
        );
        assert_eq!(*times, 1, "event {index} delivered once");
        let image = &event.arrays["jungfrau"];
        assert_eq!(image.shape, vec![8, 8], "event {index}");
        assert_eq!(image.dtype, DType::U32, "binning widens u16 to u32");
        let values: Vec<u32> = image
            .data
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(values, expected[i], "event {index} pixels");
        assert_eq!(event.scalars.get("pulse_id"), Some(&Scalar::Int(pulses[i])));
        assert!(
            !event.scalars.contains_key("photon_energy_ev"),
            "fields not asked for are dropped"
        );
    }

    let done = wait_record(
        &ucsd,
        &view.record.job,
        Duration::from_secs(20),
        "done",
        is(JobState::Done),
    )
    .await;
    assert_eq!(done.events_total, Some(33));
    assert_eq!(done.events, 33);
    assert_eq!(
        done.batches, 7,
        "33 events in batches of 5 across both files"
    );
    assert_eq!(done.files, 2);
    assert_eq!(done.attempts, 1);
    assert!(done.bytes > 0);
    assert_eq!(done.worker.as_deref(), Some("w1"));
    // Bytes stored for the job count against the institution's daily quota.
    let mut charged = 0;
    for _ in 0..100 {
        charged = s.gateway.quotas().snapshot("ucsd").bytes_today;
        if charged >= done.bytes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(charged, done.bytes);
    // The record is listed.
    let list: lclstream_gateway::jobs::protocol::JobList =
        step("jobs.list", ucsd.call_raw("jobs.list", b"{}".to_vec()))
            .await
            .unwrap();
    assert_eq!(list.jobs.len(), 1);
    assert_eq!(list.jobs[0].job, view.record.job);
    // The CLI sees the same job.
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_lclstream-e2e"));
        command
            .arg("jobs")
            .args(args)
            .args(["--url", &s.server.url(), "--institution", "ucsd"])
            .kill_on_drop(true);
        async move {
            let out = step("lclstream jobs", command.output()).await.unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let watched: serde_json::Value =
        serde_json::from_str(&cli(&["watch", &view.record.job]).await).unwrap();
    assert_eq!(watched["state"], "done");
    assert_eq!(watched["events"], 33);
    let listed = cli(&["list", "--state", "done"]).await;
    assert!(listed.starts_with(&view.record.job), "{listed}");
    let report = worker.stop().await;
    assert_eq!(report.done, 1);
}
